"""Gradient clipping by global norm, as graph nodes (so it is compiled, drawn and checked)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import GraphError
from ..graph.node import Node
from .. import ops


def global_norm(grads: Sequence[Node]) -> Node:
    """``sqrt(sum_i sum(g_i ** 2))`` over all gradients, in their widest float dtype."""
    grads = list(grads)
    if not grads:
        raise GraphError("global_norm: no gradients given")
    for g in grads:
        if not isinstance(g, Node) or g.dtype.kind != "f":
            raise GraphError(f"global_norm: gradients must be float nodes, got {g!r}")
    dtype = np.result_type(*(g.dtype for g in grads))
    total = None
    for g in grads:
        sq = ops.cast(ops.sum(ops.square(g)), dtype)
        total = sq if total is None else ops.add(total, sq)
    return ops.sqrt(total)


def gradient_norms(grads: Sequence[Node]) -> list[Node]:
    """One scalar node per gradient, its L2 norm ``sqrt(sum(g ** 2))`` in its own dtype.

    Watching these per parameter over training is how vanishing gradients (early layers'
    norms orders of magnitude below the last layer's) and exploding ones (spikes that
    :func:`clip_by_global_norm` cuts) show up; ``Trainer(record_grad_norms=True)`` records
    them at every step."""
    grads = list(grads)
    for g in grads:
        if not isinstance(g, Node) or g.dtype.kind != "f":
            raise GraphError(f"gradient_norms: gradients must be float nodes, got {g!r}")
    return [ops.sqrt(ops.sum(ops.square(g))) for g in grads]


def clip_by_global_norm(grads: Sequence[Node], max_norm: float) -> list[Node]:
    """Scale all gradients together so their joint L2 norm is at most ``max_norm``.

    Clipping jointly (not per tensor) keeps the update's direction and only shortens it,
    which is what tames exploding gradients without biasing some parameters over
    others. The scale is ``max_norm / maximum(norm, max_norm)``: exactly 1 when the norm
    is already small enough.

    Parameters
    ----------
    grads : sequence of Node
        Gradient nodes, e.g. from :func:`graphbp.grad`.
    max_norm : float
        Positive bound on the global norm.

    Returns
    -------
    list of Node
        The clipped gradients, same order, shapes and dtypes.
    """
    max_norm = float(max_norm)
    if not max_norm > 0.0 or not np.isfinite(max_norm):
        raise GraphError(f"clip_by_global_norm: max_norm must be a positive finite number, got {max_norm}")
    grads = list(grads)
    norm = global_norm(grads)
    bound = ops.constant(np.asarray(max_norm, dtype=norm.dtype), name="max_norm")
    scale = ops.divide(bound, ops.maximum(norm, bound))
    return [ops.multiply(g, ops.cast(scale, g.dtype)) for g in grads]
