"""Neural-network ops: softmax family, losses and dropout.

``softmax``, ``log_softmax``, ``softmax_cross_entropy`` and ``sigmoid_binary_cross_entropy``
are primitives rather than composites because their stable kernels subtract the maximum (or
use ``|x|``) inside one NumPy expression: a composite of ``exp``/``sum``/``log`` nodes would
overflow for large logits unless a rewrite pass recognised it first. Their VJPs are the
well-known closed forms (``softmax - one_hot``), built from public builders so they can be
differentiated again. ``mse`` and ``dropout`` are composites: nothing to stabilise.

Float labels and targets (probabilities, soft labels) get their true gradient; integer class
labels are not differentiable (asking for their gradient is a ``DTypeError``, as for any
integer value), and neither is dropout's ``key``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph.node import Node
from ..graph.types import TensorType, TupleType, format_shape, normalize_axis
from .activations import sigmoid
from .control import TupleGet
from .base import Op, OpError, apply, as_node, describe_error, dtype_error, shape_error
from .elementwise import Elementwise, exp, square
from .indexing import one_hot
from .reduce import mean, sum as reduce_sum
from .shape import expand_dims


def _log_softmax_kernel(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    z = x - m
    with np.errstate(under="ignore"):  # exp of very negative logits is 0, as it should be
        return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _float(t: TensorType) -> np.dtype:
    if t.dtype.kind not in "fiub":
        raise dtype_error(f"needs numeric logits, got {t.dtype.name}")
    return t.dtype if t.dtype.kind == "f" else np.dtype(np.float64)


@dataclasses.dataclass(frozen=True)
class _AxisOp(Op):
    axis: int

    def infer(self, x: TensorType) -> TensorType:
        if x.ndim == 0:
            raise shape_error("needs at least one dim")
        if not 0 <= self.axis < x.ndim:
            raise shape_error(f"axis {self.axis} is out of bounds for {x.ndim} dims")
        return TensorType(x.shape, _float(x))


@dataclasses.dataclass(frozen=True)
class Softmax(_AxisOp):
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``."""

    name: ClassVar[str] = "softmax"
    vjp_formula: ClassVar[str] = "y * (g - sum(g * y, axis, keepdims=True))"

    def compute(self, x):
        lsm = _log_softmax_kernel(x.astype(_float(TensorType(x.shape, x.dtype)), copy=False), self.axis)
        with np.errstate(under="ignore"):
            return np.exp(lsm)

    def vjp(self, node, g):
        return (node * (g - reduce_sum(g * node, axis=self.axis, keepdims=True)),)


@dataclasses.dataclass(frozen=True)
class LogSoftmax(_AxisOp):
    """``x - logsumexp(x)`` along ``axis``, max-subtracted."""

    name: ClassVar[str] = "log_softmax"
    vjp_formula: ClassVar[str] = "g - exp(y) * sum(g, axis, keepdims=True)"

    def compute(self, x):
        return _log_softmax_kernel(x.astype(_float(TensorType(x.shape, x.dtype)), copy=False), self.axis)

    def vjp(self, node, g):
        return (g - exp(node) * reduce_sum(g, axis=self.axis, keepdims=True),)


@dataclasses.dataclass(frozen=True)
class SoftmaxCrossEntropy(Op):
    """Per-example ``-sum(p * log_softmax(logits))`` along ``axis``.

    Integer ``labels`` are class indices (shape of ``logits`` without ``axis``; the class
    count must be known statically); float ``labels`` are probabilities of ``logits``' shape.
    Float labels get their true gradient, ``-g * log_softmax(x)`` (soft labels, distillation,
    and the stability pass's rewrite of a user's ``-sum(t * log_softmax(x))`` with a computed
    ``t``); integer labels are not differentiable.
    """

    name: ClassVar[str] = "softmax_cross_entropy"
    vjp_formula: ClassVar[str] = (
        "int labels: g * (softmax(x) - one_hot(labels)), none to labels; "
        "float labels p: g * (softmax(x) * sum(p, axis) - p), -g * log_softmax(x) to p"
    )
    axis: int

    def infer(self, x: TensorType, labels: TensorType) -> TensorType:
        dt = _float(x)
        if x.ndim == 0:
            raise shape_error("logits need a class axis")
        if not 0 <= self.axis < x.ndim:
            raise shape_error(f"axis {self.axis} is out of bounds for {x.ndim} dims")
        out = x.shape[: self.axis] + x.shape[self.axis + 1:]
        if labels.dtype.kind in "iu":
            if x.shape[self.axis] is None:
                raise shape_error(f"the class axis {self.axis} of the logits must have a known size")
            expect = out
        elif labels.dtype.kind == "f":
            expect = x.shape
        else:
            raise dtype_error(f"labels must be integer class indices or float probabilities, got {labels.dtype.name}")
        if labels.ndim != len(expect) or any(
            a is not None and b is not None and a != b for a, b in zip(labels.shape, expect)
        ):
            raise shape_error(
                f"labels {format_shape(labels.shape)} do not fit logits {format_shape(x.shape)} "
                f"(expected {format_shape(expect)})"
            )
        if labels.dtype.kind in "iu":
            out = tuple(a if a is not None else b for a, b in zip(out, labels.shape))
        return TensorType(out, dt)

    def compute(self, x, labels):
        lsm = _log_softmax_kernel(x.astype(_float(TensorType(x.shape, x.dtype)), copy=False), self.axis)
        if labels.dtype.kind in "iu":
            picked = np.take_along_axis(lsm, np.expand_dims(labels, self.axis), axis=self.axis)
            return -np.squeeze(picked, self.axis)
        with np.errstate(invalid="ignore"):  # a 0 target on a -inf logit contributes 0
            terms = np.where(labels == 0, 0, labels * lsm)
        return -np.sum(terms, axis=self.axis, dtype=lsm.dtype)

    def vjp(self, node, g):
        x, labels = node.inputs
        p = softmax(x, self.axis)
        ge = expand_dims(g, self.axis)
        if labels.dtype.kind in "iu":
            return (p - one_hot(labels, x.shape[self.axis], p.dtype, self.axis)) * ge, None
        gx = (p * reduce_sum(labels, axis=self.axis, keepdims=True) - labels) * ge
        return gx, -(log_softmax(x, self.axis) * ge)


@dataclasses.dataclass(frozen=True)
class SoftmaxCrossEntropyProbs(Op):
    """``(softmax_cross_entropy(x, labels), softmax(x))`` along ``axis``, integer labels,
    from one pass over the logits.

    The ``share_softmax`` pass makes it where a graph computes both on the same logits:
    every classifier's training step does (the loss forward, the softmax in its gradient),
    and the backward then reads the probabilities the forward computed instead of running a
    second softmax. Read through ``tuple_get`` 0 (the loss) and 1 (the probabilities).
    """

    name: ClassVar[str] = "softmax_cross_entropy_probs"
    nondiff_inputs: ClassVar[tuple[int, ...]] = (1,)
    vjp_formula: ClassVar[str] = "g_loss * (p - one_hot(labels)) + p * (g_p - sum(g_p * p, axis)), none to labels"
    axis: int

    def infer(self, x: TensorType, labels: TensorType) -> TupleType:
        if labels.dtype.kind not in "iu":
            raise dtype_error(f"labels must be integer class indices, got {labels.dtype.name}")
        loss = SoftmaxCrossEntropy(self.axis).infer(x, labels)
        return TupleType((loss, TensorType(x.shape, loss.dtype)))

    def compute(self, x, labels):
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        if self.axis != x.ndim - 1 or x.size == 0:
            lsm = _log_softmax_kernel(x, self.axis)
            picked = np.take_along_axis(lsm, np.expand_dims(labels, self.axis), axis=self.axis)
            with np.errstate(under="ignore"):
                return -np.squeeze(picked, self.axis), np.exp(lsm)
        # the row-matrix form of the lowered softmax and cross-entropy (runtime/lowering.py):
        # a short last axis reduces faster over a transposed copy (the maximum is exact in
        # any order), and its row sums are a product with a column of ones
        k = x.shape[-1]
        z = x.reshape(-1, k) if x.ndim != 2 else x
        n = len(z)
        short = k <= 64
        m = np.maximum.reduce(np.ascontiguousarray(z.T), 0) if short and n >= 2 * k else np.maximum.reduce(z, 1)
        p = np.subtract(z, m[:, None])
        picked = p[np.arange(n), labels.reshape(-1)]
        with np.errstate(under="ignore"):  # exp of very negative logits is 0, as it should be
            np.exp(p, out=p)
        s = np.dot(p, np.ones(k, p.dtype)) if short else np.add.reduce(p, 1)
        loss = np.log(s)
        loss -= picked
        p /= s[:, None]
        if x.ndim == 2:
            return loss, p
        return loss.reshape(x.shape[:-1]), p.reshape(x.shape)

    def vjp(self, node, cts):
        g_loss, g_p = cts
        x, labels = node.inputs
        p = apply(TupleGet(1), node)
        gx = None
        if g_loss is not None:
            gx = (p - one_hot(labels, x.shape[self.axis], p.dtype, self.axis)) * expand_dims(g_loss, self.axis)
        if g_p is not None:
            t = p * (g_p - reduce_sum(g_p * p, axis=self.axis, keepdims=True))
            gx = t if gx is None else gx + t
        return gx, None


@dataclasses.dataclass(frozen=True)
class SigmoidBinaryCrossEntropy(Elementwise):
    """``-(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z)))`` as
    ``max(z, 0) - z t + log1p(exp(-|z|))``, elementwise with broadcasting."""

    name: ClassVar[str] = "sigmoid_binary_cross_entropy"
    vjp_formula: ClassVar[str] = "g * (sigmoid(z) - t) to z; -g * z to float targets t"

    def compute(self, z, t):
        dt = np.result_type(z.dtype, t.dtype, np.float16)
        z = z.astype(dt, copy=False)
        with np.errstate(under="ignore"):
            return np.maximum(z, 0) - z * t.astype(dt, copy=False) + np.log1p(np.exp(-np.abs(z)))

    def vjp(self, node, g):
        z, t = node.inputs
        return g * (sigmoid(z) - t), (-(g * z) if t.dtype.kind == "f" else None)


@dataclasses.dataclass(frozen=True)
class DropoutMask(Op):
    """``(rng.random(shape) >= rate) / (1 - rate)`` with ``rng = default_rng(key)``, shape
    and dtype of the ``like`` input: a pure function of (key, shape), so the same key gives
    the same mask in the forward and in every gradient that reuses this node."""

    name: ClassVar[str] = "dropout_mask"
    differentiable: ClassVar[bool] = False
    vjp_formula: ClassVar[str] = "none (a constant of x given the key)"
    rate: float

    def infer(self, key: TensorType, like: TensorType) -> TensorType:
        if key.dtype.kind not in "iu" or key.ndim != 0:
            raise dtype_error(f"key must be an integer scalar, got {key}")
        if not 0.0 <= self.rate < 1.0:  # a bad value, not a bad shape
            raise OpError(f"rate must be in [0, 1), got {self.rate}", GraphError)
        return TensorType(like.shape, like.dtype if like.dtype.kind == "f" else np.float64)

    def compute(self, key, like):
        rng = np.random.default_rng(int(key) % 2**64)
        dt = like.dtype if like.dtype.kind == "f" else np.float64
        keep = rng.random(like.shape) >= self.rate
        return keep.astype(dt) * dt.type(1.0 / (1.0 - self.rate))


# ------------------------------------------------------------------------- builders
def _axis(x: Node, axis: int, op: Op) -> int:
    try:
        return normalize_axis(int(axis), max(x.ndim, 1))
    except ValueError as e:
        raise ShapeError(describe_error(op, [x], str(e))) from None


def softmax(x, axis: int = -1) -> Node:
    """``exp(x) / sum(exp(x), axis)``, computed max-subtracted."""
    x = as_node(x)
    return apply(Softmax(_axis(x, axis, Softmax(axis))), x)


def log_softmax(x, axis: int = -1) -> Node:
    """``x - logsumexp(x, axis)``, computed max-subtracted."""
    x = as_node(x)
    return apply(LogSoftmax(_axis(x, axis, LogSoftmax(axis))), x)


def softmax_cross_entropy(logits, labels, axis: int = -1) -> Node:
    """Per-example cross-entropy of ``softmax(logits)`` against ``labels``.

    Parameters
    ----------
    logits : node
    labels : node
        Integer class indices (``logits.shape`` without ``axis``; not differentiable) or float
        probabilities (``logits.shape``; their gradient is ``-log_softmax(logits)``).
    axis : int
        The class axis.
    """
    x, t = as_node(logits), as_node(labels)
    return apply(SoftmaxCrossEntropy(_axis(x, axis, SoftmaxCrossEntropy(axis))), x, t)


def sigmoid_binary_cross_entropy(logits, targets) -> Node:
    """Elementwise binary cross-entropy of ``sigmoid(logits)`` against ``targets`` in [0, 1].

    Float targets are differentiable (the gradient is ``-logits``), for soft labels and
    distillation."""
    z = as_node(logits)
    return apply(SigmoidBinaryCrossEntropy(), z, as_node(targets, like=z))


def mse(pred, target) -> Node:
    """Mean squared error ``mean((pred - target)**2)`` over all elements (a scalar)."""
    return mean(square(as_node(pred) - target))


def dropout_mask(key, like: Node, rate: float) -> Node:
    """The scaled keep-mask dropout multiplies by (see :class:`DropoutMask`)."""
    return apply(DropoutMask(float(rate)), as_node(key), like)


def dropout(x, rate: float, key) -> Node:
    """Inverted dropout: zero each element with probability ``rate``, scale the rest by
    ``1 / (1 - rate)``.

    ``key`` is an integer scalar (a Python int becomes a constant; feed a ``gb.input`` of
    dtype int64 to draw a new mask per step). The mask is a deterministic function of the
    key and ``x``'s shape, so the graph stays a pure function and the gradient is ``g * mask``
    with the very same mask. ``rate == 0`` returns ``x`` unchanged.
    """
    x = as_node(x)
    if float(rate) == 0.0:
        return x
    k = as_node(np.int64(key) if isinstance(key, (int, np.integer)) else key)
    return x * dropout_mask(k, x, rate)
