"""Lowering: the cheapest NumPy calls for each op at its concrete (planned) shapes.

The executor turns every scheduled node into one line of generated Python; this module
decides what that line is, as data. :data:`LOWERINGS` is the one backend table, keyed by op
class and filled when this module is imported; every op class of ``graphbp.ops.OP_CLASSES``
has an entry (a test checks it), either its own or :func:`generic`, the declared fallback
that calls ``op.compute``. An entry returns a :class:`Lowered` of one of four kinds:

``"out"``
    :class:`Call` records that write the preallocated output buffer ``OUT`` (NumPy ufuncs
    take ``out`` as the last positional argument, which is cheaper than the keyword).
    ``inplace`` lists the operands whose buffer may double as the output when they die at
    this op (elementwise ops only).
``"view"``
    The value is a view of operand 0 (transpose, broadcast, reshape, expand/squeeze), given
    as an expression. When the operand lives in a static buffer, parameter or constant, the
    view is built once at plan time (``view``) and costs nothing per call.
``"const"``
    The value depends only on the planned shapes (``full``, ``reduced_count``): computed
    once per shape signature.
``"call"``
    ``op.compute(*operands)`` returns a fresh array (which may alias its operands).

Arguments are call records (:mod:`.records`): operands, temps, ``OUT``, literals, names and
method/index/attribute expressions over them, so code generation and cache blocking name
the slots (:func:`render`), never edit text.

Small-array overhead matters (a 32-layer MLP at batch 16 spends most of its time in call
overhead), hence the cheapest entry point for each op: ``np.dot`` for 2-D matmul,
``np.add.reduce`` for ``sum``, ``u*u*u`` for ``u**3`` (what each costs against the obvious
call is measured in docs/performance.md, "How the executor gets there").
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType
from ..ops import activations as act, control, conv, conv_kernels, loop, creation, elementwise as ew, indexing, linalg, nn, pool, reduce
from ..ops import shape as sh
from ..ops.collective import AllreduceMean, AllreduceStart, AllreduceWait
from ..ops.fused import AddN, ConvBiasAct, MatMulBiasAct
from ..ops.leaves import Constant
from .records import (  # noqa: F401 - re-exported: the record types are part of a lowering's vocabulary
    OUT, Arg, Attr, Call, Index, Lit, Method, Name, Operand, Out, Slot, Temp, call, render, substitute,
)


@dataclasses.dataclass(frozen=True)
class Lowered:
    """How one node runs (see the module docstring for the kinds).

    ``calls`` are the statements of an ``out`` lowering or the one expression of a ``call``;
    ``expr`` is a view's expression and ``view`` the same view as a function (for static
    operands, at plan time). ``names`` are globals the calls refer to. A view that
    ``may_copy`` (a reshape of a strided operand) runs per call; one that ``keeps_layout``
    is C-contiguous when its operand is."""

    kind: str
    calls: tuple[Call, ...] = ()
    expr: Arg | None = None
    names: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inplace: tuple[int, ...] = ()
    view: Callable[[np.ndarray], np.ndarray] | None = None
    value: Any = None
    temps: tuple[TensorType, ...] = ()
    may_copy: bool = False
    keeps_layout: bool = False

    def statement(self, slot: Callable[[Slot], str], kernel: str = "") -> str:
        """The source of an ``out`` lowering's statements, or of a ``call``/``view`` expression."""
        if self.expr is not None:  # a view, or a view run per call because it may copy
            return self.expr.render(slot, kernel)
        calls = self.calls
        if len(calls) == 1:
            return calls[0].render(slot, kernel)
        return "; ".join([c.render(slot, kernel) for c in calls])


Lowerer = Callable[[Node, list[TensorType], TensorType], "Lowered | None"]

try:  # the ufunc under np.clip: np.clip checks its arguments in Python first, a third of a small call
    from numpy._core.umath import clip as _clip_ufunc
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.umath import clip as _clip_ufunc


def _undispatched(fn: Callable) -> Callable:
    """``fn`` without NumPy's ``__array_function__`` dispatch, a Python-level call on every
    use that costs about as much as a small ``dot`` itself (W3 makes 96 per step). The
    generated code passes it planned buffers, parameters and feeds, which are ndarrays."""
    return getattr(fn, "_implementation", fn)


# NumPy callables the generated code refers to by these global names.
KERNEL_GLOBALS: dict[str, Any] = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "power": np.power, "maximum": np.maximum, "minimum": np.minimum, "negative": np.negative,
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "square": np.square,
    "absolute": np.absolute, "sign": np.sign, "reciprocal": np.reciprocal, "sin": np.sin,
    "cos": np.cos, "tanh": np.tanh, "greater": np.greater, "greater_equal": np.greater_equal,
    "less": np.less, "less_equal": np.less_equal, "equal": np.equal, "not_equal": np.not_equal,
    "bitwise_and": np.bitwise_and, "dot": _undispatched(np.dot), "vdot": _undispatched(np.vdot), "maximum_reduce": np.maximum.reduce,
    "matmul": np.matmul, "add_reduce": np.add.reduce, "copyto": _undispatched(np.copyto),
    "broadcast_to": np.broadcast_to, "clip": np.clip, "clip_ufunc": _clip_ufunc, "empty": np.empty, "array": np.array, "float32": np.float32,
}

X0, X1, X2, X3, X4 = _OPERANDS = tuple(Operand(k) for k in range(5))
T0, T1, T2 = (Temp(k) for k in range(3))
UNSAFE = Lit("unsafe")


def out_kind(*calls: Call, **fields: Any) -> Lowered:
    return Lowered("out", tuple(calls), **fields)


def _same(t: TensorType, out: TensorType) -> bool:
    return t.shape == out.shape and t.dtype == out.dtype


def _inplace_ok(types: list[TensorType], out: TensorType, candidates) -> tuple[int, ...]:
    return tuple(i for i in candidates if _same(types[i], out))


def _ufunc(fname: str, float_only: bool = False) -> Lowerer:
    # NumPy 2.4 deprecates a positional out for maximum/minimum only
    keyword_out = fname in ("maximum", "minimum")

    def lower(node, types, out):
        if float_only and out.dtype.kind != "f":
            return None
        args = _OPERANDS[:len(types)] if len(types) <= 5 else tuple(Operand(k) for k in range(len(types)))
        c = Call(fname, args, (("out", OUT),)) if keyword_out else Call(fname, args + (OUT,))
        return out_kind(c, inplace=_inplace_ok(types, out, range(len(types))))

    return lower


def _power(node, types, out):
    y = node.inputs[1]
    if out.dtype.kind != "f":
        return None
    if isinstance(y.op, Constant) and y.op.value.shape == () and types[0].shape == out.shape:
        e = float(y.op.value)
        if e == 1.0:
            return out_kind(call("copyto", OUT, X0), inplace=(0,))
        if e == 2.0:
            return out_kind(call("multiply", X0, X0, OUT), inplace=(0,))
        if e == 3.0:  # u*u*u: out is written before u's last read, so no in-place here
            return out_kind(call("multiply", X0, X0, OUT), call("multiply", OUT, X0, OUT))
        if e == 0.5:
            return out_kind(call("sqrt", X0, OUT), inplace=(0,))
    return _ufunc("power")(node, types, out)


def _is_zero(v) -> bool:
    op = getattr(v, "op", None)
    return isinstance(op, Constant) and op.value.shape == () and op.value.dtype.kind in "fiu" and op.value == 0


def _where(node, types, out):
    it = out.dtype.itemsize
    if out.dtype.kind == "f" and it in (4, 8):
        # where(c, a, 0) on a's bits as unsigned integers: branch-free, unlike a masked copy
        # on random masks (relu gradients), and exact (a's bits where c holds, +0.0
        # elsewhere). One integer multiply by the 0/1 mask: one call, where an all-ones mask
        # and-ed in takes two, and exact where a float multiply by the mask is not (inf * 0
        # is nan). Costs in docs/performance.md, "Per-call work on small graphs".
        u = f"uint{8 * it}"
        fields = dict(names={u: np.dtype(u).type}, temps=(TensorType(out.shape, np.dtype(u)),))
        c, a, b = node.inputs
        as_u = lambda x: Method(x, "view", (Name(u),))  # noqa: E731 - a local spelling
        if _is_zero(b) and types[1].dtype == out.dtype:
            return out_kind(call("multiply", as_u(X1), X0, as_u(OUT)), names=fields["names"],
                            inplace=_inplace_ok(types, out, (1,)))
        if _is_zero(a) and types[2].dtype == out.dtype:
            return out_kind(call("subtract", X0, Lit(1), T0, dtype=Name(u)),
                            call("bitwise_and", as_u(X2), T0, as_u(OUT)),
                            inplace=_inplace_ok(types, out, (2,)), **fields)
    # Two passes, no temporary: fill with the "else" operand, then copy where the mask holds.
    return out_kind(call("copyto", OUT, X2, UNSAFE), call("copyto", OUT, X1, UNSAFE, X0),
                    inplace=_inplace_ok(types, out, (2,)))


def _cast(node, types, out):
    return out_kind(call("copyto", OUT, X0, UNSAFE))


def _matmul(node, types, out):
    a, b = types
    same = a.dtype == b.dtype == out.dtype
    if a.ndim > 2 and b.ndim == 2 and same and out.is_concrete:
        # stacked rows times a matrix (a loop's hoisted projection, (T, B, in) @ W): one
        # gemm over (T*B, in) instead of np.matmul's one per leading index
        k, n = a.shape[-1], b.shape[-1]
        return out_kind(call("dot", Method(X0, "reshape", (Lit(-1), Lit(k))), X1,
                             Method(OUT, "reshape", (Lit(-1), Lit(n)))))
    fn = "dot" if a.ndim == 2 and b.ndim == 2 and same else "matmul"
    return out_kind(call(fn, X0, X1, OUT))


def _reduce_args(op, x: TensorType, out: TensorType) -> tuple[Arg, ...]:
    axis = op.axis if len(op.axis) != x.ndim else None
    return (Lit(axis), Name(out.dtype.name), OUT) + ((Lit(True),) if op.keepdims else ())


def _sum(node, types, out):
    return out_kind(Call("add_reduce", (X0,) + _reduce_args(node.op, types[0], out)),
                    names={out.dtype.name: out.dtype.type})


def _mean(node, types, out):
    if out.dtype.kind != "f" or out.dtype.itemsize < 4:
        return None  # np.mean accumulates float16 in float32; keep its kernel
    count = 1
    for a in node.op.axis:
        count *= types[0].shape[a]
    return out_kind(Call("add_reduce", (X0,) + _reduce_args(node.op, types[0], out)),
                    call("divide", OUT, Lit(count), OUT), names={out.dtype.name: out.dtype.type})


def stand_in(t: TensorType) -> np.ndarray:
    """A zero-cost array of type ``t`` for kernels that read only their operand's shape."""
    return np.broadcast_to(np.zeros((), t.dtype), t.shape)


def _const(node, types, out):
    value = np.asarray(node.op.compute(*(stand_in(t) for t in types)))
    value.setflags(write=False)
    return Lowered("const", value=value)


def _view(expr: Arg, fn: Callable[[np.ndarray], np.ndarray], **fields: Any) -> Lowered:
    return Lowered("view", expr=expr, view=fn, **fields)


def _getitem(node, types, out):
    """Basic indexing is a view (an LSTM's gate slices): ``x[a:b, ...]`` inline, not a
    kernel call per step. A 0-d result would be a NumPy scalar, not a view: the kernel."""
    if out.ndim == 0 or not node.op.index:
        return None
    index = tuple(slice(*i) if isinstance(i, tuple) else i for i in node.op.index)
    return _view(Index(X0, tuple(Lit(i) for i in index)), lambda x: x[index])


def _concatenate(node, types, out):
    """One copy per operand into its slice of the planned output (``np.concatenate`` takes
    its operands as one sequence, which a call record does not hold)."""
    if not out.is_concrete or any(t.dtype != out.dtype for t in types):
        return None
    places = node.op.operand_places(types)
    return out_kind(*(call("copyto", Index(OUT, tuple(Lit(s) for s in idx)), Operand(k))
                      for k, idx in enumerate(places)))


def _transpose(node, types, out):
    axes = node.op.axes
    if axes == tuple(range(len(axes)))[::-1]:
        return _view(Attr(X0, "T"), lambda x: x.T)
    return _view(Method(X0, "transpose", (Lit(axes),)), lambda x: x.transpose(axes))


def _broadcast(node, types, out):
    shape = out.shape
    if types[0].shape == shape:
        return _view(X0, lambda x: x, keeps_layout=True)
    return _view(call("broadcast_to", X0, Lit(shape)), lambda x: np.broadcast_to(x, shape))


def _reshaper(may_copy: bool) -> Lowerer:
    """Reshape, expand_dims and squeeze as ``x.reshape(shape)``: a view of a C-contiguous
    operand; a general reshape of a strided operand may copy (``may_copy``)."""

    def lower(node, types, out):
        shape = out.shape
        if types[0].shape == shape:
            return _view(X0, lambda x: x, keeps_layout=True)
        return _view(Method(X0, "reshape", (Lit(shape),)), lambda x: x.reshape(shape), keeps_layout=True,
                     may_copy=may_copy)

    return lower


def _exp_floor(dtype: np.dtype) -> float:
    """The smallest argument whose ``exp`` is a normal float (-87 in float32, -708 in
    float64): clipping to it keeps ``exp`` from underflowing (no floating-point flag even
    under ``errstate(all="raise")``)."""
    return float(np.ceil(np.log(np.finfo(dtype).tiny)))


def _sigmoid(node, types, out):
    if out.dtype.kind != "f" or out.dtype.itemsize < 4 or types[0] != out:
        return None
    # e / (1 + e) with e = exp(x), four calls (the stable kernel of op.compute takes three
    # temporaries and a where; this is the recurrent gates' hot path, and 1 / (1 + exp(-x))
    # takes a negation more). x is first clipped to where exp(x) and the result stay normal
    # numbers, so nothing overflows or underflows; beyond it the value is 0 or 1 to within
    # the smallest normal number. One clip, not a minimum and a maximum: one pass, not two;
    # the clip ufunc itself, not np.clip, whose Python-level argument handling costs more
    # than clipping a gate block.
    bound = float(-np.log(np.finfo(out.dtype).tiny) - 1.0)
    return out_kind(call("clip_ufunc", X0, Lit(-bound), Lit(bound), OUT), call("exp", OUT, OUT),
                    call("add", OUT, Lit(1.0), T0), call("divide", OUT, T0, OUT),
                    inplace=_inplace_ok(types, out, (0,)), temps=(out,))


def _softplus(node, types, out):
    """``max(x, 0) + log1p(exp(max(-|x|, lo)))``: seven calls of ufuncs NumPy vectorises,
    where the op's kernel, ``logaddexp(0, x)``, is one call about ten times slower than all
    of them (measured in docs/performance.md). ``lo`` keeps ``exp`` from underflowing
    (:func:`_exp_floor`): past ``|x| = 87`` (float32) the log term is ``1e-38`` instead of
    smaller, a difference in the subnormal range."""
    if out.dtype.kind != "f" or out.dtype.itemsize < 4 or not _same(types[0], out):
        return None  # float16 keeps the op's kernel
    lo = _exp_floor(out.dtype)
    return out_kind(call("maximum", X0, Lit(0), out=T0), call("absolute", X0, OUT), call("negative", OUT, OUT),
                    call("maximum", OUT, Lit(lo), out=OUT), call("exp", OUT, OUT), call("log1p", OUT, OUT),
                    call("add", OUT, T0, OUT), inplace=(0,), temps=(out,))


def _relu(node, types, out):
    return out_kind(call("maximum", X0, Lit(0), out=OUT), inplace=_inplace_ok(types, out, (0,)))


def _rows_last_axis(types: list[TensorType], axis: int) -> bool:
    """Float logits of 2 or more dims, reduced along the last axis, at concrete shapes: the
    lowerings below treat them as a ``(rows, classes)`` matrix (a reshape, a view of the
    planned buffers)."""
    x = types[0]
    return (x.ndim >= 2 and axis in (x.ndim - 1, -1) and x.dtype.kind == "f" and x.dtype.itemsize >= 4
            and x.is_concrete)


def _as_rows(arg: Arg, t: TensorType) -> Arg:
    """``arg`` (of type ``t``) as a ``(rows, t.shape[-1])`` matrix; a 1-D ``t`` as one vector."""
    if t.ndim <= 2:
        return arg
    return Method(arg, "reshape", (Lit(-1), Lit(t.shape[-1])))


def _as_flat(arg: Arg, t: TensorType) -> Arg:
    return arg if t.ndim == 1 else Method(arg, "reshape", (Lit(-1),))


def _matrix(x: TensorType) -> TensorType:
    n = 1
    for d in x.shape[:-1]:
        n *= d
    return TensorType((n, x.shape[-1]), x.dtype)


# Softmax, its cross-entropy and one-hot over the last axis of float logits, as a (rows,
# classes) matrix: the max-subtracted formulas with out= into row-sized scratch, no
# temporaries per call. NumPy reduces a short last axis (a few classes) one row at a time,
# which costs more than the arithmetic: the row maxima reduce a transposed copy instead
# (whole rows per inner loop; the maximum is exact in any order) and the row sums are a
# product with a column of ones (one BLAS call). Costs in docs/performance.md, "Per-call
# work on small graphs".
_SHORT_ROW = 64


def _row_max(x: TensorType, xs: Arg, m: Temp, scratch: int) -> tuple[tuple[Call, ...], tuple[TensorType, ...]]:
    """Calls writing the row maxima of the ``(n, k)`` matrix ``xs`` (of type ``x``) into
    ``m`` (``(n, 1)``), and the scratch they need (as temp ``scratch`` on)."""
    n, k = x.shape
    one, none, true = Lit(1), Lit(None), Lit(True)
    if n is None or k is None or k > _SHORT_ROW or n < max(32, 2 * k):
        return (call("maximum_reduce", xs, one, none, m, true),), ()
    t = Temp(scratch)
    return ((call("copyto", t, Attr(xs, "T")), call("maximum_reduce", t, Lit(0), none, Attr(m, "T"), true)),
            (TensorType((k, n), x.dtype),))


def _row_sum(x: TensorType, e: Arg, s: Arg, keepdims: bool) -> tuple[Call, dict[str, Any]]:
    """The call writing the row sums of ``e`` (shaped like ``x``) into ``s``, and its names."""
    k = x.shape[1]
    if k is None or k > _SHORT_ROW:
        return Call("add_reduce", (e, Lit(1), Lit(None), s) + ((Lit(True),) if keepdims else ())), {}
    name = f"ones_{k}{'_col' if keepdims else ''}_{x.dtype.name}"
    return call("dot", e, Name(name), s), {name: np.ones((k, 1) if keepdims else k, x.dtype)}


def _softmax(node, types, out):
    if not _rows_last_axis(types, node.op.axis) or out.dtype != types[0].dtype:
        return None
    x = _matrix(types[0])
    xs, os = _as_rows(X0, types[0]), _as_rows(OUT, out)
    rows = TensorType((x.shape[0], 1), out.dtype)
    row_max, scratch = _row_max(x, xs, T0, 2)
    row_sum, names = _row_sum(x, os, T1, keepdims=True)
    return out_kind(*row_max, call("subtract", xs, T0, os), call("exp", os, os), row_sum,
                    call("divide", os, T1, os), temps=(rows, rows) + scratch, names=names,
                    inplace=_inplace_ok(types, out, (0,)))


def _cross_entropy(node, types, out):
    if not _rows_last_axis(types, node.op.axis) or types[1].dtype.kind not in "iu" or out.dtype != types[0].dtype:
        return None
    x = _matrix(types[0])
    xs, labels, flat = _as_rows(X0, types[0]), _as_flat(X1, types[1]), _as_flat(OUT, out)
    n = x.shape[0]
    rows = f"rows_{n}"
    row_max, scratch = _row_max(x, xs, T0, 3)
    row_sum, names = _row_sum(x, T2, flat, keepdims=False)
    return out_kind(*row_max, call("subtract", xs, T0, T1), call("exp", T1, T2), row_sum, call("log", flat, flat),
                    call("subtract", flat, Index(T1, (Name(rows), labels)), flat),
                    names={rows: np.arange(n), **names}, temps=(TensorType((n, 1), x.dtype), x, x) + scratch)


def _one_hot(node, types, out):
    if types[0].ndim == 0 or node.op.axis not in (-1, types[0].ndim):
        return None
    depth = node.op.depth
    name = f"arange_{depth}"
    return out_kind(call("equal", Index(X0, (Lit(Ellipsis), Lit(None))), Name(name), OUT),
                    names={name: np.arange(depth)})


def _add_n(node, types, out):
    calls = [call("add", X0, X1, OUT)] + [call("add", OUT, Operand(k), OUT) for k in range(2, len(types))]
    # the first call writes the output: an operand read again later (add_n(a, x, a)) must
    # not be the buffer it writes
    later = node.inputs[2:]
    first = tuple(k for k in (0, 1) if not any(v is node.inputs[k] for v in later))
    return out_kind(*calls, inplace=_inplace_ok(types, out, first))


class _Applied(NamedTuple):
    """An op applied to operands: what a lowerer reads of a node (``op``, ``inputs``), for
    lowering one part of a fused op without building a graph node."""

    op: Any
    inputs: tuple


def _matmul_bias_act(node, types, out):
    a, w, b = types
    activation = node.op.activation_op
    if not (a.ndim == w.ndim == 2 and a.dtype == w.dtype == b.dtype == out.dtype):
        return None
    calls = [call("dot", X0, X1, OUT), call("add", OUT, X2, OUT)]
    if activation is not None:
        fn = LOWERINGS.get(type(activation))
        stub = _Applied(activation, (node,))  # the activation applied to the product
        got = fn(stub, [out], out) if fn is not None and fn is not generic else None
        if got is None or got.kind != "out" or 0 not in got.inplace or got.temps:
            return None
        calls += [substitute(c, {X0: OUT}) for c in got.calls]
    return out_kind(*calls)


def _conv_calls(fn: str, shapes, node, types, out, args: tuple[Arg, ...]) -> Lowered | None:
    """A convolution kernel of ``ops/conv_kernels.py`` writing ``OUT``, its scratch arrays
    (padded plane, im2col matrix, product) as temps: buffers of the memory plan, shared with
    values whose lifetimes do not overlap, instead of arrays allocated per call."""
    if not (out.is_concrete and all(t.is_concrete for t in types)) or out.dtype.kind != "f":
        return None
    temps = tuple(TensorType(s, out.dtype) for s in shapes)
    geo = (Lit(node.op.stride), Lit(node.op.padding), Lit(node.op.dilation), Lit(node.op.groups))
    return out_kind(Call(fn, args + geo + (OUT,) + tuple(Temp(k) for k in range(len(temps)))),
                    temps=temps, names={fn: getattr(conv_kernels, fn)})


def _conv2d(node, types, out, bias: Arg = Lit(None)):
    op = node.op
    shapes = conv_kernels.conv2d_workspace(types[0].shape, types[1].shape, op.stride, op.padding, op.dilation,
                                           op.groups)
    return _conv_calls("conv2d_into", shapes, node, types, out, (X0, X1, bias))


def _conv_transpose2d(node, types, out):
    op = node.op
    shapes = conv_kernels.conv_transpose2d_workspace(types[0].shape, types[1].shape, op.stride, op.padding,
                                                     op.dilation, op.groups)
    return _conv_calls("conv_transpose2d_into", shapes, node, types, out, (X0, X1))


def _conv2d_weight_grad(node, types, out):
    op = node.op
    shapes = conv_kernels.conv2d_weight_grad_workspace(types[0].shape, types[1].shape, op.kernel, op.stride,
                                                       op.padding, op.dilation, op.groups)
    return _conv_calls("conv2d_weight_grad_into", shapes, node, types, out, (X0, X1, Lit(op.kernel)))


def _conv_bias_act(node, types, out):
    """conv2d with the bias added as the product is cropped into ``OUT``, then the absorbed
    activation in place (its own lowering, as ``matmul_bias_act`` does)."""
    if types[2].dtype != out.dtype:
        return None
    got = _conv2d(node, types, out, bias=X2)
    activation = node.op.activation_op
    if got is None or activation is None:
        return got
    fn = LOWERINGS.get(type(activation))
    act_low = fn(_Applied(activation, (node,)), [out], out) if fn is not None and fn is not generic else None
    if act_low is None or act_low.kind != "out" or 0 not in act_low.inplace or act_low.temps:
        return None
    return dataclasses.replace(got, calls=got.calls + tuple(substitute(c, {X0: OUT}) for c in act_low.calls))


def _allreduce_wait(node, types, out):
    """The wait completes the started buffer in place: it is the output when it dies here
    (it always does: only the wait reads a start)."""
    got = generic(node, types, out)
    return dataclasses.replace(got, inplace=(0,)) if got.kind == "out" else got


def _takes_out(node: Node) -> bool:
    try:
        return "out" in inspect.signature(node.op.compute).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False


def generic(node: Node, types: list[TensorType], out: TensorType) -> Lowered:
    """The declared fallback: the op's own kernel, ``op.compute`` (into the planned buffer
    when it takes ``out=`` and the shapes are known, else as a fresh array per call)."""
    args = tuple(Operand(k) for k in range(len(types)))
    if _takes_out(node) and out.is_concrete and all(t.is_concrete for t in types):
        return out_kind(Call(None, args, (("out", OUT),)))
    return Lowered("call", (Call(None, args),))


#: The backend table: every op class's lowering (``generic`` where ``op.compute`` is the
#: best NumPy has). An entry may return None for shapes or dtypes it does not handle;
#: :func:`generic` runs then.
LOWERINGS: dict[type, Lowerer] = {
    ew.Add: _ufunc("add"), ew.Subtract: _ufunc("subtract"), ew.Multiply: _ufunc("multiply"),
    ew.Divide: _ufunc("divide", float_only=True), ew.Power: _power,
    ew.Maximum: _ufunc("maximum"), ew.Minimum: _ufunc("minimum"), ew.Where: _where,
    ew.Greater: _ufunc("greater"), ew.GreaterEqual: _ufunc("greater_equal"), ew.Less: _ufunc("less"),
    ew.LessEqual: _ufunc("less_equal"), ew.Equal: _ufunc("equal"), ew.NotEqual: _ufunc("not_equal"),
    ew.Negative: _ufunc("negative"), ew.Exp: _ufunc("exp"), ew.Log: _ufunc("log"),
    ew.Log1p: _ufunc("log1p"), ew.Sqrt: _ufunc("sqrt"), ew.Square: _ufunc("square"),
    ew.Abs: _ufunc("absolute"), ew.Sign: _ufunc("sign"), ew.Reciprocal: _ufunc("reciprocal", float_only=True),
    ew.Sin: _ufunc("sin"), ew.Cos: _ufunc("cos"), ew.Tanh: _ufunc("tanh"), ew.Cast: _cast,
    ew.Clip: generic,
    linalg.MatMul: _matmul,
    reduce.Sum: _sum, reduce.Mean: _mean, reduce.ReducedCount: _const, creation.Full: _const,
    reduce.Max: generic, reduce.Min: generic, reduce.Prod: generic, reduce.LogSumExp: generic,
    sh.Transpose: _transpose, sh.BroadcastTo: _broadcast, sh.Reshape: _reshaper(may_copy=True),
    sh.ExpandDims: _reshaper(may_copy=False), sh.Squeeze: _reshaper(may_copy=False),
    act.Relu: _relu,
    act.LeakyRelu: generic, act.Elu: generic, act.Erf: generic, act.Sigmoid: _sigmoid, act.Softplus: _softplus,
    indexing.OneHot: _one_hot,
    indexing.GetItem: _getitem, indexing.EmbedSlice: generic, indexing.Concatenate: _concatenate,
    indexing.ConcatSlice: generic, indexing.Take: generic, indexing.ScatterAdd: generic,
    nn.Softmax: _softmax, nn.SoftmaxCrossEntropy: _cross_entropy,
    nn.LogSoftmax: generic, nn.SigmoidBinaryCrossEntropy: generic, nn.DropoutMask: generic,
    nn.SoftmaxCrossEntropyProbs: generic,  # two outputs: op.compute's row kernel returns both
    AddN: _add_n, MatMulBiasAct: _matmul_bias_act,
    AllreduceMean: generic, AllreduceStart: generic, AllreduceWait: _allreduce_wait,
    control.TupleGet: lambda node, types, out: _view(Index(X0, (Lit(node.op.index),)), lambda x: x[node.op.index]),
    control.Cond: generic,  # runs the chosen body's program (compiled once, held by the body)
    loop.Scan: generic,  # runs the body's program once per step into preallocated (T, ...) buffers
    # convolutions: their kernels (ops/conv_kernels.py) with planned output and scratch buffers
    conv.Conv2D: _conv2d, conv.ConvTranspose2D: _conv_transpose2d, conv.Conv2DWeightGrad: _conv2d_weight_grad,
    # pooling: op.compute runs their own windowed NumPy kernels
    pool.MaxPool2D: generic, pool.MaxPool2DGrad: generic, pool.MaxPool2DGather: generic,
    pool.AvgPool2D: generic, pool.AvgPool2DGrad: generic,
    ConvBiasAct: _conv_bias_act,  # bias added while cropping into OUT, the activation in place
}


def lower(node: Node, types: list[TensorType], out: TensorType) -> Lowered:
    """The lowering of ``node`` at concrete operand ``types`` and output type ``out``.

    Op classes outside the table (an op defined in user code) run :func:`generic`."""
    fn = LOWERINGS.get(type(node.op), generic)
    got = fn(node, types, out)
    return got if got is not None else generic(node, types, out)
