"""ONNX import of the image ops: convolutions, pooling, padding, batch normalisation.

Registered into :data:`graphbp.onnx.handlers.HANDLERS` (imported by the importer). The
gradient ops graphbp exports come back as graphbp's own: ``MaxPool``'s indices feeding a
scatter-add or a gather become ``max_pool2d_grad`` / ``max_pool2d_gather``, and a ``Pad``
after a transposed convolution becomes part of its crop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import ops
from ..graph.node import Node
from ..ops import conv, pool
from ..ops.base import apply
from .handlers import Ctx, attr, handles


@dataclasses.dataclass(frozen=True, eq=False)
class PoolIndices:
    """``MaxPool``'s second output: where each window's first maximum of ``x`` sits."""

    x: Node
    y: Node
    op: pool.MaxPool2D


def _no_auto_pad(ctx: Ctx, n: Any) -> None:
    mode = attr(n, "auto_pad", "NOTSET")
    if mode not in ("NOTSET", "VALID"):
        raise ctx.fail(f"auto_pad={mode} is not supported; export with explicit pads")


def _pads(ctx: Ctx, n: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    p = attr(n, "pads", [0, 0, 0, 0])
    if len(p) != 4:
        raise ctx.fail(f"only 2-D (NCHW) ops are supported; pads {p}")
    return (p[0], p[2]), (p[1], p[3])


def _pair(ctx: Ctx, n: Any, name: str, default) -> tuple[int, int]:
    v = attr(n, name, default)
    if len(v) != 2:
        raise ctx.fail(f"only 2-D (NCHW) ops are supported; {name} {v}")
    return int(v[0]), int(v[1])


def _bias(ctx: Ctx, y: Node, args: list[Any]) -> Node:
    if len(args) > 2 and args[2] is not None:
        return y + ops.reshape(ctx.node(args[2]), (1, -1, 1, 1))
    return y


@dataclasses.dataclass(frozen=True, eq=False)
class BatchContraction:
    """A ``Conv`` of ``x`` and ``g`` both transposed to channels-first, ``(C, N, H, W)`` and
    ``(O, N, Ho, Wo)``, so it sums over the batch: a convolution's weight gradient (the form
    graphbp exports ``conv2d_weight_grad`` in). With an unknown batch it is not a ``conv2d``
    (channels must be known); the ``Slice`` to the kernel size that follows makes it
    ``conv2d_weight_grad``, stride and dilation exchanged."""

    x: Node
    g: Node
    op: conv.Conv2D


def _swapped(v: Any) -> Node | None:
    """``a`` when ``v`` is ``transpose(a, (1, 0, 2, 3))``."""
    if isinstance(v, Node) and isinstance(v.op, ops.Transpose) and tuple(v.op.axes) == (1, 0, 2, 3):
        return v.inputs[0]
    return None


@handles("Conv")
def _conv(ctx, n, args):
    _no_auto_pad(ctx, n)
    x, w = ctx.node(args[0]), ctx.node(args[1])
    op = conv.Conv2D(_pair(ctx, n, "strides", [1, 1]), _pads(ctx, n), _pair(ctx, n, "dilations", [1, 1]),
                     attr(n, "group", 1))
    if x.ndim == 4 and x.shape[1] is None:
        a, g = _swapped(x), _swapped(w)
        if a is None or g is None or op.groups != 1 or (len(args) > 2 and args[2] is not None):
            raise ctx.fail("Conv over an unknown number of channels is supported only as a weight gradient "
                           "(both operands transposed to channels-first, no groups, no bias)")
        return BatchContraction(a, g, op)
    return _bias(ctx, apply(op, x, w), args)


def weight_grad(ctx: Ctx, c: BatchContraction, starts: list[int], ends: list[int], axes: list[int],
                steps: list[int]) -> Node:
    """``Slice(Conv(x^T, g^T))[:, :, :kh, :kw]``: ``conv2d_weight_grad`` of kernel ``(kh, kw)``,
    in the ``(C, O, kh, kw)`` layout the ``Conv`` gave."""
    if len(ends) != 2 or starts != [0, 0] or [a % 4 for a in axes] != [2, 3] or any(s != 1 for s in steps) or min(ends) < 1:
        raise ctx.fail("a weight-gradient Conv must be cut to its kernel size by Slice [:, :, :kh, :kw]")
    op = conv.Conv2DWeightGrad(stride=c.op.dilation, padding=c.op.padding, dilation=c.op.stride, groups=1,
                               kernel=(ends[0], ends[1]))
    return ops.transpose(apply(op, c.x, c.g), (1, 0, 2, 3))


@handles("ConvTranspose")
def _conv_transpose(ctx, n, args):
    _no_auto_pad(ctx, n)
    if attr(n, "output_shape") is not None:
        raise ctx.fail("ConvTranspose with output_shape is not supported; export with pads")
    (top, bottom), (left, right) = _pads(ctx, n)
    extra = _pair(ctx, n, "output_padding", [0, 0])
    crop = ((top, bottom - extra[0]), (left, right - extra[1]))
    op = conv.ConvTranspose2D(_pair(ctx, n, "strides", [1, 1]), crop, _pair(ctx, n, "dilations", [1, 1]),
                              attr(n, "group", 1))
    return _bias(ctx, apply(op, ctx.node(args[0]), ctx.node(args[1])), args)


@handles("Pad")
def _pad(ctx, n, args):
    """Zero padding: folded into a transposed convolution's crop when it follows one, else
    the zeros-with-a-slice op (``embed_slice``; an axis of unknown size must not be padded,
    its size is then the input's)."""
    x = ctx.node(args[0])
    if attr(n, "mode", "constant") != "constant" or (len(args) > 2 and args[2] is not None
                                                     and float(ctx.static(args[2], "Pad value").reshape(())) != 0):
        raise ctx.fail("only zero constant padding is supported")
    if len(args) > 3 and args[3] is not None:
        raise ctx.fail("Pad with axes is not supported")
    p = ctx.ints(args[1], "Pad pads")
    nd = x.ndim
    lo, hi = p[:nd], p[nd:]
    if any(v < 0 for v in p):
        raise ctx.fail("negative pads (cropping) are not supported")
    if isinstance(x.op, conv.ConvTranspose2D) and not any(lo[:2] + hi[:2]):
        (t, b), (left, r) = x.op.padding
        crop = ((t - lo[2], b - hi[2]), (left - lo[3], r - hi[3]))
        return apply(dataclasses.replace(x.op, padding=crop), *x.inputs)
    if any(d is None and (a or b) for d, a, b in zip(x.shape, lo, hi)):
        raise ctx.fail("Pad of an axis of unknown size is not supported")
    shape = tuple(None if d is None else d + a + b for d, a, b in zip(x.shape, lo, hi))
    index = tuple((None, None, None) if d is None else (a, a + d, None) for a, d in zip(lo, x.shape))
    return apply(ops.indexing.EmbedSlice(index, shape), x)


def _pool_op(ctx: Ctx, n: Any, cls):
    _no_auto_pad(ctx, n)
    if attr(n, "ceil_mode", 0):
        raise ctx.fail("ceil_mode=1 is not supported (graphbp pools in floor mode)")
    if attr(n, "dilations", [1, 1]) != [1, 1]:
        raise ctx.fail("dilated pooling is not supported")
    (t, b), (left, r) = _pads(ctx, n)
    if t != b or left != r:
        raise ctx.fail(f"asymmetric pool padding {attr(n, 'pads')} is not supported")
    return cls(_pair(ctx, n, "kernel_shape", None), _pair(ctx, n, "strides", [1, 1]), (t, left))


@handles("MaxPool")
def _max_pool(ctx, n, args):
    op = _pool_op(ctx, n, pool.MaxPool2D)
    if attr(n, "storage_order", 0):
        raise ctx.fail("MaxPool storage_order=1 is not supported")
    x = ctx.node(args[0])
    y = apply(op, x)
    return [y, PoolIndices(x, y, op)]


@handles("AveragePool")
def _avg_pool(ctx, n, args):
    op = _pool_op(ctx, n, pool.AvgPool2D)
    if not attr(n, "count_include_pad", 0) and any(op.padding):
        raise ctx.fail("AveragePool with count_include_pad=0 and padding is not supported")
    return apply(op, ctx.node(args[0]))


@handles("GlobalAveragePool")
def _global_avg_pool(ctx, n, args):
    x = ctx.node(args[0])
    return ops.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@handles("BatchNormalization")
def _batch_norm(ctx, n, args):
    """The inference form: running statistics are non-trainable parameters."""
    if attr(n, "training_mode", 0) or len([o for o in n.output if o]) > 1:
        raise ctx.fail("only the inference form of BatchNormalization is supported")
    x, gamma, beta = ctx.node(args[0]), ctx.node(args[1]), ctx.node(args[2])
    mean, var = ctx.node(args[3], trainable=False), ctx.node(args[4], trainable=False)
    return ops.batch_norm(x, gamma, beta, mean, var, eps=attr(n, "epsilon", 1e-5))





def scatter_into_pool(ctx: Ctx, data: Any, idx: PoolIndices, upd: Node, reduction: str) -> Node:
    """``g`` scattered to each window's first maximum: ``max_pool2d_grad``, flattened."""
    if reduction != "add":
        raise ctx.fail("ScatterElements with MaxPool indices needs reduction='add'")
    g = ops.reshape_like(upd, idx.y)
    grad = apply(pool.MaxPool2DGrad(idx.op.kernel, idx.op.stride, idx.op.padding), idx.x, idx.y, g)
    return ops.reshape(grad, (-1,))


def gather_at_pool(ctx: Ctx, data: Node, idx: PoolIndices) -> Node:
    """Values read at each window's first maximum: ``max_pool2d_gather``, flattened."""
    v = ops.reshape_like(data, idx.x)
    picked = apply(pool.MaxPool2DGather(idx.op.kernel, idx.op.stride, idx.op.padding), idx.x, v)
    return ops.reshape(picked, (-1,))


