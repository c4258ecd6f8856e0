"""The ONNX backend table: for each graphbp op class, the ONNX nodes that compute it.

This is a backend table like the executor's lowering (facts about an op live on the op;
how a particular backend spells it lives with that backend). Each emitter gets the
builder, the graphbp node and the ONNX names of its operands, and returns the name of its
result, with NumPy semantics made explicit: ONNX arithmetic wants operands of one dtype,
so operands are cast to the dtype graphbp's shape rule inferred. Ops without a direct ONNX
op are written in ONNX primitives here; :data:`NOT_EXPORTED` lists the ops that cannot be
exported, with the reason, and a test checks every op class is in one of the two tables.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import ops
from ..graph.node import Node
from ..ops.base import apply
from ..errors import GraphError
from ..ops import activations as act, collective, control, conv, elementwise as ew, fused, indexing as ix, nn, pool, reduce as rd
from ..ops import shape as sh
from .builder import INT64_MAX, INT64_MIN, OnnxBuilder, tensor_dtype

Emitter = Callable[[OnnxBuilder, Node, list[str]], str]
EMITTERS: dict[type, Emitter] = {}

NOT_EXPORTED: dict[type, str] = {
    nn.DropoutMask: "draws its mask from NumPy's generator, which no ONNX runtime reproduces; "
                    "export the evaluation graph (built without dropout)",
}
"""Op classes with no ONNX export, and why (listed in docs/interop.md)."""


def emits(*classes: type) -> Callable[[Emitter], Emitter]:
    def register(fn: Emitter) -> Emitter:
        for c in classes:
            EMITTERS[c] = fn
        return fn
    return register


def _as(b: OnnxBuilder, node: Node, xs: list[str], dtype) -> list[str]:
    """Operands cast to ``dtype`` (NumPy promotion made explicit for ONNX)."""
    return [b.cast(x, i.dtype, dtype) for x, i in zip(xs, node.inputs)]


# ------------------------------------------------------------------ elementwise arithmetic
_BINARY = {ew.Add: "Add", ew.Subtract: "Sub", ew.Multiply: "Mul", ew.Divide: "Div", ew.Power: "Pow",
           ew.Maximum: "Max", ew.Minimum: "Min"}
_UNARY = {ew.Negative: "Neg", ew.Exp: "Exp", ew.Log: "Log", ew.Sqrt: "Sqrt", ew.Abs: "Abs",
          ew.Sign: "Sign", ew.Reciprocal: "Reciprocal", ew.Sin: "Sin", ew.Cos: "Cos", ew.Tanh: "Tanh",
          act.Sigmoid: "Sigmoid"}
_COMPARE = {ew.Greater: "Greater", ew.GreaterEqual: "GreaterOrEqual", ew.Less: "Less",
            ew.LessEqual: "LessOrEqual", ew.Equal: "Equal"}


@emits(*_BINARY)
def _binary(b, node, xs):
    return b.op(_BINARY[type(node.op)], _as(b, node, xs, node.dtype))


@emits(*_UNARY)
def _unary(b, node, xs):
    return b.op(_UNARY[type(node.op)], _as(b, node, xs, node.dtype))


@emits(*_COMPARE, ew.NotEqual)
def _compare(b, node, xs):
    common = np.result_type(*(i.dtype for i in node.inputs))
    args = _as(b, node, xs, common)
    if isinstance(node.op, ew.NotEqual):
        return b.op("Not", [b.op("Equal", args)])
    return b.op(_COMPARE[type(node.op)], args)


@emits(ew.Where)
def _where(b, node, xs):
    c, *vals = xs
    return b.op("Where", [c, *(b.cast(v, i.dtype, node.dtype) for v, i in zip(vals, node.inputs[1:]))])


@emits(ew.Square)
def _square(b, node, xs):
    (x,) = _as(b, node, xs, node.dtype)
    return b.op("Mul", [x, x])


@emits(ew.Log1p)
def _log1p(b, node, xs):
    (x,) = _as(b, node, xs, node.dtype)
    return b.op("Log", [b.op("Add", [x, b.const(1, node.dtype)])])


@emits(ew.Cast)
def _cast(b, node, xs):
    return b.op("Cast", xs, to=tensor_dtype(b.helper, node.dtype))


@emits(ew.Clip)
def _clip(b, node, xs):
    (x,) = _as(b, node, xs, node.dtype)
    lo = "" if node.op.lo is None else b.const(node.op.lo, node.dtype)
    hi = "" if node.op.hi is None else b.const(node.op.hi, node.dtype)
    return b.op("Clip", [x, lo, hi] if hi else [x, lo])


# Activations: the named ONNX op where ONNX Runtime implements it for the dtype (float32 and
# float16); written with primitives otherwise (it has no float64 kernels for these), so every
# export runs on the reference runtime with graphbp's numbers.
def _native_or_composite(b: OnnxBuilder, node: Node, xs: list[str], op_type: str, formula, **attrs) -> str:
    xs = _as(b, node, xs, node.dtype)
    if node.dtype in (np.float32, np.float16):
        return b.op(op_type, xs, **attrs)
    return _composite(b, node, formula, xs)


@emits(act.Relu)
def _relu(b, node, xs):
    return _native_or_composite(b, node, xs, "Relu", lambda x: ops.maximum(x, 0))


@emits(act.LeakyRelu)
def _leaky_relu(b, node, xs):
    a = float(node.op.alpha)
    return _native_or_composite(b, node, xs, "LeakyRelu", lambda x: ops.where(x > 0, x, x * a), alpha=a)


@emits(act.Elu)
def _elu(b, node, xs):
    a = float(node.op.alpha)
    return _native_or_composite(b, node, xs, "Elu", lambda x: ops.where(x > 0, x, (ops.exp(x) - 1) * a), alpha=a)


@emits(act.Softplus)
def _softplus(b, node, xs):
    return _native_or_composite(b, node, xs, "Softplus", lambda x: ops.relu(x) + ops.log1p(ops.exp(-ops.abs(x))))


@emits(act.Erf)
def _erf(b, node, xs):
    return _native_or_composite(b, node, xs, "Erf", _erf_formula)


def _erf_formula(x: Node) -> Node:
    """Cody's three-interval rational erf (graphbp's kernel) in primitives, for float64."""
    def poly(z, num_coef, den_coef, lead):
        num, den = z * lead, z
        for c_num, c_den in zip(num_coef[:-1], den_coef[:-1]):
            num, den = (num + c_num) * z, (den + c_den) * z
        return (num + num_coef[-1]) / (den + den_coef[-1])

    y = ops.abs(x)
    small = x * poly(y * y, act._A[:4], act._B, act._A[4])
    mid = ops.exp(-(y * y)) * poly(y, act._C[:8], act._D, act._C[8])
    yb = ops.minimum(y, 30.0)
    z = 1.0 / (yb * yb)
    r = z * poly(z, act._P[:5], act._Q, act._P[5])
    big = ops.exp(-(yb * yb)) * (act._ONE_OVER_SQRT_PI - r) / yb
    tail = 1.0 - ops.where(y <= 4.0, mid, big)
    return ops.where(y <= 0.46875, small, ops.where(x < 0, -tail, tail))


def _composite(b: OnnxBuilder, node: Node, formula, xs: list[str], *, cast: bool = True) -> str:
    """Emit ``formula`` (graphbp builders over placeholder inputs) through this table; the
    placeholders have the node's dtype (``xs`` already cast) or, with ``cast=False``, the
    operands' own dtypes."""
    from .export import emit_subgraph

    holes = [ops.input(f"_{k}", i.shape, dtype=node.dtype if cast else i.dtype) for k, i in enumerate(node.inputs)]
    return emit_subgraph(b, formula(*holes), dict(zip(holes, xs)))


# ------------------------------------------------------------------- ops made by passes
@emits(fused.AddN)
def _add_n(b, node, xs):
    return b.op("Sum", _as(b, node, xs, node.dtype)) if node.dtype.kind == "f" else \
        _composite(b, node, lambda *ts: _sum_chain(ts), _as(b, node, xs, node.dtype))


def _sum_chain(terms) -> Node:
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


@emits(fused.MatMulBiasAct, fused.ConvBiasAct)
def _product_bias_act(b, node, xs):
    """Back to its parts (MatMul or Conv, Add, the activation): ONNX runtimes fuse them
    themselves."""
    act_op = node.op.activation_op
    product = ops.matmul if isinstance(node.op, fused.MatMulBiasAct) else (lambda x, w: apply(node.op.conv, x, w))

    def parts(x, w, bias):
        z = product(x, w) + bias
        return z if act_op is None else apply(act_op, z)
    return _composite(b, node, parts, xs, cast=False)


# ---------------------------------------------------------------------------- linalg
@emits(ops.MatMul)
def _matmul(b, node, xs):
    return b.op("MatMul", _as(b, node, xs, node.dtype))


# ------------------------------------------------------------------------ reductions
_REDUCE = {rd.Sum: "ReduceSum", rd.Mean: "ReduceMean", rd.Max: "ReduceMax", rd.Min: "ReduceMin",
           rd.Prod: "ReduceProd"}


@emits(*_REDUCE)
def _reduce(b, node, xs):
    (x,) = _as(b, node, xs, node.dtype)
    if not node.op.axis:
        return b.op("Identity", [x])
    return b.op(_REDUCE[type(node.op)], [x, b.ints(node.op.axis)], keepdims=int(node.op.keepdims))


@emits(rd.LogSumExp)
def _logsumexp(b, node, xs):
    """``m + log(sum(exp(x - m)))`` with ``m`` the max (0 where it is infinite): stable."""
    (x,) = _as(b, node, xs, node.dtype)
    axes = b.ints(node.op.axis)
    m = b.op("ReduceMax", [x, axes], keepdims=1)
    zero = b.const(0, node.dtype)
    m = b.op("Where", [b.op("IsInf", [m]), zero, m])
    s = b.op("ReduceSum", [b.op("Exp", [b.op("Sub", [x, m])]), axes], keepdims=1)
    out = b.op("Add", [b.op("Log", [s]), m])
    return out if node.op.keepdims else b.squeeze(out, node.op.axis)


@emits(rd.ReducedCount)
def _reduced_count(b, node, xs):
    (x,) = xs
    dims = [b.dim(x, a % node.inputs[0].ndim) for a in node.op.axis]
    n = b.op("ReduceProd", [b.op("Concat", dims, axis=0) if len(dims) > 1 else dims[0]], keepdims=0) if dims \
        else b.const(1, np.int64)
    return b.op("Cast", [n], to=tensor_dtype(b.helper, node.dtype))


# ------------------------------------------------------------------- shape and creation
@emits(sh.Reshape)
def _reshape(b, node, xs):
    shape = b.shape(xs[1]) if len(xs) == 2 else b.ints(node.op.shape)
    return b.op("Reshape", [xs[0], shape], allowzero=1 if 0 in node.op.shape else None)


@emits(sh.BroadcastTo)
def _broadcast_to(b, node, xs):
    shape = b.shape(xs[1]) if len(xs) == 2 else b.ints(node.op.shape)
    return b.op("Expand", [xs[0], shape])


@emits(sh.Transpose)
def _transpose(b, node, xs):
    return b.op("Transpose", xs, perm=list(node.op.axes))


@emits(sh.ExpandDims)
def _expand_dims(b, node, xs):
    return b.unsqueeze(xs[0], [node.op.axis % node.ndim])


@emits(sh.Squeeze)
def _squeeze(b, node, xs):
    nd = node.inputs[0].ndim
    return b.op("Squeeze", [xs[0], b.ints(sorted(a % nd for a in node.op.axis))])


@emits(ops.Full)
def _full(b, node, xs):
    shape = b.shape(xs[0]) if xs else b.ints(node.op.shape)
    return b.fill(shape, node.op.value, node.dtype)


# --------------------------------------------------------------------------- indexing
def _slice(b: OnnxBuilder, x: str, index, shape=None) -> str:
    """NumPy basic indexing with ONNX Slice, Squeeze (int indices) and Unsqueeze (None).
    Where ``shape`` gives an axis's size, its slice is written normalised (ONNX clamps a
    negative step's start into the axis where NumPy gives an empty slice)."""
    starts, ends, axes, steps, squeeze, new = [], [], [], [], [], []
    axis = out_axis = 0
    for it in index:
        if it is None:
            new.append(out_axis)
            out_axis += 1
            continue
        if isinstance(it, tuple):
            start, stop, step = it
            if shape is not None and shape[axis] is not None:
                picked = range(*slice(*it).indices(shape[axis]))
                start, stop, step = (picked.start, picked.stop, picked.step) if picked else (0, 0, 1)
                stop = INT64_MIN if stop < 0 else stop
            step = 1 if step is None else step
            if start is None:
                start = 0 if step > 0 else INT64_MAX
            if stop is None:
                stop = INT64_MAX if step > 0 else INT64_MIN
            if (start, stop, step) != (0, INT64_MAX, 1):
                starts.append(start), ends.append(stop), axes.append(axis), steps.append(step)
            out_axis += 1
        else:
            starts.append(it), ends.append(it + 1 if it != -1 else INT64_MAX), axes.append(axis), steps.append(1)
            squeeze.append(axis)
        axis += 1
    y = b.op("Slice", [x, b.ints(starts), b.ints(ends), b.ints(axes), b.ints(steps)]) if axes else x
    y = b.squeeze(y, squeeze)
    return b.unsqueeze(y, new) if new else (y if y != x else b.op("Identity", [x]))


@emits(ix.GetItem)
def _getitem(b, node, xs):
    return _slice(b, xs[0], node.op.index, node.inputs[0].shape)


@emits(ix.Concatenate)
def _concatenate(b, node, xs):
    return b.op("Concat", _as(b, node, xs, node.dtype), axis=node.op.axis % node.ndim)


@emits(ix.ConcatSlice)
def _concat_slice(b, node, xs):
    """Piece ``index`` of a ``Split`` of ``g`` at the parts' run-time sizes along the axis."""
    g, *parts = xs
    ax = node.op.axis % node.ndim
    sizes = b.op("Concat", [b.dim(p, ax) for p in parts], axis=0)
    return b.op("Split", [g, sizes], outputs=len(parts), axis=ax)[node.op.index] if len(parts) > 1 \
        else b.op("Identity", [g])


def _index(b: OnnxBuilder, node: Node, xs: list[str], k: int) -> str:
    return b.cast(xs[k], node.inputs[k].dtype, np.int64)


@emits(ix.Take)
def _take(b, node, xs):
    return b.op("Gather", [xs[0], _index(b, node, xs, 1)], axis=node.op.axis)


@emits(ix.ScatterAdd)
def _scatter_add(b, node, xs):
    """``np.add.at`` along ``axis``: ScatterND with ``reduction="add"`` on the axis moved first."""
    ax, nd = node.op.axis, node.ndim
    idx_nd = node.inputs[1].ndim
    shape = b.shape(xs[2]) if len(xs) == 3 else b.ints(node.op.shape)
    perm = [ax] + [i for i in range(nd) if i != ax]
    zeros = b.fill(shape, 0, node.dtype)
    data = b.op("Transpose", [zeros], perm=perm)
    idx = _index(b, node, xs, 1)
    size = b.dim(xs[2] if len(xs) == 3 else zeros, ax)
    idx = b.op("Where", [b.op("Less", [idx, b.const(0, np.int64)]), b.op("Add", [idx, size]), idx])
    g_perm = list(range(ax, ax + idx_nd)) + [i for i in range(node.inputs[0].ndim) if not ax <= i < ax + idx_nd]
    upd = b.op("Transpose", [xs[0]], perm=g_perm)
    out = b.op("ScatterND", [data, b.unsqueeze(idx, [idx_nd]), upd], reduction="add")
    return b.op("Transpose", [out], perm=list(np.argsort(perm)))


@emits(ix.OneHot)
def _one_hot(b, node, xs):
    """``labels[..., None] == arange(depth)``: out-of-range labels give zero rows, as graphbp's."""
    ax = node.op.axis % node.ndim
    labels = b.unsqueeze(_index(b, node, xs, 0), [ax])
    grid = np.arange(node.op.depth, dtype=np.int64).reshape([-1] + [1] * (node.ndim - 1 - ax))
    return b.op("Cast", [b.op("Equal", [labels, b.const(grid)])], to=tensor_dtype(b.helper, node.dtype))


# --------------------------------------------------------------------------- nn
@emits(nn.Softmax, nn.LogSoftmax)
def _softmax(b, node, xs):
    name = "Softmax" if isinstance(node.op, nn.Softmax) else "LogSoftmax"
    return b.op(name, _as(b, node, xs, node.dtype), axis=node.op.axis)


@emits(nn.SoftmaxCrossEntropy)
def _softmax_ce(b, node, xs):
    x = b.cast(xs[0], node.inputs[0].dtype, node.dtype)
    ax = node.op.axis
    lsm = b.op("LogSoftmax", [x], axis=ax)
    labels = node.inputs[1]
    if labels.dtype.kind in "iu":
        picked = b.op("GatherElements", [lsm, b.unsqueeze(_index(b, node, xs, 1), [ax])], axis=ax)
        return b.op("Neg", [b.squeeze(picked, [ax])])
    p = b.cast(xs[1], labels.dtype, node.dtype)
    return b.op("Neg", [b.op("ReduceSum", [b.op("Mul", [p, lsm]), b.ints([ax])], keepdims=0)])


@emits(nn.SoftmaxCrossEntropyProbs)
def _softmax_ce_probs(b, node, xs):
    """The loss as ``softmax_cross_entropy`` writes it, and ``exp`` of the same log-softmax."""
    dt = node.type.items[0].dtype
    x = b.cast(xs[0], node.inputs[0].dtype, dt)
    ax = node.op.axis
    lsm = b.op("LogSoftmax", [x], axis=ax)
    picked = b.op("GatherElements", [lsm, b.unsqueeze(_index(b, node, xs, 1), [ax])], axis=ax)
    return [b.op("Neg", [b.squeeze(picked, [ax])]), b.op("Exp", [lsm])]


@emits(nn.SigmoidBinaryCrossEntropy)
def _sigmoid_bce(b, node, xs):
    """``max(z, 0) - z t + log1p(exp(-|z|))``, the stable form graphbp computes."""
    z, t = _as(b, node, xs, node.dtype)
    soft = b.op("Log", [b.op("Add", [b.const(1, node.dtype), b.op("Exp", [b.op("Neg", [b.op("Abs", [z])])])])])
    return b.op("Add", [b.op("Sub", [b.op("Relu", [z]), b.op("Mul", [z, t])]), soft])


@emits(collective.AllreduceMean, collective.AllreduceStart, collective.AllreduceWait)
def _allreduce_mean(b, node, xs):
    """The one-process group's mean is a copy; ONNX has no collectives across processes.
    (A wait's second operand, the start's send buffer, only orders the pair.)"""
    if node.op.group != "self":
        raise GraphError(f"export_onnx: {node.op.name} over group {node.op.group!r} cannot be exported: "
                         f"ONNX has no collectives; export the single-process program\n  node: {node.describe()}")
    return b.op("Identity", xs[:1])


# --------------------------------------------------------------------- convolution, pooling
def _onnx_pads(pads) -> list[int]:
    """graphbp's ``((top, bottom), (left, right))`` as ONNX's ``[top, left, bottom, right]``."""
    (top, bottom), (left, right) = pads
    return [top, left, bottom, right]


def _crop_then_pad(b: OnnxBuilder, x: str, pads) -> tuple[str, list[int]]:
    """Negative padding (a convolution that is the adjoint of a cropping transposed one)
    slices the input first; what is left are ONNX's non-negative pads."""
    flat = _onnx_pads(pads)
    top, left, bottom, right = (max(-p, 0) for p in flat)
    if top or left or bottom or right:
        ends = [-bottom if bottom else INT64_MAX, -right if right else INT64_MAX]
        x = b.op("Slice", [x, b.ints([top, left]), b.ints(ends), b.ints([2, 3])])
    return x, [max(p, 0) for p in flat]


@emits(conv.Conv2D)
def _conv2d(b, node, xs):
    x, w = _as(b, node, xs, node.dtype)
    op = node.op
    x, pads = _crop_then_pad(b, x, op.padding)
    return b.op("Conv", [x, w], strides=list(op.stride), pads=pads, dilations=list(op.dilation), group=op.groups)


@emits(conv.ConvTranspose2D)
def _conv_transpose2d(b, node, xs):
    """ONNX pads crop the full output; graphbp's negative crops (rows the adjoint adds as
    zeros) become a ``Pad`` after it."""
    x, w = _as(b, node, xs, node.dtype)
    op = node.op
    crop = _onnx_pads(op.padding)
    y = b.op("ConvTranspose", [x, w], strides=list(op.stride), pads=[max(p, 0) for p in crop],
             dilations=list(op.dilation), group=op.groups)
    extend = [max(-p, 0) for p in crop]
    if any(extend):
        top, left, bottom, right = extend
        y = b.op("Pad", [y, b.ints([0, 0, top, left, 0, 0, bottom, right])])
    return y


@emits(conv.Conv2DWeightGrad)
def _conv2d_weight_grad(b, node, xs):
    """``dw[o, c] = sum_n x[n, c] * g[n, o]`` as a convolution of ``x`` with batch and channels
    swapped, ``g`` as the kernel, stride and dilation exchanged; one per group."""
    x, g = _as(b, node, xs, node.dtype)
    op = node.op
    x, pads = _crop_then_pad(b, x, op.padding)
    cin, cout = node.inputs[0].shape[1], node.inputs[1].shape[1]
    cg, og = cin // op.groups, cout // op.groups
    kh, kw = op.kernel
    parts = []
    for k in range(op.groups):
        xk = b.op("Slice", [x, b.ints([k * cg]), b.ints([(k + 1) * cg]), b.ints([1])]) if op.groups > 1 else x
        gk = b.op("Slice", [g, b.ints([k * og]), b.ints([(k + 1) * og]), b.ints([1])]) if op.groups > 1 else g
        full = b.op("Conv", [b.op("Transpose", [xk], perm=[1, 0, 2, 3]), b.op("Transpose", [gk], perm=[1, 0, 2, 3])],
                    strides=list(op.dilation), dilations=list(op.stride), pads=pads)
        cut = b.op("Slice", [full, b.ints([0, 0]), b.ints([kh, kw]), b.ints([2, 3])])
        parts.append(b.op("Transpose", [cut], perm=[1, 0, 2, 3]))
    return parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=0)


def _pool_attrs(op) -> dict:
    ph, pw = op.padding
    return dict(kernel_shape=list(op.kernel), strides=list(op.stride), pads=[ph, pw, ph, pw])


@emits(pool.MaxPool2D)
def _max_pool2d(b, node, xs):
    return b.op("MaxPool", xs, **_pool_attrs(node.op))


def _argmax_positions(b: OnnxBuilder, node: Node, x: str) -> str:
    """Flat positions (over all of ``x``) of each window's first maximum: ``MaxPool``'s indices."""
    _, idx = b.op("MaxPool", [x], outputs=2, **_pool_attrs(node.op))
    return b.op("Reshape", [idx, b.ints([-1])])


@emits(pool.MaxPool2DGrad)
def _max_pool2d_grad(b, node, xs):
    """``g`` added at each window's first maximum: a scatter-add into zeros of ``x``'s size."""
    x, _, g = xs
    g = b.cast(g, node.inputs[2].dtype, node.dtype)
    shape = b.shape(x)
    zeros = b.fill(b.op("ReduceProd", [shape], keepdims=1), 0, node.dtype)
    flat = b.op("ScatterElements", [zeros, _argmax_positions(b, node, x), b.op("Reshape", [g, b.ints([-1])])],
                axis=0, reduction="add")
    return b.op("Reshape", [flat, shape])


@emits(pool.MaxPool2DGather)
def _max_pool2d_gather(b, node, xs):
    x, v = xs
    pos = _argmax_positions(b, node, x)
    picked = b.op("GatherElements", [b.op("Reshape", [v, b.ints([-1])]), pos], axis=0)
    return b.op("Reshape", [picked, b.shape(b.op("MaxPool", [x], **_pool_attrs(node.op)))])


@emits(pool.AvgPool2D)
def _avg_pool2d(b, node, xs):
    return b.op("AveragePool", xs, count_include_pad=1, **_pool_attrs(node.op))


@emits(pool.AvgPool2DGrad)
def _avg_pool2d_grad(b, node, xs):
    """``g / (kH kW)`` spread over each window: a transposed convolution with a constant
    kernel on ``(N * C, 1, Ho, Wo)``, cropped by the padding, with zeros for the trailing
    rows floor mode never read."""
    op = node.op
    (g,) = xs
    kh, kw = op.kernel
    ph, pw = op.padding
    ho, wo = node.inputs[0].shape[2:]
    flat = b.op("Reshape", [g, b.ints([-1, 1, ho, wo])])
    kernel = b.const(np.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=node.dtype))
    y = b.op("ConvTranspose", [flat, kernel], strides=list(op.stride), pads=[ph, pw, ph, pw])
    got = ((ho - 1) * op.stride[0] + kh - 2 * ph, (wo - 1) * op.stride[1] + kw - 2 * pw)
    extra = [op.in_hw[0] - got[0], op.in_hw[1] - got[1]]
    if any(extra):
        y = b.op("Pad", [y, b.ints([0, 0, 0, 0, 0, 0, extra[0], extra[1]])])
    nc = b.op("Shape", [g], start=0, end=2)
    return b.op("Reshape", [y, b.op("Concat", [nc, b.ints(op.in_hw)], axis=0)])


# --------------------------------------------------------------------------- control flow
@emits(control.TupleGet)
def _tuple_get(b, node, xs):
    return xs[0][node.op.index]  # a multi-output node's ONNX names are a list


@emits(control.Cond)
def _cond(b, node, xs):
    """ONNX ``If``: each branch body becomes a nested graph that reads the operands by name."""
    from .export import emit_nodes, value_info

    pred, *args = xs
    branches = []
    for body in node.op.subgraphs():
        sub = b.child()
        names: dict[Node, str] = dict(zip(body.inputs, args))
        emit_nodes(sub, body.nodes(), names)
        outs = []
        for o, t in zip(body.outputs, node.type.items):
            final = sub.fresh("branch_out")
            sub.op("Identity", [names[o]], out=final)
            outs.append(value_info(b.onnx, final, t))
        branches.append(b.helper.make_graph(sub.nodes, sub.fresh("branch"), [], outs))
    n_out = len(node.type.items)
    out = b.op("If", [pred], outputs=n_out, then_branch=branches[0], else_branch=branches[1])
    return [out] if n_out == 1 else out


from . import emit_loop, emit_slice  # noqa: E402,F401 - register gb.scan's (ONNX Loop) and embed_slice's emitters
