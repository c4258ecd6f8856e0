"""Reductions over an axis (int, tuple or None) with ``keepdims``, NumPy semantics."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType, normalize_axes
from .base import Op, apply, as_node, shape_error
from .shape import broadcast_to, reshape, reshape_like


@dataclasses.dataclass(frozen=True)
class Reduction(Op):
    """Shared shape rule: ``axis`` is a normalised tuple of non-negative axes."""

    axis: tuple[int, ...]
    keepdims: bool = False

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

    def result_dtype(self, dtype):
        return np.sum(np.zeros(1, dtype)).dtype

    def compute(self, x):
        return np.add.reduce(x, axis=self.axis, keepdims=self.keepdims)

    def vjp(self, node, g):
        return (expand_to_input(g, node.inputs[0], self.axis, self.keepdims),)


@dataclasses.dataclass(frozen=True)
class Mean(Reduction):
    name: ClassVar[str] = "mean"

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
    differentiable: ClassVar[bool] = False
    axis: tuple[int, ...]

    def infer(self, x: TensorType) -> TensorType:
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
