"""``graphbp demo --distributed``: the digits MLP trained data-parallel over MPI ranks.

Started without an MPI launcher it prints the command that runs it on two processes.
The training code is the same as ``examples/mlp_digits_mpi.py``: every rank builds the
same model, takes its shard of each global batch, and averages gradients in the graph.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

import numpy as np

from ..data import batches, load_digits, train_test_split
from ..io import load_checkpoint, save_checkpoint
from ..runtime import compile
from ..train.demo import build_digits_mlp
from ..train.optim import Adam
from .comm import INSTALL, Communicator, under_mpi, world
from .parallel import broadcast_params, data_parallel


def command(ranks: int = 2) -> str:
    """The shell command that runs the distributed demo on ``ranks`` processes."""
    return f"mpiexec -n {ranks} {sys.executable} -m graphbp demo --distributed"


def train_digits(comm: Communicator, *, epochs: int = 20, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                 checkpoint: str | None = None, out: TextIO | None = None) -> float:
    """Train the digits MLP on ``comm``'s ranks; return the held-out accuracy (all ranks).

    ``batch_size`` is the global batch (each rank takes ``batch_size / comm.size`` rows).
    With ``checkpoint``, rank 0 writes it after every epoch and every rank resumes from it.
    Only rank 0 prints."""
    say = (lambda *a: print(*a, file=out or sys.stdout, flush=True)) if comm.rank == 0 else (lambda *a: None)
    X, T = load_digits()  # the same split on every rank: same seed
    X_train, X_test, T_train, T_test = train_test_split(X, T, test_fraction=0.2, seed=seed, stratify=T)
    m = build_digits_mlp(seed=seed)
    broadcast_params(m.params, comm)  # every rank starts from rank 0's weights
    opt = data_parallel(Adam(lr), comm)
    step = compile([m.x, m.t], [m.loss], updates=opt.updates(m.loss, m.params))
    predict = compile([m.x], [m.logits])
    first = 0
    if checkpoint and os.path.exists(checkpoint):
        first, _ = load_checkpoint(checkpoint, m.params, opt)  # every rank reads rank 0's file
        say(f"resumed from {checkpoint} after epoch {first}")
    say(f"{comm.size} rank(s), global batch {batch_size} ({batch_size // comm.size} per rank)")
    start = time.perf_counter()
    mine = np.arange(comm.rank, len(T_test), comm.size)  # each rank scores every size-th test row
    acc = 0.0
    for epoch in range(first, epochs):
        losses = [step(xb, tb)[0] for xb, tb in batches(X_train, T_train, batch_size=batch_size, shuffle=True,
                                                           seed=epoch, shard=(comm.rank, comm.size))]
        loss = comm.mean(float(np.mean(losses)))  # metrics: averaged over the ranks
        correct = float(np.sum(np.argmax(predict(X_test[mine])[0], axis=1) == T_test[mine]))
        acc = comm.mean(correct) * comm.size / len(T_test)
        say(f"epoch {epoch + 1:2d}  loss {loss:.4f}  test accuracy {100 * acc:.2f}%")
        if checkpoint and comm.rank == 0:
            save_checkpoint(checkpoint, m.params, opt, step=epoch + 1)
    say(f"test accuracy {100 * acc:.2f}% after {time.perf_counter() - start:.2f}s on {comm.size} rank(s)")
    return acc


def run(epochs: int = 20, batch_size: int = 32, seed: int = 0, out: TextIO | None = None) -> int:
    """The CLI entry: train under MPI, or print how to start it."""
    if not under_mpi():
        stream = out or sys.stdout
        print("graphbp demo --distributed trains over MPI ranks; start it with an MPI launcher:\n"
              f"  {command(2)}\n(mpi4py and mpiexec come with: {INSTALL})", file=stream)
        return 0
    train_digits(world(), epochs=epochs, batch_size=batch_size, seed=seed, out=out)
    return 0


__all__ = ["command", "run", "train_digits"]
