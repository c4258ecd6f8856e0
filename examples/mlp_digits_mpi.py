"""Digits MLP trained data-parallel over MPI: every rank takes its shard of each batch.

Run on two processes: ``mpiexec -n 2 python examples/mlp_digits_mpi.py`` (needs
``pip install 'graphbp[mpi]'``); plain ``python examples/mlp_digits_mpi.py`` runs the same
code on one process without MPI. Pass a path to checkpoint there every epoch (rank 0
writes, every rank resumes from it). Render the data-parallel step, with its
``allreduce_mean`` bucket, by ``graphbp render examples/mlp_digits_mpi.py:build``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import graphbp as gb
from graphbp.train.demo import build_digits_mlp  # the 64-128-10 ReLU network of the README


def communicator():
    """MPI's world under ``mpiexec -n N`` (N > 1), else the one-process communicator."""
    return gb.distributed.world() if gb.distributed.under_mpi() else gb.distributed.single_process()


def model(seed: int = 0):
    """The README's digits MLP (``x``, ``t``, ``params``, ``logits``, ``loss``)."""
    return build_digits_mlp(seed=seed)


def build() -> gb.Program:
    """One data-parallel training step: loss, gradients, their allreduce, Adam's update."""
    m = model()
    opt = gb.distributed.data_parallel(gb.optim.Adam(3e-3), communicator())
    return gb.compile([m.x, m.t], [m.loss], updates=opt.updates(m.loss, m.params))


def main(epochs: int = 20, batch_size: int = 32, checkpoint: str | None = None, seed: int = 0) -> float:
    comm = communicator()
    say = print if comm.rank == 0 else (lambda *a: None)  # only rank 0 prints
    X, T = gb.data.load_digits()
    X_train, X_test, T_train, T_test = gb.data.train_test_split(X, T, test_fraction=0.2, seed=seed, stratify=T)
    m = model(seed)
    gb.distributed.broadcast_params(m.params, comm)  # all ranks start from rank 0's weights
    opt = gb.distributed.data_parallel(gb.optim.Adam(3e-3), comm)
    step = gb.compile([m.x, m.t], [m.loss], updates=opt.updates(m.loss, m.params))
    predict = gb.compile([m.x], [m.logits])
    first = 0
    if checkpoint and os.path.exists(checkpoint):
        first, _ = gb.load_checkpoint(checkpoint, m.params, opt)  # every rank loads it
    acc = 0.0
    for epoch in range(first, epochs):
        # batch_size is the global batch: the same seed on every rank cuts the same batches
        shard = gb.data.batches(X_train, T_train, batch_size=batch_size, shuffle=True, seed=epoch,
                                shard=(comm.rank, comm.size))
        losses = [step(xb, tb)[0] for xb, tb in shard]
        loss = comm.mean(float(np.mean(losses)))  # averaged over ranks for the log
        acc = float(np.mean(np.argmax(predict(X_test)[0], axis=1) == T_test))  # same params everywhere
        say(f"epoch {epoch + 1:2d}  loss {loss:.4f}  test accuracy {100 * acc:.2f}%  ({comm.size} ranks)")
        if checkpoint and comm.rank == 0:  # only rank 0 writes
            gb.save_checkpoint(checkpoint, m.params, opt, step=epoch + 1)
    return acc


if __name__ == "__main__":
    main(checkpoint=sys.argv[1] if len(sys.argv) > 1 else None)
