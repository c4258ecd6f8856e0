"""Reductions over an axis (int, tuple or None) with ``keepdims``, NumPy semantics."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType, normalize_axes
from ..graph.cost import size_poly
from .base import Op, apply, as_node, shape_error
from .shape import broadcast_to, reshape


@dataclasses.dataclass(frozen=True)
class Reduction(Op):
    """Shared shape rule: ``axis`` is a normalised tuple of non-negative axes."""

    axis: tuple[int, ...]
    keepdims: bool = False

    def batched_form(self, stacked, types):
        return dataclasses.replace(self, axis=tuple(a + 1 for a in self.axis))

    def infer(self, x: TensorType) -> TensorType:
        for a in self.axis:
            if not 0 <= a < x.ndim:
                raise shape_error(f"axis {a} is out of bounds for {x.ndim} dims")
        if self.keepdims:
            shape = tuple(1 if i in self.axis else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in self.axis)
        return TensorType(shape, self.result_dtype(x.dtype))

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def flops(self, in_types, out_type):
        """One per element read: the work is proportional to the input, not the output."""
        return size_poly(in_types[0])

    def kept_shape(self, x: TensorType) -> tuple:
        return tuple(1 if i in self.axis else d for i, d in enumerate(x.shape))


def expand_to_input(g: Node, x: Node, axis: tuple[int, ...], keepdims: bool) -> Node:
    """Give a reduction's cotangent ``g`` back the reduced axes and broadcast it to ``x``."""
    kept = tuple(1 if i in axis else d for i, d in enumerate(x.shape))
    if not keepdims and axis:
        if all(d is not None for d in kept):
            g = reshape(g, kept)
        else:
            from .shape import expand_dims

            for a in axis:
                g = expand_dims(g, a)
    if x.type.is_concrete:
        return broadcast_to(g, x.shape)
    return broadcast_to(g, x.shape, like=x)


def reduced_count(x: Node, axis: tuple[int, ...]) -> Node | int:
    """How many elements each output of a reduction over ``axis`` of ``x`` summed."""
    dims = [x.shape[a] for a in axis]
    if all(d is not None for d in dims):
        return int(np.prod(dims, dtype=np.int64))
    return apply(ReducedCount(axis), x)


@dataclasses.dataclass(frozen=True)
class Sum(Reduction):
    name: ClassVar[str] = "sum"
    vjp_formula: ClassVar[str] = "broadcast_to(g with reduced axes restored, x.shape)"

    def result_dtype(self, dtype):
        return np.sum(np.zeros(1, dtype)).dtype

    def compute(self, x):
        return np.add.reduce(x, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, node, g):
        return (expand_to_input(g, node.inputs[0], self.axis, self.keepdims),)


@dataclasses.dataclass(frozen=True)
class Mean(Reduction):
    name: ClassVar[str] = "mean"
    vjp_formula: ClassVar[str] = "broadcast_to(g / count, x.shape)"

    def result_dtype(self, dtype):
        return np.mean(np.zeros(1, dtype)).dtype

    def compute(self, x):
        return np.mean(x, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, node, g):
        x = node.inputs[0]
        return (expand_to_input(g / reduced_count(x, self.axis), x, self.axis, self.keepdims),)


@dataclasses.dataclass(frozen=True)
class ReducedCount(Op):
    """The number of elements along ``axis`` of the input's runtime shape, as a scalar."""

    name: ClassVar[str] = "reduced_count"
    shape_only_inputs: ClassVar[tuple[int, ...]] = (0,)
    differentiable: ClassVar[bool] = False
    axis: tuple[int, ...]

    def infer(self, x: TensorType) -> TensorType:
        for a in self.axis:  # checked here so a bad axis (e.g. from a file) fails at build time
            if not -x.ndim <= a < x.ndim:
                raise shape_error(f"axis {a} is out of bounds for {x.ndim} dims")
        return TensorType((), x.dtype if x.dtype.kind == "f" else np.float64)

    def compute(self, x):
        n = 1
        for a in self.axis:
            n *= x.shape[a]
        return np.asarray(n, dtype=x.dtype if x.dtype.kind == "f" else np.float64)


def _axes(x: Node, axis) -> tuple[int, ...]:
    try:
        return normalize_axes(axis, x.ndim)
    except ValueError as e:
        from ..errors import ShapeError
        from .base import describe_error

        raise ShapeError(describe_error(Sum((), False), [x], str(e))) from None


def sum(x, axis=None, keepdims: bool = False) -> Node:  # noqa: A001 - NumPy's name
    """``np.sum``: ``axis`` is an int, a tuple of ints or None (all axes)."""
    x = as_node(x)
    return apply(Sum(_axes(x, axis), bool(keepdims)), x)


def mean(x, axis=None, keepdims: bool = False) -> Node:
    """``np.mean``; its gradient divides by the runtime count when a reduced dim is unknown."""
    x = as_node(x)
    return apply(Mean(_axes(x, axis), bool(keepdims)), x)


# ------------------------------------------------------------- max, min, prod, logsumexp
@dataclasses.dataclass(frozen=True)
class Max(Reduction):
    """``np.max``. The gradient is split evenly between tied maxima (so it is the average
    of the one-sided choices and sums to ``g``)."""

    name: ClassVar[str] = "max"
    vjp_formula: ClassVar[str] = "g * (x == y) / count(x == y, axis)  (ties share g evenly)"

    def infer(self, x: TensorType) -> TensorType:
        for a in self.axis:
            if a < x.ndim and x.shape[a] == 0:
                raise shape_error(f"zero-size axis {a} has no {self.name}")
        return super().infer(x)

    def compute(self, x):
        return np.max(x, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, node, g):
        from .elementwise import cast, equal

        x = node.inputs[0]
        hit = cast(equal(x, expand_to_input(node, x, self.axis, self.keepdims)), g.dtype)
        ties = sum(hit, axis=self.axis, keepdims=True)
        return (expand_to_input(g, x, self.axis, self.keepdims) * hit / ties,)


@dataclasses.dataclass(frozen=True)
class Min(Max):
    """``np.min``; ties share the gradient evenly, as for :class:`Max`."""

    name: ClassVar[str] = "min"

    def compute(self, x):
        return np.min(x, axis=self.axis, keepdims=self.keepdims)


@dataclasses.dataclass(frozen=True)
class Prod(Reduction):
    """``np.prod``. The gradient is exact with zeros (no ``y / x``): the product of the other
    elements, from the product of the non-zero elements and the zeros' count; its own
    derivative (a Hessian-vector product) is exact with zeros too."""

    name: ClassVar[str] = "prod"
    vjp_formula: ClassVar[str] = (
        "g * prod(x_j, j != i), from the product of non-zeros and the zeros' count (exact with zeros)"
    )

    def result_dtype(self, dtype):
        return np.prod(np.zeros(1, dtype)).dtype

    def compute(self, x):
        return np.prod(x, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, node, g):
        from .elementwise import cast, equal, where

        # prod_{j != i} x_j from the product of the non-zeros ``p`` and the zeros' count and
        # sum (a value of 0 that still carries the derivative wrt the zero element), so that
        # grad-of-grad is exact too: with one zero x_z, d/dx_i = p / x_i * x_z off it and p
        # at it; with two zeros x_a, x_b, it is p * x_b at a (and 0 elsewhere, to 2nd order).
        x = node.inputs[0]
        is_zero = equal(x, 0)
        nz = where(is_zero, 1, x)
        p = apply(Prod(self.axis, True), nz)
        count = sum(cast(is_zero, x.dtype), axis=self.axis, keepdims=True)
        zsum = sum(where(is_zero, x, 0), axis=self.axis, keepdims=True)
        one, two = equal(count, 1), equal(count, 2)
        off_zero = p / nz * where(equal(count, 0), 1, where(one, zsum, 0))
        at_zero = p * where(one, 1, where(two, zsum - x, 0))
        return (expand_to_input(g, x, self.axis, self.keepdims) * where(is_zero, at_zero, off_zero),)


@dataclasses.dataclass(frozen=True)
class LogSumExp(Reduction):
    """``log(sum(exp(x)))`` computed as ``m + log(sum(exp(x - m)))``, ``m`` the max: a
    primitive because the composite overflows for large ``x``."""

    name: ClassVar[str] = "logsumexp"
    vjp_formula: ClassVar[str] = "g * exp(x - y)  (softmax of x along axis)"

    def result_dtype(self, dtype):
        return dtype if dtype.kind == "f" else np.dtype(np.float64)

    def compute(self, x):
        x = x.astype(self.result_dtype(x.dtype), copy=False)
        m = np.max(x, axis=self.axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        with np.errstate(under="ignore"):
            out = np.log(np.sum(np.exp(x - m), axis=self.axis, keepdims=True)) + m
        return out if self.keepdims else np.squeeze(out, self.axis)

    def vjp(self, node, g):
        from .elementwise import exp

        x = node.inputs[0]
        y = expand_to_input(node, x, self.axis, self.keepdims)
        return (expand_to_input(g, x, self.axis, self.keepdims) * exp(x - y),)


def max(x, axis=None, keepdims: bool = False) -> Node:  # noqa: A001 - NumPy's name
    """``np.max`` over ``axis``; tied maxima share the gradient evenly."""
    x = as_node(x)
    return apply(Max(_axes(x, axis), bool(keepdims)), x)


def min(x, axis=None, keepdims: bool = False) -> Node:  # noqa: A001 - NumPy's name
    """``np.min`` over ``axis``; tied minima share the gradient evenly."""
    x = as_node(x)
    return apply(Min(_axes(x, axis), bool(keepdims)), x)


def prod(x, axis=None, keepdims: bool = False) -> Node:
    """``np.prod`` over ``axis``; the gradient is exact when elements are zero."""
    x = as_node(x)
    return apply(Prod(_axes(x, axis), bool(keepdims)), x)


def logsumexp(x, axis=None, keepdims: bool = False) -> Node:
    """``log(sum(exp(x), axis))``, stable for any magnitude."""
    x = as_node(x)
    return apply(LogSumExp(_axes(x, axis), bool(keepdims)), x)


def var(x, axis=None, keepdims: bool = False, ddof: int = 0) -> Node:
    """``np.var``: a composite ``sum((x - mean)**2) / (n - ddof)``. Two-pass (mean first),
    so it is as accurate as NumPy's; unknown dims get their count at run time."""
    from .elementwise import square

    x = as_node(x)
    axes = _axes(x, axis)
    centred = square(x - mean(x, axis=axes, keepdims=True))
    if ddof == 0:
        return mean(centred, axis=axes, keepdims=keepdims)
    return sum(centred, axis=axes, keepdims=keepdims) / (reduced_count(x, axes) - ddof)
