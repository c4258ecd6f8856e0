"""The ONNX import table: for each ONNX op type, the graphbp nodes that compute it.

Every handler builds nodes through graphbp's public builders, so imported models get the
same shape checks, VJP rules and diagrams as hand-built ones. A handler that meets an input
it cannot express (a data-dependent shape, an unsupported attribute) raises
:class:`GraphFormatError` naming the node, never another exception.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ops
from ..errors import GraphFormatError
from ..graph.node import Node
from ..io.container import Limits
from .symbolic import Dims, Sym

PARAM_DOC = "graphbp param"
STATE_DOC = "graphbp state"  # a non-trainable parameter (optimiser state, running statistics)
CONST_DOC = "graphbp constant"

MAX_NESTING = 16
"""Bodies (``If`` branches, ``Loop`` bodies) nested deeper than this are refused, so a
hostile model cannot drive the importer's recursion into Python's limit."""


@dataclasses.dataclass(frozen=True, eq=False)
class Static:
    """A value known while importing; ``init`` names the initializer it came from."""

    value: np.ndarray
    init: str | None = None


class Ctx:
    """Import state: values by ONNX name, initializers, the parameters made so far."""

    def __init__(self, onnx: Any, path: str, opset: int, limits: Limits) -> None:
        self.onnx, self.path, self.opset, self.limits = onnx, path, opset, limits
        self.values: dict[str, Any] = {}
        self.initializers: dict[str, tuple[np.ndarray, str]] = {}
        self.params: dict[str, Node] = {}
        self.where = ""
        self.sizes: dict[tuple[Node, int], Sym] = {}  # unknown dims known to equal other sizes (reshapes)
        self.depth = 0  # how many bodies (If branches, Loop bodies) enclose this graph
        self._count = [0]  # nodes converted, nested graphs included (shared with children)

    def count_node(self) -> None:
        self._count[0] += 1
        if self._count[0] > self.limits.max_nodes:
            raise GraphFormatError(f"{self.path}: more than Limits.max_nodes={self.limits.max_nodes} nodes")

    def child(self) -> "Ctx":
        """The context of a nested graph: its own values, the outer ones visible beneath."""
        if self.depth >= MAX_NESTING:
            raise self.fail(f"bodies are nested more than MAX_NESTING={MAX_NESTING} deep")
        sub = Ctx(self.onnx, self.path, self.opset, self.limits)
        sub.values = collections.ChainMap({}, self.values)
        sub.initializers, sub.params, sub._count = self.initializers, self.params, self._count
        sub.sizes = self.sizes
        sub.depth, sub.where = self.depth + 1, self.where
        return sub

    def fail(self, what: str) -> GraphFormatError:
        return GraphFormatError(f"{self.path}: {self.where}: {what}")

    def value(self, name: str, n: Any, k: int) -> Any:
        if name in self.values:
            return self.values[name]
        if name in self.initializers:
            return Static(self.initializers[name][0], name)
        where = f"node {k} ({n.name or n.op_type})" if n is not None else "graph output"
        raise GraphFormatError(f"{self.path}: {where} reads {name!r}, which no earlier node produces")

    def node(self, v: Any, *, trainable: bool = True) -> Node:
        """``v`` as a graph node: initializers become parameters (float tensors) or constants;
        ``trainable=False`` (running statistics) or graphbp's own mark makes them state."""
        if isinstance(v, Node):
            return v
        if isinstance(v, Dims):  # a shape computed from run-time sizes, used as data
            return v.as_node()
        if v is None:
            raise self.fail("a required input is missing")
        if v.init is not None:
            arr, doc = self.initializers[v.init]
            if arr.dtype.kind == "f" and (arr.ndim >= 1 or doc in (PARAM_DOC, STATE_DOC)) and doc != CONST_DOC:
                p = self.params.get(v.init)
                if p is None:
                    train = trainable and doc != STATE_DOC
                    p = self.params[v.init] = ops.param(v.init, arr.copy(), trainable=train)
                return p
        return ops.constant(v.value)

    def static(self, v: Any, what: str) -> np.ndarray:
        if isinstance(v, Static):
            return v.value
        if isinstance(v, Node) and isinstance(getattr(v.op, "value", None), np.ndarray) and not v.inputs:
            return v.op.value
        raise self.fail(f"{what} must be known when the model is imported (a constant or initializer)")

    def ints(self, v: Any, what: str) -> list[int]:
        arr = self.static(v, what)
        if arr.dtype.kind not in "iu" or arr.ndim > 1 or arr.size > self.limits.max_ndim * 4:
            raise self.fail(f"{what} must be a short list of integers, got {arr.dtype}{arr.shape}")
        return [int(i) for i in arr.reshape(-1)]


def attr(n: Any, name: str, default: Any = None) -> Any:
    for a in n.attribute:
        if a.name == name:
            kind = a.type
            if kind == 1:
                return float(a.f)
            if kind == 2:
                return int(a.i)
            if kind == 3:
                return a.s.decode("utf-8", "replace")
            if kind == 4:
                return a.t
            if kind == 5:
                return a.g
            if kind == 6:
                return [float(x) for x in a.floats]
            if kind == 7:
                return [int(x) for x in a.ints]
            return None
    return default


Handler = Callable[[Ctx, Any, list[Any]], Any]
HANDLERS: dict[str, Handler] = {}


def handles(*op_types: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for t in op_types:
            HANDLERS[t] = fn
        return fn
    return register


def _nodes(ctx: Ctx, args: list[Any]) -> list[Node]:
    return [ctx.node(a) for a in args]


# ------------------------------------------------------------------------ elementwise
_BINARY = {"Add": ops.add, "Sub": ops.subtract, "Mul": ops.multiply, "Pow": ops.power,
           "Greater": ops.greater, "GreaterOrEqual": ops.greater_equal, "Less": ops.less,
           "LessOrEqual": ops.less_equal, "Equal": ops.equal}
_UNARY = {"Neg": ops.negative, "Exp": ops.exp, "Log": ops.log, "Sqrt": ops.sqrt, "Abs": ops.abs,
          "Sign": ops.sign, "Reciprocal": ops.reciprocal, "Sin": ops.sin, "Cos": ops.cos, "Tanh": ops.tanh,
          "Relu": ops.relu, "Sigmoid": ops.sigmoid, "Softplus": ops.softplus, "Erf": ops.erf}


@handles(*_BINARY)
def _binary(ctx, n, args):
    a, b = _nodes(ctx, args)
    return _BINARY[n.op_type](a, b)


@handles("Div")
def _div(ctx, n, args):
    a, b = _nodes(ctx, args)
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        raise ctx.fail("integer Div (truncating) has no graphbp op")
    return ops.divide(a, b)


@handles("Max", "Min", "Sum", "Mean")
def _variadic(ctx, n, args):
    xs = _nodes(ctx, args)
    fn = {"Max": ops.maximum, "Min": ops.minimum, "Sum": ops.add, "Mean": ops.add}[n.op_type]
    out = xs[0]
    for x in xs[1:]:
        out = fn(out, x)
    return out / len(xs) if n.op_type == "Mean" and len(xs) > 1 else out


@handles(*_UNARY)
def _unary(ctx, n, args):
    return _UNARY[n.op_type](ctx.node(args[0]))


@handles("Not")
def _not(ctx, n, args):
    return ops.equal(ctx.node(args[0]), False)


@handles("IsInf")
def _isinf(ctx, n, args):
    x = ctx.node(args[0])
    pos, neg = attr(n, "detect_positive", 1), attr(n, "detect_negative", 1)
    if pos and neg:
        return ops.equal(ops.abs(x), np.inf)
    return ops.equal(x, np.inf if pos else -np.inf)


@handles("Where")
def _where(ctx, n, args):
    c, a, b = _nodes(ctx, args)
    return ops.where(c, a, b)


@handles("Identity", "Dropout")
def _identity(ctx, n, args):
    if n.op_type == "Dropout" and len([o for o in n.output if o]) > 1:
        raise ctx.fail("Dropout's mask output is not supported (inference: dropout is the identity)")
    return args[0] if isinstance(args[0], Node) else ctx.node(args[0])


@handles("Cast")
def _cast(ctx, n, args):
    from .importer import _np_dtype

    return ops.cast(ctx.node(args[0]), _np_dtype(ctx.onnx, attr(n, "to"), ctx.path, ctx.where))


@handles("Clip")
def _clip(ctx, n, args):
    x = ctx.node(args[0])
    if ctx.opset < 11:
        lo, hi = attr(n, "min"), attr(n, "max")
    else:
        lo = None if len(args) < 2 or args[1] is None else float(ctx.static(args[1], "Clip min"))
        hi = None if len(args) < 3 or args[2] is None else float(ctx.static(args[2], "Clip max"))
    return x if lo is None and hi is None else ops.clip(x, lo, hi)


@handles("LeakyRelu")
def _leaky(ctx, n, args):
    return ops.leaky_relu(ctx.node(args[0]), attr(n, "alpha", 0.01))


@handles("Elu")
def _elu(ctx, n, args):
    return ops.elu(ctx.node(args[0]), attr(n, "alpha", 1.0))


@handles("Gelu")
def _gelu(ctx, n, args):
    return ops.gelu(ctx.node(args[0]), approximate=attr(n, "approximate", "none"))


# ---------------------------------------------------------------------------- linalg
@handles("MatMul")
def _matmul(ctx, n, args):
    a, b = _nodes(ctx, args)
    return ops.matmul(a, b)


@handles("Gemm")
def _gemm(ctx, n, args):
    a, b = ctx.node(args[0]), ctx.node(args[1])
    if attr(n, "transA", 0):
        a = ops.transpose(a)
    if attr(n, "transB", 0):
        b = ops.transpose(b)
    y = a @ b
    alpha, beta = attr(n, "alpha", 1.0), attr(n, "beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if len(args) > 2 and args[2] is not None:
        c = ctx.node(args[2])
        y = y + (c if beta == 1.0 else c * beta)
    return y


# ------------------------------------------------------------------------ reductions
_REDUCE = {"ReduceSum": ops.sum, "ReduceMean": ops.mean, "ReduceMax": ops.max, "ReduceMin": ops.min,
           "ReduceProd": ops.prod, "ReduceLogSumExp": ops.logsumexp}


@handles(*_REDUCE)
def _reduce(ctx, n, args):
    keep = bool(attr(n, "keepdims", 1))
    if len(args) > 1 and args[1] is not None:
        axes = ctx.ints(args[1], f"{n.op_type} axes")
    else:
        axes = attr(n, "axes")
    x = ctx.node(args[0])
    if not axes:
        if attr(n, "noop_with_empty_axes", 0):
            return x
        axes = None
    return _REDUCE[n.op_type](x, axis=None if axes is None else tuple(axes), keepdims=keep)


# ------------------------------------------------------------------- shape and creation
@handles("Concat")
def _concat(ctx, n, args):
    return ops.concatenate(_nodes(ctx, args), axis=attr(n, "axis"))


@handles("Constant")
def _constant(ctx, n, args):
    t = attr(n, "value")
    if t is None:
        raise ctx.fail("only tensor-valued Constant nodes are supported")
    from .importer import _tensor

    return Static(_tensor(ctx.onnx, t, "", ctx.path, ctx.limits))


@handles("Transpose")
def _transpose(ctx, n, args):
    x = ctx.node(args[0])
    perm = attr(n, "perm")
    return ops.transpose(x, None if perm is None else tuple(perm))


def _axes_arg(ctx: Ctx, n: Any, args: list[Any], what: str):
    if len(args) > 1 and args[1] is not None:
        return ctx.ints(args[1], f"{what} axes")
    return attr(n, "axes")


@handles("Unsqueeze")
def _unsqueeze(ctx, n, args):
    x = ctx.node(args[0])
    axes = _axes_arg(ctx, n, args, "Unsqueeze")
    nd = x.ndim + len(axes)
    for a in sorted(a % nd for a in axes):
        x = ops.expand_dims(x, a)
    return x


@handles("Squeeze")
def _squeeze(ctx, n, args):
    x = ctx.node(args[0])
    axes = _axes_arg(ctx, n, args, "Squeeze")
    return ops.squeeze(x, None if axes is None else tuple(axes))


# --------------------------------------------------------------------------- indexing
@handles("Slice")
def _slice(ctx, n, args):
    from .handlers_image import BatchContraction, weight_grad

    starts = ctx.ints(args[1], "Slice starts")
    ends = ctx.ints(args[2], "Slice ends")
    axes = ctx.ints(args[3], "Slice axes") if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = ctx.ints(args[4], "Slice steps") if len(args) > 4 and args[4] is not None else [1] * len(starts)
    if isinstance(args[0], BatchContraction):
        return weight_grad(ctx, args[0], starts, ends, axes, steps)
    x = ctx.node(args[0])
    index = [slice(None)] * x.ndim
    big = 1 << 62
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a % x.ndim] = slice(None if abs(s) >= big else s, None if abs(e) >= big else e, st)
    if _flips_time(tuple(index)) and isinstance(x.op, ops.GetItem) and _flips_time(x.op.index):
        return x.inputs[0]  # reversed twice: an imported reverse scan's ys, flipped back by the exporter's Slice
    return x[tuple(index)]


def _flips_time(index) -> bool:
    """True for ``[::-1]`` (or ``[-1::-1]``) on axis 0, nothing else."""
    first, rest = index[0], index[1:]
    if isinstance(first, slice):
        first = (first.start, first.stop, first.step)
    full = all(r == slice(None) or r == (None, None, None) for r in rest)
    return isinstance(first, tuple) and first[0] in (None, -1) and first[1] is None and first[2] == -1 and full


@handles("Gather")
def _gather(ctx, n, args):
    x, idx = ctx.node(args[0]), ctx.node(args[1])
    return ops.take(x, idx, axis=attr(n, "axis", 0))


@handles("GatherElements")
def _gather_elements(ctx, n, args):
    """A size-1 gather along ``axis`` (one class per row: a one-hot sum), or values read at
    ``MaxPool``'s indices (``max_pool2d_gather``)."""
    from .handlers_image import PoolIndices, gather_at_pool

    if isinstance(args[1], PoolIndices):
        return gather_at_pool(ctx, ctx.node(args[0]), args[1])
    x, idx = ctx.node(args[0]), ctx.node(args[1])
    ax = attr(n, "axis", 0) % x.ndim
    if idx.shape[ax] != 1 or x.shape[ax] is None:
        raise ctx.fail("GatherElements is supported for one index along a known axis")
    hot = ops.one_hot(ops.squeeze(idx, ax), x.shape[ax], dtype=x.dtype, axis=ax)
    return ops.sum(x * hot, axis=ax, keepdims=True)


@handles("OneHot")
def _one_hot(ctx, n, args):
    idx = ctx.node(args[0])
    depth = int(ctx.static(args[1], "OneHot depth").reshape(()))
    values = ctx.static(args[2], "OneHot values")
    if values.reshape(-1).tolist() != [0, 1]:
        raise ctx.fail("OneHot with values other than [0, 1] is not supported")
    return ops.one_hot(idx, depth, dtype=values.dtype, axis=attr(n, "axis", -1))


@handles("ScatterElements")
def _scatter_elements(ctx, n, args):
    """Writes into zeros (what transposed slicing exports): graphbp's ``scatter_add``; adds at
    ``MaxPool``'s indices: ``max_pool2d_grad``."""
    from .handlers_image import PoolIndices, scatter_into_pool

    data = args[0]
    if isinstance(args[1], PoolIndices) and _is_zeros(data):
        return scatter_into_pool(ctx, data, args[1], ctx.node(args[2]), attr(n, "reduction", "none"))
    if not _is_zeros(data):
        raise ctx.fail("ScatterElements is supported into zeros only")
    idx, upd = ctx.node(args[1]), ctx.node(args[2])
    base = ctx.node(data)
    if attr(n, "axis", 0) != 0 or base.ndim != 1 or idx.ndim != 1:
        raise ctx.fail("ScatterElements is supported on flat (1-D) tensors")
    return ops.scatter_add(upd, idx, 0, base)


@handles("ScatterND")
def _scatter_nd(ctx, n, args):
    """Adding rows into zeros (what ``scatter_add`` exports): ``scatter_add`` along axis 0."""
    data, idx, upd = args
    if attr(n, "reduction", "none") != "add" or not _is_zeros(data):
        raise ctx.fail("ScatterND is supported with reduction='add' into zeros only")
    data, idx, upd = _nodes(ctx, args)
    if idx.ndim < 1 or idx.shape[-1] != 1:
        raise ctx.fail("ScatterND is supported with one index per update row")
    return ops.scatter_add(upd, ops.squeeze(idx, -1), 0, data)


def _is_zeros(v: Any) -> bool:
    """True for zeros: a fill with 0, a static all-zero array, or a re-view of one."""
    while isinstance(v, Node) and isinstance(v.op, (ops.Transpose, ops.Reshape)):
        v = v.inputs[0]
    if isinstance(v, Static):
        return not v.value.any()
    return isinstance(v, Node) and isinstance(v.op, ops.Full) and v.op.value == 0


# --------------------------------------------------------------------------- nn
@handles("Softmax", "LogSoftmax")
def _softmax(ctx, n, args):
    x = ctx.node(args[0])
    ax = attr(n, "axis", -1 if ctx.opset >= 13 else 1)
    if ctx.opset < 13 and ax % x.ndim != x.ndim - 1:
        raise ctx.fail("Softmax before opset 13 flattens its input; only the last axis is supported")
    return ops.softmax(x, ax) if n.op_type == "Softmax" else ops.log_softmax(x, ax)


# ---------------------------------------------------------------------------- control flow
@handles("If")
def _if(ctx, n, args):
    """``gb.cond``: each branch graph is converted inside the branch's trace, so the outer
    values it reads become the cond's operands."""
    from .importer import run_nodes

    pred = ctx.node(args[0])
    if pred.shape != ():
        pred = ops.reshape(pred, ())

    def branch(graph):
        def fn():
            if len(graph.initializer) or len(graph.input):
                raise ctx.fail("If branches with their own inputs or initializers are not supported")
            sub = ctx.child()
            run_nodes(sub, graph.node)
            outs = tuple(sub.node(sub.value(o.name, None, -1)) for o in graph.output)
            return outs[0] if len(outs) == 1 else outs
        return fn

    then_g, else_g = attr(n, "then_branch"), attr(n, "else_branch")
    if then_g is None or else_g is None:
        raise ctx.fail("If needs both branches")
    out = ops.cond(pred, branch(then_g), branch(else_g))
    return list(out) if isinstance(out, tuple) else [out]
