"""Data parallelism as graph nodes: bucketed gradient averaging, a wrapping optimiser, and
a parameter broadcast.

Averaging is built into the gradient graph, not done behind it: each bucket of gradients
is flattened and concatenated into one vector, averaged by one ``allreduce_mean`` node,
and sliced and reshaped back. The memory plan therefore owns the bucket buffer (the
allreduce writes its result straight into it), diagrams show the averaging, and one
collective per bucket of about ``bucket_bytes`` replaces one per parameter, whose
per-message latency dominates for small tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import ops
from ..autodiff import grad
from ..errors import GraphError
from ..graph.context import scope
from ..graph.node import Node
from ..ops.collective import AllreduceMean, allreduce_mean_overlapped
from ..ops.base import apply
from ..ops.leaves import Param
from .comm import Communicator

DEFAULT_BUCKET_BYTES = 2 * 2**20
"""Gradient bytes per allreduce: large enough that per-collective latency is amortised,
small enough that the concatenation copy stays cache-friendly (PyTorch DDP: 25 MB,
tuned for GPUs; 1-4 MiB suits CPU NumPy)."""


DEFAULT_OVERLAP = False
"""Whether ``allreduce_mean``/``data_parallel`` overlap communication with the backward by
default (measured in docs/distributed.md)."""


def buckets(grads: Sequence[Node], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[int]]:
    """Group gradient indices into buckets of about ``bucket_bytes``.

    Gradients are taken last-first (the backward computes the last layer's first), a
    bucket holds one dtype, and it closes as soon as it reaches ``bucket_bytes``. A
    gradient with an unknown dim is a bucket of its own (it cannot be flattened into a
    statically sized vector)."""
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    out: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i in reversed(range(len(grads))):
        g = grads[i]
        static = g.type.is_concrete
        if current and (not static or g.dtype != grads[current[0]].dtype or size >= bucket_bytes):
            out.append(current)
            current, size = [], 0
        current.append(i)
        size += int(np.prod(g.shape, dtype=np.int64)) * g.dtype.itemsize if static else bucket_bytes
    if current:
        out.append(current)
    return out


def allreduce_mean(grads: Node | Sequence[Node], comm: Communicator, *,
                   bucket_bytes: int = DEFAULT_BUCKET_BYTES, overlap: bool = DEFAULT_OVERLAP) -> Any:
    """Nodes holding each gradient's mean over the ranks of ``comm``, in bucketed allreduces.

    Parameters
    ----------
    grads : Node or sequence of Node
        Float gradients (any shapes; all ranks must pass the same list).
    comm : communicator
        :func:`~graphbp.distributed.world` or :func:`~graphbp.distributed.single_process`.
    bucket_bytes : int
        Target bytes per allreduce (see :func:`buckets`).
    overlap : bool
        Split each bucket's allreduce into a nonblocking start, scheduled as soon as the
        bucket's gradients exist, and a wait just before the update reads it, so the
        communication overlaps the rest of the backward pass (docs/distributed.md).

    Returns
    -------
    Node or list of Node
        The averaged gradients, in the order (and form) given.
    """
    single = isinstance(grads, Node)
    gs = [grads] if single else list(grads)
    for g in gs:
        if not isinstance(g, Node):
            raise GraphError(f"allreduce_mean: expected gradient nodes, got {type(g).__name__}")
    out: list[Node | None] = [None] * len(gs)
    reduce = (lambda v, name: allreduce_mean_overlapped(v, comm.group, name=name)) if overlap else (
        lambda v, name: apply(AllreduceMean(comm.group), v, name=name))
    with scope("allreduce"):
        for b, members in enumerate(buckets(gs, bucket_bytes)):
            name = f"bucket{b}"
            if len(members) == 1:
                (i,) = members
                out[i] = reduce(gs[i], name)
                continue
            flat = ops.concatenate([ops.reshape(gs[i], (-1,)) for i in members])
            mean = reduce(flat, name)
            start = 0
            for i in members:
                n = int(np.prod(gs[i].shape, dtype=np.int64))
                out[i] = ops.reshape(mean[start:start + n], gs[i].shape)
                start += n
    return out[0] if single else out


class DataParallel:
    """An optimiser whose updates average the gradients over the ranks first.

    Everything else (state, ``load_state``, ``step``, ``lr``) is the wrapped optimiser's,
    so checkpoints written from a data-parallel run load into a single-process one.
    """

    def __init__(self, optimizer: Any, comm: Communicator, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 overlap: bool = DEFAULT_OVERLAP) -> None:
        if not hasattr(optimizer, "apply_gradients"):
            raise GraphError(f"data_parallel: expected a gb.optim optimiser, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.comm = comm
        self.bucket_bytes = int(bucket_bytes)
        self.overlap = bool(overlap)

    def updates(self, loss: Node, params: Sequence[Node]) -> list[tuple[Node, Node]]:
        """Update pairs for one step on the rank-averaged gradient of ``loss``.

        ``loss`` is this rank's loss on its shard; with equal shards the average of the
        ranks' mean losses is the mean loss of the global batch, so the step equals a
        single process's step on the whole batch."""
        params = [params] if isinstance(params, Node) else list(params)
        grads = grad(loss, params)
        return self.apply_gradients(params, grads)

    def apply_gradients(self, params: Sequence[Node], grads: Sequence[Node]) -> list[tuple[Node, Node]]:
        averaged = allreduce_mean(list(grads), self.comm, bucket_bytes=self.bucket_bytes, overlap=self.overlap)
        return self.optimizer.apply_gradients(params, averaged)

    def state(self) -> dict[str, np.ndarray]:
        return self.optimizer.state()

    def state_nodes(self) -> dict[str, Node]:
        return self.optimizer.state_nodes()

    def load_state(self, state: Mapping[str, Any]) -> list[str]:
        return self.optimizer.load_state(state)

    @property
    def step(self) -> int:
        return self.optimizer.step

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    def __repr__(self) -> str:
        return f"<DataParallel {self.optimizer!r} over {self.comm!r}>"


def data_parallel(optimizer: Any, comm: Communicator, *, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                  overlap: bool = DEFAULT_OVERLAP) -> DataParallel:
    """Wrap ``optimizer`` so ``.updates(loss, params)`` averages gradients over ``comm``
    (``bucket_bytes``, ``overlap``: see :func:`allreduce_mean`)."""
    return DataParallel(optimizer, comm, bucket_bytes, overlap)


def broadcast_params(params: Sequence[Node] | Mapping[str, Node], comm: Communicator, root: int = 0) -> None:
    """Overwrite every parameter's value with rank ``root``'s, so all ranks start equal.

    Needed when ranks initialise differently (unseeded draws, a checkpoint only the root
    has read); harmless otherwise."""
    nodes = list(params.values()) if isinstance(params, Mapping) else [params] if isinstance(params, Node) else list(params)
    for p in nodes:
        if not isinstance(p, Node) or not isinstance(p.op, Param):
            raise GraphError(f"broadcast_params: expected gb.param nodes, got {p!r:.80}")
        value = np.ascontiguousarray(p.value)
        comm.broadcast(value, root)
        if value is not p.value:
            p.value = value


__all__ = ["DEFAULT_BUCKET_BYTES", "DEFAULT_OVERLAP", "DataParallel", "allreduce_mean", "broadcast_params", "buckets", "data_parallel"]
