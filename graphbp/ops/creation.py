"""Array creation: filled arrays whose unknown dims come from a ``like`` input."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..graph.node import Node
from ..graph.types import Shape, TensorType, format_shape
from .base import Op, apply, shape_error


@dataclasses.dataclass(frozen=True)
class Full(Op):
    """``np.full(shape, value, dtype)``; with a ``like`` input its runtime shape is used."""

    name: ClassVar[str] = "full"
    shape_only_inputs: ClassVar[tuple[int, ...]] = (0,)
    differentiable: ClassVar[bool] = False
    shape: Shape
    value: float
    dtype: str

    def infer(self, like: TensorType | None = None) -> TensorType:
        if like is None and any(d is None for d in self.shape):
            raise shape_error(f"shape {format_shape(self.shape)} has unknown dims; pass like=")
        return TensorType(self.shape if like is None else like.shape, np.dtype(self.dtype))

    def compute(self, like=None):
        return np.full(self.shape if like is None else like.shape, self.value, self.dtype)


def full_like(x: Node, value: float, dtype=None) -> Node:
    """An array of ``value`` with ``x``'s shape (``x`` is only read for its runtime shape)."""
    dt = np.dtype(dtype or x.dtype).name
    if x.type.is_concrete:
        return apply(Full(x.shape, float(value), dt))
    return apply(Full(x.shape, float(value), dt), x)


def zeros_like(x: Node, dtype=None) -> Node:
    """Zeros with ``x``'s (runtime) shape; ``x``'s dtype unless ``dtype`` is given."""
    return full_like(x, 0.0, dtype)


def ones_like(x: Node, dtype=None) -> Node:
    """Ones with ``x``'s (runtime) shape; ``x``'s dtype unless ``dtype`` is given."""
    return full_like(x, 1.0, dtype)
