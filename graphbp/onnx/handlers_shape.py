"""ONNX import of shapes: ``Shape`` and the arithmetic on it, and the ops that take a shape.

Registered into :data:`graphbp.onnx.handlers.HANDLERS` (imported by the importer). A shape
with unknown dims is a :class:`~graphbp.onnx.symbolic.Dims` (polynomials in run-time
sizes); :data:`SYMBOLIC` folds the ops computing on it (``Gather``, ``Slice``, ``Concat``,
``Add``, ``Sub``, ``Mul``, ``ReduceProd``, ...), and the consumers turn the result into
graphbp's own forms: ``Reshape``/``Expand``/``ConstantOfShape`` to a tensor's shape take it as
``like=``, a ``Reshape`` with one unknown element uses ``-1``, a count used as data is
``reduced_count``, and ``Split`` at other tensors' sizes is ``concat_slice``. What has no
graphbp form (``Range`` over a run-time size: graphbp has no op making a sequence of
run-time length) is refused with a :class:`GraphFormatError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ops
from ..graph.node import Node
from ..ops.base import apply
from .handlers import Ctx, Static, attr, handles
from .symbolic import Dims, Sym, broadcast

SymbolicFold = Callable[[Ctx, Any, list[Any]], Any]
SYMBOLIC: dict[str, SymbolicFold] = {}
"""Folds of ops whose operands include a :class:`Dims`; a fold returns None when it does not
apply, and the op's ordinary handler then reads the shape as data."""


def folds(*op_types: str) -> Callable[[SymbolicFold], SymbolicFold]:
    def register(fn: SymbolicFold) -> SymbolicFold:
        for t in op_types:
            SYMBOLIC[t] = fn
        return fn
    return register


def _dims(v: Any) -> Dims | None:
    """``v`` as a shape vector: a :class:`Dims`, or a short static integer array."""
    if isinstance(v, Dims):
        return v
    if isinstance(v, Static) and v.value.dtype.kind in "iu" and v.value.ndim <= 1 and v.value.size <= 256:
        return Dims.of_array(v.value)
    return None


@folds("Add", "Sub", "Mul")
def _arith(ctx, n, args):
    a, b = (_dims(v) for v in args)
    if a is None or b is None:
        return None
    fn = {"Add": Sym.__add__, "Sub": Sym.__sub__, "Mul": Sym.__mul__}[n.op_type]
    return broadcast(a, b, fn)


@folds("Concat")
def _concat(ctx, n, args):
    parts = [_dims(v) for v in args]
    if any(p is None or p.scalar for p in parts):
        return None
    return Dims(tuple(s for p in parts for s in p.items))


@folds("Gather")
def _gather(ctx, n, args):
    data = _dims(args[0])
    if data is None or data.scalar or attr(n, "axis", 0) != 0 or not isinstance(args[1], Static):
        return None
    idx = args[1].value
    if idx.dtype.kind not in "iu" or idx.ndim > 1 or idx.size > 256:
        return None
    size = len(data.items)
    if any(not -size <= int(i) < size for i in idx.reshape(-1)):
        raise ctx.fail(f"Gather index out of range of a shape of {size} elements")
    picked = tuple(data.items[int(i)] for i in idx.reshape(-1))
    return Dims(picked, scalar=idx.ndim == 0)


@folds("Slice")
def _slice(ctx, n, args):
    data = _dims(args[0])
    if data is None or data.scalar:
        return None
    starts, ends = ctx.ints(args[1], "Slice starts"), ctx.ints(args[2], "Slice ends")
    if len(args) > 3 and args[3] is not None and ctx.ints(args[3], "Slice axes") not in ([0], [-1]):
        raise ctx.fail("Slice of a shape vector along an axis other than 0")
    step = ctx.ints(args[4], "Slice steps") if len(args) > 4 and args[4] is not None else [1]
    if len(starts) != 1 or len(ends) != 1 or len(step) != 1 or step[0] == 0:
        raise ctx.fail("Slice of a shape vector needs one start, end and non-zero step")
    return Dims(data.items[slice(starts[0], ends[0], step[0])])


@folds("Squeeze", "Unsqueeze", "Reshape", "Identity")
def _reshape_vector(ctx, n, args):
    """A shape value reshaped between a scalar and a one- or more-element vector."""
    data = _dims(args[0])
    if data is None:
        return None
    if n.op_type == "Identity":
        return data
    if n.op_type == "Reshape":
        target = ctx.ints(args[1], "Reshape shape")
        if len(target) > 1:
            return None
        return Dims(data.items, scalar=not target)
    if len(data.items) != 1:
        return Dims(data.items) if n.op_type == "Squeeze" else None
    return Dims(data.items, scalar=n.op_type == "Squeeze")


@folds("ReduceProd", "ReduceSum")
def _reduce(ctx, n, args):
    data = _dims(args[0])
    if data is None:
        return None
    axes = ctx.ints(args[1], f"{n.op_type} axes") if len(args) > 1 and args[1] is not None else attr(n, "axes")
    if axes not in (None, [], [0], [-1]):
        raise ctx.fail(f"{n.op_type} of a shape vector along axis {axes}")
    total = Sym.const(1 if n.op_type == "ReduceProd" else 0)
    for s in data.items:
        total = total * s if n.op_type == "ReduceProd" else total + s
    return Dims((total,), scalar=not attr(n, "keepdims", 1))


@folds("Cast")
def _cast(ctx, n, args):
    from .importer import _np_dtype

    data = _dims(args[0])
    if data is None:
        return None
    dtype = _np_dtype(ctx.onnx, attr(n, "to"), ctx.path, ctx.where)
    if dtype.kind in "iu":
        return data
    if data.scalar:  # an element count used as a float (a mean's divisor): reduced_count
        return data.items[0].as_node(dtype)
    return ops.cast(data.as_node(), dtype)


# -------------------------------------------------------------------- the shape itself
@handles("Shape")
def _shape(ctx, n, args):
    from .handlers_image import PoolIndices

    x = args[0].y if isinstance(args[0], PoolIndices) else args[0]
    if isinstance(x, Dims):
        return Static(np.asarray([] if x.scalar else [len(x.items)], dtype=np.int64))
    rank = len(x.value.shape) if isinstance(x, Static) else ctx.node(x).ndim
    start, end = attr(n, "start", 0), attr(n, "end", rank)
    axes = tuple(range(rank))[slice(start, end)]
    shape = x.value.shape if isinstance(x, Static) else ctx.node(x).shape
    dims = [shape[a] for a in axes]
    if all(d is not None for d in dims):
        return Static(np.asarray(dims, dtype=np.int64))
    return Dims.of_shape(ctx.node(x), axes)


def _target(ctx: Ctx, v: Any, what: str) -> list[int] | Node:
    """A static shape, or the tensor whose run-time shape ``v`` is (its ``like=``)."""
    d = _dims(v)
    if d is not None and not d.is_static:
        like = d.like()
        if like is None:
            raise ctx.fail(f"{what}: a shape computed from run-time sizes that is not a tensor's shape")
        return like
    return ctx.ints(v, what)


@handles("Reshape")
def _reshape(ctx, n, args):
    from .handlers_image import PoolIndices

    if isinstance(args[0], PoolIndices):
        return args[0]  # flat positions, whatever shape they are viewed in
    x = ctx.node(args[0])
    d = _dims(args[1])
    if d is not None and not d.is_static:
        like = d.like()
        if like is not None:
            return ops.reshape_like(x, like)
        target, sizes = _runtime_target(ctx, n, x, d)
        y = ops.reshape(x, tuple(target))
        ctx.sizes.update({(y, a): s.substitute(ctx.sizes) for a, s in enumerate(sizes) if s.value is None})
        return y
    else:
        target = ctx.ints(args[1], "Reshape shape")
    if not attr(n, "allowzero", 0):  # ONNX: 0 copies the input's dim
        target = [x.shape[i] if t == 0 and i < x.ndim else t for i, t in enumerate(target)]
        if any(t is None for t in target):
            raise ctx.fail("Reshape copies an unknown dim (0 in the shape)")
    return ops.reshape(x, tuple(target))


def _runtime_target(ctx: Ctx, n: Any, x: Node, d: Dims) -> tuple[list[int], list[Sym]]:
    """A reshape target holding run-time sizes as a static one with ``-1``: a ``0`` copies
    ``x``'s size, a ``-1`` is worked out symbolically (``x``'s element count over the other
    sizes, with the sizes earlier reshapes made known, ``ctx.sizes``), and then one run-time
    size may be left, which becomes the ``-1``. Also returns the sizes, to remember."""
    items = [Sym.dim(x, i) if s.value == 0 and not attr(n, "allowzero", 0) and i < x.ndim else s
             for i, s in enumerate(d.items)]
    if sum(s.value == -1 for s in items) == 1:
        total, known = Sym.const(1), Sym.const(1)
        for a in range(x.ndim):
            total = total * Sym.dim(x, a)
        for s in items:
            known = known if s.value == -1 else known * s
        rest = total.substitute(ctx.sizes).exact_quotient(known.substitute(ctx.sizes))
        if rest is not None and rest.value is not None:
            items = [rest if s.value == -1 else s for s in items]
    values = [s.value for s in items]
    if values.count(None) != 1 or -1 in values:
        raise ctx.fail("Reshape to a shape with several sizes computed at run time")
    return [-1 if v is None else v for v in values], items


@handles("Expand")
def _expand(ctx, n, args):
    x = ctx.node(args[0])
    target = _target(ctx, args[1], "Expand shape")
    if isinstance(target, Node):
        return ops.broadcast_to(x, target.shape, like=target) if not target.type.is_concrete \
            else ops.broadcast_to(x, target.shape)
    nd = max(len(target), x.ndim)
    xs = (1,) * (nd - x.ndim) + tuple(x.shape)
    ts = (1,) * (nd - len(target)) + tuple(target)
    out = tuple(a if b == 1 else b for a, b in zip(xs, ts))  # ONNX Expand broadcasts both ways
    if any(d is None for d in out):
        raise ctx.fail("Expand to an unknown dim needs the shape of a tensor")
    return ops.broadcast_to(x, out)


@handles("ConstantOfShape")
def _constant_of_shape(ctx, n, args):
    value = attr(n, "value")
    arr = ctx.onnx.numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    if arr.size != 1:
        raise ctx.fail("ConstantOfShape value must hold one element")
    target = _target(ctx, args[0], "ConstantOfShape shape")
    if isinstance(target, Node):
        return ops.full_like(target, float(arr[0]), dtype=arr.dtype)
    if any(d < 0 for d in target):
        raise ctx.fail(f"negative dim in ConstantOfShape {target}")
    if arr.dtype.kind in "iu" and len(target) <= 1 and sum(target) <= 256:  # a shape, or shape arithmetic
        return Static(np.full(target, arr[0], dtype=arr.dtype))
    return apply(ops.Full(tuple(target), float(arr[0]), arr.dtype.name))


@handles("Range")
def _range(ctx, n, args):
    if any(isinstance(a, Dims) and not a.is_static for a in args):
        raise ctx.fail("Range over a run-time size has no graphbp form (graphbp makes no sequence of "
                       "run-time length); export at static shapes")
    start, limit, delta = (ctx.static(a, "Range operand").reshape(()) for a in args)
    count = int(max(np.ceil((limit - start) / delta), 0)) if delta else -1
    if not 0 <= count <= (1 << 24):
        raise ctx.fail(f"Range of {count} elements is refused")
    return Static(np.arange(start, limit, delta, dtype=np.result_type(start, limit, delta)))


@handles("Flatten")
def _flatten(ctx, n, args):
    x = ctx.node(args[0])
    ax = attr(n, "axis", 1) % max(x.ndim, 1) if x.ndim else 0
    head, tail = x.shape[:ax], x.shape[ax:]
    if None in tail:
        raise ctx.fail("Flatten over an unknown dim")
    rest = int(np.prod(tail, dtype=np.int64))
    if None in head:
        if head.count(None) > 1:
            raise ctx.fail("Flatten with several unknown leading dims")
        return ops.reshape(x, (-1, rest))
    return ops.reshape(x, (int(np.prod(head, dtype=np.int64)), rest))


@handles("Split")
def _split(ctx, n, args):
    """Pieces at static sizes are slices; pieces at other tensors' run-time sizes along the
    axis (what graphbp's ``concat_slice`` exports) are ``concat_slice`` of those tensors."""
    x = ctx.node(args[0])
    ax = attr(n, "axis", 0) % max(x.ndim, 1)
    outs = len(n.output)
    if len(args) > 1 and args[1] is not None:
        sizes = _dims(args[1])
        if sizes is None or sizes.scalar:
            raise ctx.fail("Split sizes must be a vector of integers")
    elif attr(n, "split") is not None:
        sizes = Dims.of_array(np.asarray(attr(n, "split"), dtype=np.int64))
    else:
        if x.shape[ax] is None or x.shape[ax] % outs:
            raise ctx.fail("Split into equal pieces needs a known size divisible by the number of outputs")
        sizes = Dims.of_array(np.full(outs, x.shape[ax] // outs, dtype=np.int64))
    if len(sizes.items) != outs:
        raise ctx.fail(f"Split has {outs} outputs and {len(sizes.items)} sizes")
    if sizes.is_static:
        pieces, start = [], 0
        for size in sizes.values():
            pieces.append(x[(slice(None),) * ax + (slice(start, start + size),)])
            start += size
        return pieces
    parts = []
    for d in sizes.items:
        ref = Dims((d,)).single_dim()
        if ref is not None and ref[0].ndim == x.ndim and ref[1] == ax:
            parts.append(ref[0])
        elif d.value is not None and d.value >= 0 and all(s is not None for k, s in enumerate(x.shape) if k != ax):
            shape = tuple(d.value if k == ax else s for k, s in enumerate(x.shape))  # a stand-in of that size
            parts.append(ops.constant(np.zeros(shape, x.dtype)))
        else:
            raise ctx.fail("Split at run-time sizes other than other tensors' sizes along the axis")
    return [apply(ops.ConcatSlice(ax, k), x, *parts) for k in range(outs)]
