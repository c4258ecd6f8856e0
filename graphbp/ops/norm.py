"""Batch and layer normalisation as composites of primitives.

They are written with ``mean``, ``subtract``, ``multiply`` and ``sqrt`` nodes, so their
gradients of every order come from those ops' rules and the diagrams show the textbook
formula. Nothing here needs a stable kernel of its own: the variance is two-pass (mean first).

A static graph has no module state, so batch normalisation comes in two forms:

* :func:`batch_norm_train` normalises with the batch statistics and returns the
  running-statistics updates as ordinary ``(param, new_value)`` pairs to pass to
  ``gb.compile(updates=...)`` next to the optimiser's (the running statistics are
  non-trainable params);
* :func:`batch_norm` normalises with the running statistics (inference).

Both give the numbers of ``torch.nn.BatchNorm2d`` in train and eval mode: the running
variance is updated with the unbiased batch variance, ``momentum`` weighs the new statistic.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ShapeError
from ..graph.node import Node
from ..graph.types import format_shape, normalize_axis
from .base import as_node, describe_error
from .elementwise import sqrt, square
from .reduce import Mean, mean, reduced_count
from .shape import reshape


class BatchNormTrain(NamedTuple):
    """The normalised output and the running-statistics updates of one training step."""

    output: Node
    updates: list[tuple[Node, Node]]


def _channel_axis(x: Node, axis: int, what: str, *stats: Node) -> tuple[int, tuple[int, ...]]:
    """The channel axis and the shape that broadcasts a per-channel vector against ``x``."""
    try:
        ax = normalize_axis(int(axis), x.ndim)
    except ValueError as e:
        raise ShapeError(describe_error(Mean((), True), [x, *stats], f"{what}: {e}")) from None
    c = x.shape[ax]
    for s in stats:
        if s.ndim != 1 or (c is not None and s.shape[0] is not None and s.shape[0] != c):
            raise ShapeError(describe_error(
                Mean((), True), [x, *stats],
                f"{what}: per-channel parameters must be ({c},) for axis {ax} of {format_shape(x.shape)}, "
                f"got {format_shape(s.shape)}"))
    return ax, tuple(-1 if i == ax else 1 for i in range(x.ndim))


def _normalise(x: Node, mu: Node, var: Node, gamma: Node, beta: Node, eps: float, bshape) -> Node:
    scale = reshape(gamma, bshape) / sqrt(var + eps)
    return (x - mu) * scale + reshape(beta, bshape)


def batch_norm(x, gamma, beta, running_mean, running_var, *, axis: int = 1, eps: float = 1e-5) -> Node:
    """Inference-form batch normalisation with the running statistics.

    ``(x - running_mean) / sqrt(running_var + eps) * gamma + beta``, the per-channel vectors
    broadcast along ``axis`` (1 for NCHW and (N, C)).
    """
    x = as_node(x)
    g, b, m, v = (as_node(t) for t in (gamma, beta, running_mean, running_var))
    _, bshape = _channel_axis(x, axis, "batch_norm", g, b, m, v)
    return _normalise(x, reshape(m, bshape), reshape(v, bshape), g, b, eps, bshape)


def batch_norm_train(x, gamma, beta, running_mean: Node, running_var: Node, *, axis: int = 1,
                     momentum: float = 0.1, eps: float = 1e-5) -> BatchNormTrain:
    """Training-form batch normalisation with the batch statistics.

    Returns
    -------
    BatchNormTrain
        ``output`` normalised with the biased batch variance; ``updates`` the pairs
        ``(running_mean, (1 - momentum) * running_mean + momentum * batch_mean)`` and the same
        for ``running_var`` with the unbiased batch variance, for ``gb.compile(updates=...)``.
    """
    x = as_node(x)
    g, b = as_node(gamma), as_node(beta)
    ax, bshape = _channel_axis(x, axis, "batch_norm_train", g, b, running_mean, running_var)
    axes = tuple(i for i in range(x.ndim) if i != ax)
    mu = mean(x, axis=axes, keepdims=True)
    var = mean(square(x - mu), axis=axes, keepdims=True)
    out = _normalise(x, mu, var, g, b, eps, bshape)
    n = reduced_count(x, axes)
    unbiased = reshape(var, (-1,)) * (n / (n - 1.0))
    updates = [
        (running_mean, running_mean * (1.0 - momentum) + reshape(mu, (-1,)) * momentum),
        (running_var, running_var * (1.0 - momentum) + unbiased * momentum),
    ]
    return BatchNormTrain(out, updates)


def layer_norm(x, gamma, beta, axis: int = -1, eps: float = 1e-5) -> Node:
    """Layer normalisation over ``axis`` (the feature axis), as ``torch.nn.LayerNorm`` over the
    last dim: ``(x - mean) / sqrt(var + eps) * gamma + beta`` with the biased variance."""
    x = as_node(x)
    g, b = as_node(gamma), as_node(beta)
    ax, bshape = _channel_axis(x, axis, "layer_norm", g, b)
    mu = mean(x, axis=ax, keepdims=True)
    var = mean(square(x - mu), axis=ax, keepdims=True)
    return _normalise(x, mu, var, g, b, eps, bshape)
