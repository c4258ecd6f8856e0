"""Shape ops: reshape, transpose, broadcast, expand/squeeze (and their inverses as VJPs).

Where a target shape has unknown dims, the op takes a second ``like`` input whose runtime
shape supplies them (gradients of reductions and reshapes over a batch dim need this).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ..graph.node import Node
from ..graph.types import Shape, TensorType, broadcast_shapes, format_shape, normalize_axis
from .base import Op, apply, as_node, shape_error


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


@dataclasses.dataclass(frozen=True)
class Reshape(Op):
    """``np.reshape``; ``shape`` may hold one ``-1``. With a ``like`` input, its shape is used."""

    name: ClassVar[str] = "reshape"
    view: ClassVar[bool] = True
    shape_only_inputs: ClassVar[tuple[int, ...]] = (1,)
    vjp_formula: ClassVar[str] = "reshape(g, x.shape)"
    shape: tuple[int, ...]

    def batched_form(self, stacked, types):
        return Reshape((-1, *self.shape)) if len(types) == 1 and -1 not in self.shape else None

    def infer(self, x: TensorType, like: TensorType | None = None) -> TensorType:
        if like is not None:
            if x.size() is not None and like.size() is not None and x.size() != like.size():
                raise shape_error(f"cannot reshape {x.size()} elements to {format_shape(like.shape)}")
            return TensorType(like.shape, x.dtype)
        target = self.shape
        if sum(d == -1 for d in target) > 1:
            raise shape_error(f"at most one -1 in shape {target}")
        known = _prod(d for d in target if d != -1)
        size = x.size()
        if -1 in target:
            if size is None:
                fill = None
            elif known == 0 or size % known:
                raise shape_error(f"cannot reshape {format_shape(x.shape)} ({size} elements) to {target}")
            else:
                fill = size // known
            return TensorType(tuple(fill if d == -1 else d for d in target), x.dtype)
        if size is not None and size != known:
            raise shape_error(f"cannot reshape {format_shape(x.shape)} ({size} elements) to {target}")
        if size is None and known == 0:
            raise shape_error(f"cannot reshape {format_shape(x.shape)} to {target}")
        return TensorType(target, x.dtype)

    def compute(self, x, like=None):
        return np.reshape(x, self.shape if like is None else like.shape)

    def vjp(self, node, g):
        x = node.inputs[0]
        return (reshape(g, x.shape) if x.type.is_concrete else reshape_like(g, x),) + (None,) * (len(node.inputs) - 1)


@dataclasses.dataclass(frozen=True)
class BroadcastTo(Op):
    """``np.broadcast_to``; unknown target dims come from the ``like`` input's runtime shape."""

    name: ClassVar[str] = "broadcast_to"
    view: ClassVar[bool] = True
    shape_only_inputs: ClassVar[tuple[int, ...]] = (1,)
    vjp_formula: ClassVar[str] = "g summed over the broadcast axes (by autodiff)"
    shape: Shape

    def infer(self, x: TensorType, like: TensorType | None = None) -> TensorType:
        if like is None and any(d is None for d in self.shape):
            raise shape_error(f"target shape {format_shape(self.shape)} has unknown dims; pass like=")
        if like is not None and any(d is None for d in self.shape) and like.ndim != len(self.shape):
            raise shape_error(f"like has {like.ndim} dims, target shape {format_shape(self.shape)} has {len(self.shape)}")
        if len(self.shape) < x.ndim:
            raise shape_error(f"cannot broadcast {format_shape(x.shape)} to fewer dims {format_shape(self.shape)}")
        try:
            out = broadcast_shapes(x.shape, self.shape)
        except ValueError as e:
            raise shape_error(f"cannot broadcast {format_shape(x.shape)} to {format_shape(self.shape)}: {e}") from None
        for xd, td in zip(x.shape[::-1], self.shape[::-1]):
            if xd is not None and td is not None and xd != 1 and xd != td:
                raise shape_error(f"cannot broadcast {format_shape(x.shape)} to {format_shape(self.shape)}")
        if like is not None and like.ndim == len(self.shape):  # unknown target dims: like's runtime dims
            out = tuple(o if o is not None else ld for o, ld in zip(out, like.shape))
        return TensorType(tuple(t if t is not None else o for t, o in zip(self.shape, out)), x.dtype)

    def compute(self, x, like=None):
        return np.broadcast_to(x, self.shape if like is None else like.shape)

    def vjp(self, node, g):
        return (g,) + (None,) * (len(node.inputs) - 1)  # the autodiff pass sums g back


@dataclasses.dataclass(frozen=True)
class Transpose(Op):
    name: ClassVar[str] = "transpose"
    view: ClassVar[bool] = True
    vjp_formula: ClassVar[str] = "transpose(g, argsort(axes))"
    axes: tuple[int, ...]

    def batched_form(self, stacked, types):
        return Transpose((0, *(a + 1 for a in self.axes)))

    def infer(self, x: TensorType) -> TensorType:
        if sorted(self.axes) != list(range(x.ndim)):
            raise shape_error(f"axes {self.axes} are not a permutation of {x.ndim} dims")
        return TensorType(tuple(x.shape[a] for a in self.axes), x.dtype)

    def compute(self, x):
        return np.transpose(x, self.axes)

    def vjp(self, node, g):
        return (transpose(g, tuple(int(i) for i in np.argsort(self.axes))),)


@dataclasses.dataclass(frozen=True)
class ExpandDims(Op):
    name: ClassVar[str] = "expand_dims"
    view: ClassVar[bool] = True
    vjp_formula: ClassVar[str] = "squeeze(g, axis)"
    axis: int

    def batched_form(self, stacked, types):
        return ExpandDims(self.axis + 1) if self.axis >= 0 else self

    def infer(self, x: TensorType) -> TensorType:
        try:
            a = normalize_axis(self.axis, x.ndim + 1)
        except ValueError as e:
            raise shape_error(str(e)) from None
        return TensorType(x.shape[:a] + (1,) + x.shape[a:], x.dtype)

    def compute(self, x):
        return np.expand_dims(x, self.axis)

    def vjp(self, node, g):
        return (squeeze(g, self.axis),)


@dataclasses.dataclass(frozen=True)
class Squeeze(Op):
    name: ClassVar[str] = "squeeze"
    view: ClassVar[bool] = True
    vjp_formula: ClassVar[str] = "reshape(g, x.shape)"
    axis: tuple[int, ...]

    def batched_form(self, stacked, types):
        return Squeeze(tuple(normalize_axis(a, types[0].ndim) + 1 for a in self.axis))

    def infer(self, x: TensorType) -> TensorType:
        try:
            axes = {normalize_axis(a, x.ndim) for a in self.axis}
        except ValueError as e:
            raise shape_error(str(e)) from None
        for a in axes:
            if x.shape[a] not in (1, None):
                raise shape_error(f"cannot squeeze axis {a} of size {x.shape[a]}")
        return TensorType(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)

    def compute(self, x):
        return np.squeeze(x, self.axis)

    def vjp(self, node, g):
        x = node.inputs[0]
        return (reshape(g, x.shape) if x.type.is_concrete else reshape_like(g, x),)


# ------------------------------------------------------------------------- builders
def reshape(x, shape: Sequence[int] | int) -> Node:
    """``np.reshape(x, shape)``; one dim may be ``-1``. ``None`` dims are not allowed here
    (they are unknown); use -1 for the one unknown dim."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(d) for d in shape)
    return apply(Reshape(shape), as_node(x))


def reshape_like(x, like: Node) -> Node:
    """Reshape ``x`` to ``like``'s runtime shape."""
    return apply(Reshape(tuple(-1 if d is None else d for d in like.shape)), as_node(x), like)


def broadcast_to(x, shape: Sequence[int | None], like: Node | None = None) -> Node:
    """``np.broadcast_to``. Unknown (``None``) target dims are taken from ``like`` at run time."""
    shape = tuple(None if d is None else int(d) for d in shape)
    x = as_node(x)
    if like is None:
        return apply(BroadcastTo(shape), x)
    return apply(BroadcastTo(shape), x, like)


def transpose(x, axes: Sequence[int] | None = None) -> Node:
    """``np.transpose``; reverses the dims when ``axes`` is None."""
    x = as_node(x)
    if axes is None:
        axes = tuple(range(x.ndim))[::-1]
    else:
        try:
            axes = tuple(normalize_axis(int(a), x.ndim) for a in axes)
        except ValueError:
            axes = tuple(int(a) for a in axes)
    return apply(Transpose(tuple(axes)), x)


def swapaxes(x, axis1: int, axis2: int) -> Node:
    """``np.swapaxes``: a ``transpose`` exchanging two axes."""
    x = as_node(x)
    perm = list(range(x.ndim))
    a, b = normalize_axis(axis1, x.ndim), normalize_axis(axis2, x.ndim)
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


def expand_dims(x, axis: int) -> Node:
    """``np.expand_dims``: a new size-1 axis at ``axis`` (negative counts from the end)."""
    return apply(ExpandDims(int(axis)), as_node(x))


def squeeze(x, axis: int | Sequence[int] | None = None) -> Node:
    """``np.squeeze``; with ``axis=None`` only statically known size-1 dims are removed."""
    x = as_node(x)
    if axis is None:
        axis = tuple(i for i, d in enumerate(x.shape) if d == 1)
    elif isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    return apply(Squeeze(tuple(int(a) for a in axis)), x)


def flatten(x, start_axis: int = 1) -> Node:
    """Merge the dims from ``start_axis`` on into one (``torch.flatten(x, 1)`` by default): the
    step from a CNN's feature maps to its dense layers. One unknown dim (the batch) is allowed."""
    x = as_node(x)
    try:
        ax = normalize_axis(int(start_axis), max(x.ndim, 1))
    except ValueError as e:
        from ..errors import ShapeError
        from .base import describe_error

        raise ShapeError(describe_error(Reshape((-1,)), [x], f"flatten: {e}")) from None
    lead, tail = x.shape[:ax], x.shape[ax:]
    merged = -1 if None in tail else int(np.prod(tail, dtype=np.int64))
    return reshape(x, tuple(-1 if d is None else d for d in lead) + (merged,))
