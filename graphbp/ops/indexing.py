"""Indexing ops: basic slicing, concatenation, gathers (``take``) and ``one_hot``.

Basic indices are normalised at build time into a hashable tuple (Ellipsis expanded,
slices as ``(start, stop, step)`` triples) so an op's parameters stay plain data. The VJP of
a read is the matching write into zeros (``embed_slice``, ``scatter_add``), which are
linear ops whose own VJP is the read again, so second derivatives work.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph.node import Node
from ..graph.types import Shape, TensorType, format_shape, normalize_axis
from .base import Op, apply, as_node, as_nodes, describe_error, dtype_error, shape_error
from .creation import zeros_like
from .shape import expand_dims

IndexItem = int | None | tuple[int | None, int | None, int | None]


def _to_numpy(index: tuple[IndexItem, ...]) -> tuple:
    return tuple(slice(*i) if isinstance(i, tuple) else i for i in index)


def _normalize_index(index, ndim: int) -> tuple[IndexItem, ...]:
    items = index if isinstance(index, tuple) else (index,)
    for it in items:
        if isinstance(it, (Node, np.ndarray, list, tuple, bool, np.bool_)):
            raise GraphError(
                f"getitem: advanced indexing with {type(it).__name__} is not supported; "
                "use gb.take(x, indices, axis) for integer gathers or gb.where for masks"
            )
        if not (it is None or it is Ellipsis or isinstance(it, (slice, int, np.integer))):
            raise GraphError(f"getitem: unsupported index {it!r} (ints, slices, None and ... only)")
    if sum(it is Ellipsis for it in items) > 1:
        raise GraphError("getitem: an index can only have a single ellipsis ('...')")
    used = sum(1 for it in items if it is not None and it is not Ellipsis)
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items = items[:k] + (slice(None),) * max(ndim - used, 0) + items[k + 1:]
    out: list[IndexItem] = []
    for it in items:
        if isinstance(it, slice):
            out.append(tuple(None if v is None else int(v) for v in (it.start, it.stop, it.step)))
        else:
            out.append(None if it is None else int(it))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class GetItem(Op):
    """``x[index]`` for basic indices; ``index`` holds ints, ``None`` and slice triples."""

    name: ClassVar[str] = "getitem"
    view: ClassVar[bool] = True  # basic indexing re-views x (ints, slices, new axes)
    vjp_formula: ClassVar[str] = "embed_slice(g, index, like=x): zeros of x's shape with g at index"
    index: tuple[IndexItem, ...]

    def batched_form(self, stacked, types):
        return GetItem(((None, None, None), *self.index))

    def infer(self, x: TensorType) -> TensorType:
        return TensorType(_sliced_shape(self.index, x.shape), x.dtype)

    def compute(self, x):
        return np.asarray(x[_to_numpy(self.index)])

    def vjp(self, node, g):
        x = node.inputs[0]
        return (embed_slice(g, self.index, x),)


def _sliced_shape(index: tuple[IndexItem, ...], shape: Shape) -> Shape:
    consumed = sum(1 for i in index if i is not None)
    if consumed > len(shape):
        raise shape_error(f"too many indices ({consumed}) for {len(shape)} dims")
    out: list[int | None] = []
    axis = 0
    for it in index:
        if it is None:
            out.append(1)
            continue
        d = shape[axis]
        if isinstance(it, tuple):
            if it[2] == 0:
                raise shape_error("slice step cannot be zero")
            if d is None:
                out.append(None)
            else:
                out.append(len(range(*slice(*it).indices(d))))
        elif d is not None and not -d <= it < d:
            raise shape_error(f"index {it} is out of bounds for axis {axis} with size {d}")
        axis += 1
    return tuple(out) + tuple(shape[axis:])


@dataclasses.dataclass(frozen=True)
class EmbedSlice(Op):
    """Zeros of the ``like`` input's shape (or the static ``shape``) with ``g`` written at
    ``index``: the transpose of :class:`GetItem`. Without ``like``, ``shape`` may leave a dim
    unknown (``None``) where ``index`` takes the axis whole: its size is then ``g``'s (what an
    imported ONNX ``Pad`` of a tensor with unknown dims needs)."""

    name: ClassVar[str] = "embed_slice"
    shape_only_inputs: ClassVar[tuple[int, ...]] = (1,)
    nondiff_inputs: ClassVar[tuple[int, ...]] = (1,)
    vjp_formula: ClassVar[str] = "getitem(g, index)"
    index: tuple[IndexItem, ...]
    shape: Shape

    def infer(self, g: TensorType, like: TensorType | None = None) -> TensorType:
        shape = self.shape if like is None else like.shape
        expect = _sliced_shape(self.index, shape)
        if len(expect) != g.ndim or any(
            a is not None and b is not None and a != b for a, b in zip(expect, g.shape)
        ):
            raise shape_error(f"value {format_shape(g.shape)} does not fit slice shape {format_shape(expect)}")
        if like is None and any(d is None for d in shape):
            whole = _whole_axes(self.index, len(shape))
            if any(d is None and a not in whole for a, d in enumerate(shape)):
                raise shape_error(f"shape {format_shape(shape)} has unknown dims on sliced axes; pass like=")
            shape = self._filled(g.shape)
        return TensorType(shape, g.dtype)

    def _filled(self, g_shape: tuple) -> tuple:
        """The static ``shape`` with each unknown dim (an axis the index takes whole) set to
        the value's size on that axis."""
        whole = _whole_axes(self.index, len(self.shape))
        return tuple(g_shape[whole[a]] if d is None else d for a, d in enumerate(self.shape))

    def compute(self, g, like=None):
        out = np.zeros(self._filled(g.shape) if like is None else like.shape, g.dtype)
        out[_to_numpy(self.index)] = g
        return out

    def vjp(self, node, g):
        return (_basic_slice(g, self.index),) + (None,) * (len(node.inputs) - 1)


def _whole_axes(index: tuple[IndexItem, ...], ndim: int) -> dict[int, int]:
    """``{axis of the target: axis of the slice}`` for the axes ``index`` takes whole."""
    whole: dict[int, int] = {}
    axis = out_axis = 0
    for it in index:
        if it is None:
            out_axis += 1
            continue
        if isinstance(it, tuple):
            if it in ((None, None, None), (None, None, 1)):
                whole[axis] = out_axis
            out_axis += 1
        axis += 1
    whole.update({axis + k: out_axis + k for k in range(ndim - axis)})
    return whole


def _basic_slice(x: Node, index: tuple[IndexItem, ...]) -> Node:
    """``x[index]`` for an index already in normal form (VJP rules and ``split``)."""
    return apply(GetItem(index), x)


def embed_slice(g, index: tuple[IndexItem, ...], like: Node) -> Node:
    """Zeros shaped like ``like`` with ``g`` at the (normalised) basic ``index``."""
    g = as_node(g)
    if like.type.is_concrete:
        return apply(EmbedSlice(index, like.shape), g)
    return apply(EmbedSlice(index, like.shape), g, like)


def getitem(x, index) -> Node:
    """``x[index]`` with NumPy basic indexing: ints, slices (any step), ``None``, ``...``.

    Advanced (array, list, tuple or boolean) indexing is rejected; use :func:`take` to
    gather by integer indices.
    """
    x = as_node(x)
    try:
        norm = _normalize_index(index, x.ndim)
    except GraphError as e:
        raise GraphError(describe_error(GetItem(()), [x], str(e).removeprefix("getitem: "))) from None
    return apply(GetItem(norm), x)


# ------------------------------------------------------------------------- concatenate
@dataclasses.dataclass(frozen=True)
class Concatenate(Op):
    name: ClassVar[str] = "concatenate"
    vjp_formula: ClassVar[str] = "g_i = the slice of g along axis covering x_i"
    axis: int

    def infer(self, *xs: TensorType) -> TensorType:
        if not xs:
            raise shape_error("needs at least one array")
        nd = xs[0].ndim
        if nd == 0:
            raise shape_error("zero-dimensional arrays cannot be concatenated")
        if any(t.ndim != nd for t in xs):
            raise shape_error("all operands must have the same number of dims")
        try:
            ax = normalize_axis(self.axis, nd)
        except ValueError as e:
            raise shape_error(str(e)) from None
        out: list[int | None] = []
        for a in range(nd):
            dims = [t.shape[a] for t in xs]
            if a == ax:
                out.append(None if any(d is None for d in dims) else sum(dims))
                continue
            known = {d for d in dims if d is not None}
            if len(known) > 1:
                raise shape_error(f"dims at axis {a} differ: {sorted(known)}")
            out.append(known.pop() if known else None)
        dtype = np.result_type(*(t.dtype for t in xs))
        return TensorType(tuple(out), dtype)

    def compute(self, *xs):
        return np.concatenate(xs, axis=self.axis)

    def operand_places(self, in_types):
        ax = normalize_axis(self.axis, in_types[0].ndim)
        sizes = [t.shape[ax] for t in in_types]
        if any(s is None for s in sizes):
            return None
        places, start = [], 0
        for s in sizes:
            places.append((slice(None),) * ax + (slice(start, start + s),))
            start += s
        return tuple(places)

    def vjp(self, node, g):
        places = self.operand_places([x.type for x in node.inputs])
        if places is not None:
            return tuple(_basic_slice(g, tuple((p.start, p.stop, None) for p in idx)) for idx in places)
        ax = normalize_axis(self.axis, node.ndim)
        return tuple(apply(ConcatSlice(ax, i), g, *node.inputs) for i in range(len(node.inputs)))


@dataclasses.dataclass(frozen=True)
class ConcatSlice(Op):
    """Piece ``index`` of ``g`` split along ``axis`` at the runtime sizes of ``parts``: the
    VJP of :class:`Concatenate` when a concatenated size is unknown at build time."""

    name: ClassVar[str] = "concat_slice"
    vjp_formula: ClassVar[str] = "concatenate([zeros_like(p) for other parts, g], axis)"
    axis: int
    index: int

    def infer(self, g: TensorType, *parts: TensorType) -> TensorType:
        p = parts[self.index]
        shape = tuple(d if i == self.axis else (g.shape[i] if g.shape[i] is not None else d)
                      for i, d in enumerate(p.shape))
        return TensorType(shape, g.dtype)

    def compute(self, g, *parts):
        start = int(np.sum([p.shape[self.axis] for p in parts[: self.index]], dtype=np.int64))
        stop = start + parts[self.index].shape[self.axis]
        return g[(slice(None),) * self.axis + (slice(start, stop),)]

    def vjp(self, node, g):
        parts = node.inputs[1:]
        pieces = [g if i == self.index else zeros_like(p, dtype=g.dtype) for i, p in enumerate(parts)]
        return (concatenate(pieces, self.axis),) + (None,) * len(parts)


def concatenate(xs: Sequence, axis: int = 0) -> Node:
    """``np.concatenate(xs, axis)`` (Python lists among ``xs`` take the first node's dtype)."""
    nodes = list(as_nodes(*xs))
    return apply(Concatenate(int(axis)), *nodes)


def stack(xs: Sequence, axis: int = 0) -> Node:
    """``np.stack``: a composite of ``expand_dims`` and ``concatenate`` (no own rule needed)."""
    nodes = list(as_nodes(*xs))
    if not nodes:
        raise ShapeError("stack: needs at least one array")
    return concatenate([expand_dims(n, axis) for n in nodes], axis=axis)


_SPLIT = types.SimpleNamespace(name="split")  # errors of the split builder (it has no op class)


def split(x, indices_or_sections, axis: int = 0) -> list[Node]:
    """``np.split``: a list of basic slices of ``x`` (equal sections need a known size)."""
    x = as_node(x)
    try:
        ax = normalize_axis(int(axis), x.ndim)
    except ValueError as e:
        raise ShapeError(describe_error(_SPLIT, [x], str(e))) from None
    n = x.shape[ax]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if n is None or k <= 0 or n % k:
            raise ShapeError(describe_error(
                _SPLIT, [x], f"cannot split axis {ax} of size {'?' if n is None else n} into {k} equal sections"))
        bounds = [i * (n // k) for i in range(k)] + [None]
    else:
        bounds = [0] + [int(i) for i in indices_or_sections] + [None]
    pre = tuple((None, None, None) for _ in range(ax))
    return [_basic_slice(x, pre + ((a, b, None),)) for a, b in zip(bounds[:-1], bounds[1:])]


# ------------------------------------------------------------------------------ take
@dataclasses.dataclass(frozen=True)
class Take(Op):
    """``np.take(x, indices, axis)``: gather along one axis with integer indices."""

    name: ClassVar[str] = "take"
    nondiff_inputs: ClassVar[tuple[int, ...]] = (1,)
    vjp_formula: ClassVar[str] = "scatter_add(g, indices, axis, like=x) (np.add.at into zeros)"
    axis: int

    def batched_form(self, stacked, types):
        return self if not stacked[0] and self.axis == 0 else None

    def infer(self, x: TensorType, idx: TensorType) -> TensorType:
        if idx.dtype.kind not in "iu":
            raise dtype_error(f"indices must be integers, got {idx.dtype.name}")
        if not 0 <= self.axis < x.ndim:
            raise shape_error(f"axis {self.axis} is out of bounds for {x.ndim} dims")
        return TensorType(x.shape[: self.axis] + idx.shape + x.shape[self.axis + 1:], x.dtype)

    def compute(self, x, idx):
        return np.take(x, idx, axis=self.axis)

    def vjp(self, node, g):
        x, idx = node.inputs
        return scatter_add(g, idx, self.axis, x), None


@dataclasses.dataclass(frozen=True)
class ScatterAdd(Op):
    """Zeros of ``like``'s shape with ``g``'s slices added at ``indices`` along ``axis``
    (``np.add.at``, so repeated indices accumulate): the transpose of :class:`Take`."""

    name: ClassVar[str] = "scatter_add"
    shape_only_inputs: ClassVar[tuple[int, ...]] = (2,)
    nondiff_inputs: ClassVar[tuple[int, ...]] = (1, 2)
    vjp_formula: ClassVar[str] = "take(g, indices, axis)"
    axis: int
    shape: Shape

    def infer(self, g: TensorType, idx: TensorType, like: TensorType | None = None) -> TensorType:
        if idx.dtype.kind not in "iu":
            raise dtype_error(f"indices must be integers, got {idx.dtype.name}")
        shape = self.shape if like is None else like.shape
        if like is None and any(d is None for d in shape):
            raise shape_error(f"shape {format_shape(shape)} has unknown dims; pass like=")
        if g.ndim != len(shape) - 1 + idx.ndim:
            raise shape_error(f"updates {format_shape(g.shape)} do not fit indices {format_shape(idx.shape)} into {format_shape(shape)}")
        return TensorType(shape, g.dtype)

    def compute(self, g, idx, like=None):
        out = np.zeros(self.shape if like is None else like.shape, g.dtype)
        moved = np.moveaxis(out, self.axis, 0)  # a view: both paths write through it
        gm = np.moveaxis(g, tuple(range(self.axis, self.axis + idx.ndim)), tuple(range(idx.ndim)))
        if not _add_sorted(moved, idx, gm):
            np.add.at(moved, idx, gm)
        return out

    def vjp(self, node, g):
        return (take(g, node.inputs[1], self.axis),) + (None,) * (len(node.inputs) - 1)


def _add_sorted(out: np.ndarray, idx: np.ndarray, g: np.ndarray) -> bool:
    """``np.add.at(out, idx, g)`` for many indices with slices of several elements each (an
    embedding's gradient): the indices sorted (stably, so each row still sums in its order),
    each run of equal indices summed by one ``np.add.reduceat`` and written once. ``add.at``
    visits one slice per index in a slow loop; this is a few passes over the rows. False
    (nothing written) where ``add.at`` is as fast, or must raise: out-of-range indices."""
    n, rows = idx.size, out.shape[0]
    if n < 64 or g.size < 8 * n or rows == 0:
        return False
    flat = idx.reshape(-1)
    lo, hi = int(flat.min()), int(flat.max())
    if lo < -rows or hi >= rows:
        return False
    if lo < 0:
        flat = np.where(flat < 0, flat + rows, flat)
    order = np.argsort(flat, kind="stable")
    s = flat[order]
    first = np.empty(n, bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    sums = np.add.reduceat(g.reshape(n, -1)[order], starts, axis=0)
    out[s[starts]] = sums.reshape((len(starts), *out.shape[1:]))
    return True


def scatter_add(g, indices, axis: int, like: Node) -> Node:
    """Zeros shaped like ``like``; ``g`` added at ``indices`` along ``axis`` (repeats add up)."""
    g, idx = as_node(g), as_node(indices)
    if like.type.is_concrete:
        return apply(ScatterAdd(int(axis), like.shape), g, idx)
    return apply(ScatterAdd(int(axis), like.shape), g, idx, like)


def take(x, indices, axis: int | None = None) -> Node:
    """``np.take(x, indices, axis)``; ``axis=None`` gathers from the flattened ``x``.
    Negative indices count from the end, as in NumPy; no gradient flows to ``indices``."""
    x, idx = as_node(x), as_node(indices)
    if axis is None:
        from .shape import reshape

        x, axis = reshape(x, (-1,)), 0
    try:
        ax = normalize_axis(int(axis), x.ndim)
    except ValueError as e:
        raise ShapeError(describe_error(Take(int(axis)), [x, idx], str(e))) from None
    return apply(Take(ax), x, idx)


# --------------------------------------------------------------------------- one_hot
@dataclasses.dataclass(frozen=True)
class OneHot(Op):
    """``labels[..., None] == arange(depth)`` cast to ``dtype``; out-of-range labels give
    an all-zero row (as in JAX)."""

    name: ClassVar[str] = "one_hot"
    differentiable: ClassVar[bool] = False
    vjp_formula: ClassVar[str] = "none (integer input)"
    depth: int
    dtype: str
    axis: int = -1

    def infer(self, labels: TensorType) -> TensorType:
        if labels.dtype.kind not in "iu":
            raise dtype_error(f"labels must be integers, got {labels.dtype.name}")
        try:
            ax = normalize_axis(self.axis, labels.ndim + 1)
        except ValueError as e:
            raise shape_error(str(e)) from None
        return TensorType(labels.shape[:ax] + (self.depth,) + labels.shape[ax:], np.dtype(self.dtype))

    def compute(self, labels):
        out = (labels[..., None] == np.arange(self.depth)).astype(self.dtype)
        return np.moveaxis(out, -1, self.axis)


def one_hot(labels, depth: int, dtype="float32", axis: int = -1) -> Node:
    """One-hot encode integer ``labels`` with ``depth`` classes along ``axis``."""
    return apply(OneHot(int(depth), np.dtype(dtype).name, int(axis)), as_node(labels))
