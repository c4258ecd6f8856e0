"""A data-parallel training run the MPI tests start with ``mpiexec -n N python mpi_worker.py``.

Also imported by the tests (``train`` with ``comm=None``) to compute the single-process
reference on the same data, model and batch order, so both sides share one definition.

Usage: ``mpi_worker.py MODE STEPS OUT [CKPT]`` where MODE is ``train`` (train with SGD with
momentum and with Adam, each with blocking and with overlapped allreduces, write the four
final parameter sets to OUT), ``kill`` / ``stop`` / ``exit`` (Adam,
checkpointing every step to CKPT on rank 0; after step 5 rank 1 SIGKILLs itself,
SIGSTOPs itself (a hung rank) or ends with ``os._exit``), ``resume`` (Adam: load CKPT, then train to STEPS),
``mismatch`` (rank 1 feeds a different shape) or ``raise`` (rank 1 raises).
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

import graphbp as gb

BATCH = 12  # global batch: divisible by 2, 3 and 4 ranks
SAMPLES = 96
KILL_AFTER = 5


def model(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = gb.input("x", (None, 6), dtype="float64")
    t = gb.input("t", (None,), dtype="int64")
    params = [gb.param("W1", rng.normal(size=(6, 16)) * 0.5), gb.param("b1", np.zeros(16)),
              gb.param("W2", rng.normal(size=(16, 3)) * 0.5), gb.param("b2", np.zeros(3))]
    W1, b1, W2, b2 = params
    logits = gb.tanh(x @ W1 + b1) @ W2 + b2
    loss = gb.mean(gb.softmax_cross_entropy(logits, t))
    return x, t, params, loss


def data(seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(SAMPLES, 6)), rng.integers(0, 3, SAMPLES)


def optimizer(kind: str):
    return gb.optim.SGD(0.1, momentum=0.9) if kind == "sgd" else gb.optim.Adam(0.01)


def global_batches(steps: int, shard=None):
    """``steps`` batches over reshuffled epochs (seed = epoch), cut into shards."""
    X, T = data()
    done, epoch = 0, 0
    while done < steps:
        for xb, tb in gb.data.batches(X, T, batch_size=BATCH, shuffle=True, seed=epoch, shard=shard):
            if done == steps:
                return
            yield xb, tb
            done += 1
        epoch += 1


def train(kind: str, steps: int, comm=None, *, ckpt: str | None = None, victim: str | None = None,
          bucket_bytes: int = 600, overlap: bool = False) -> dict[str, np.ndarray]:
    """Train ``steps`` steps; ``comm=None`` is plain single-process training on whole batches.

    ``bucket_bytes=600`` splits the 1.2 KiB of float64 gradients into several buckets, so
    the multi-gradient (concatenate, slice back) and single-gradient bucket paths both run."""
    x, t, params, loss = model()
    opt = optimizer(kind)
    if comm is not None:
        opt = gb.distributed.data_parallel(opt, comm, bucket_bytes=bucket_bytes, overlap=overlap)
    step = gb.compile([x, t], [loss], updates=opt.updates(loss, params))
    start = 0
    if ckpt is not None and os.path.exists(ckpt):
        start, _ = gb.load_checkpoint(ckpt, params, opt)  # every rank reads rank 0's file
    shard = None if comm is None else (comm.rank, comm.size)
    for i, (xb, tb) in enumerate(global_batches(steps, shard)):
        if i < start:
            continue  # the same batch order as the interrupted run: skip what it did
        step(xb, tb)
        if ckpt is not None and comm.rank == 0:
            gb.save_checkpoint(ckpt, params, opt, step=i + 1)
        if victim is not None and comm.rank == 1 and i + 1 == KILL_AFTER:
            if victim == "exit":
                os._exit(3)  # ends without an exception: no hook runs, nothing is said
            os.kill(os.getpid(), {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}[victim])
    return {p.name: p.value.copy() for p in params}


def main(argv: list[str]) -> int:
    mode, steps, out = argv[:3]
    ckpt = argv[3] if len(argv) > 3 else None
    comm = gb.distributed.world(timeout=5.0)
    with open(f"{out}.pid{comm.rank}", "w") as f:  # the test ends stopped ranks by pid
        f.write(str(os.getpid()))
    if mode == "mismatch":
        x = np.ones((3 if comm.rank == 1 else 2, 4))
        comm.allreduce_mean(x)
        return 0
    if mode == "raise":
        comm.barrier()
        if comm.rank == 1:
            raise RuntimeError("boom on purpose")
        comm.barrier()
        return 0
    if mode == "train":
        final = {f"{kind}{'-overlap' if overlap else ''}/{k}": v for kind in ("sgd", "adam") for overlap in (False, True)
                 for k, v in train(kind, int(steps), comm, overlap=overlap).items()}
    else:
        final = train("adam", int(steps), comm, ckpt=ckpt, victim=None if mode == "resume" else mode)
    if comm.rank == 0:
        np.savez(out, **final)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
