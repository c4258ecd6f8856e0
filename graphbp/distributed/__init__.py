"""Data-parallel training over MPI (``gb.distributed``).

Every process holds the parameters and takes its shard of each global batch; gradients
are averaged across processes by ``allreduce_mean`` nodes in the gradient graph before the
optimiser's update, so N ranks on B/N rows each step exactly as one process on B rows.
graphbp never starts processes: run ``mpiexec -n N python train.py``.

This package imports without mpi4py; :func:`world` needs it (``pip install 'graphbp[mpi]'``),
:func:`single_process` does not.
"""

from __future__ import annotations

from .comm import (
    DEFAULT_TIMEOUT, Communicator, DistributedError, MpiCommunicator, SingleProcess,
    communicator, single_process, under_mpi, world,
)
from . import demo
from .parallel import (
    DEFAULT_BUCKET_BYTES, DEFAULT_OVERLAP, DataParallel, allreduce_mean, broadcast_params, buckets, data_parallel,
)

__all__ = [
    "Communicator", "DistributedError", "MpiCommunicator", "SingleProcess", "DataParallel",
    "DEFAULT_TIMEOUT", "DEFAULT_BUCKET_BYTES", "DEFAULT_OVERLAP",
    "world", "single_process", "communicator", "under_mpi",
    "allreduce_mean", "data_parallel", "broadcast_params", "buckets",
]
