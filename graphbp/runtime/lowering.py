"""Lowering: the cheapest NumPy call for each op at its concrete (planned) shapes.

The executor turns every scheduled node into one line of generated Python. This module
decides what that line is. Each entry of :data:`LOWERINGS` (keyed by op class) returns a
:class:`Lowered` of one of four kinds:

``"out"``
    The op writes into a preallocated output buffer (``tanh(v3, v4)``: NumPy ufuncs take
    ``out`` as the last positional argument, which is cheaper than the keyword).
    ``inplace`` lists the operands whose buffer may double as the output when they die at
    this op (elementwise ops only).
``"view"``
    The value is a view of operand 0 (transpose, broadcast, reshape, expand/squeeze). When
    the operand lives in a static buffer, parameter or constant, the view is built once at
    plan time and costs nothing per call.
``"const"``
    The value depends only on the planned shapes (``full``, ``reduced_count``): computed
    once per shape signature.
``"call"``
    Fallback: ``op.compute(*operands)`` returns a fresh array (which may alias its operands).

Ops whose ``compute`` accepts ``out=`` (the fused ops of :mod:`graphbp.ops.fused`) are
lowered to ``"out"`` automatically. Small-array overhead matters (a 32-layer MLP at batch 16
spends most of its time in call overhead), hence ``np.dot`` for 2-D matmul (0.8 us where
``np.matmul`` costs 1.2 us), ``np.add.reduce`` for ``sum`` (1.1 us vs 2.3 us for ``np.sum``)
and ``u*u*u`` for ``u**3`` (a few ms vs ~80 ms for ``np.power`` on 4M floats).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType
from ..ops import creation, elementwise as ew, linalg, reduce, shape as sh
from ..ops.leaves import Constant


@dataclasses.dataclass
class Lowered:
    """How one node runs. ``emit(args, out)`` returns the statement (kind ``"out"``) or the
    expression (``"view"``/``"call"``) for operand names ``args`` and output name ``out``."""

    kind: str
    emit: Callable[[list[str], str], str] | None = None
    names: dict[str, Any] = dataclasses.field(default_factory=dict)
    inplace: tuple[int, ...] = ()
    view: Callable[[np.ndarray], np.ndarray] | None = None
    value: Any = None
    temps: list[TensorType] = dataclasses.field(default_factory=list)  # scratch buffers; their
    # names follow the operand names in ``args``


Lowerer = Callable[[Node, list[TensorType], TensorType], "Lowered | None"]

# NumPy callables the generated code refers to by these global names.
KERNEL_GLOBALS: dict[str, Any] = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "power": np.power, "maximum": np.maximum, "minimum": np.minimum, "negative": np.negative,
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "square": np.square,
    "absolute": np.absolute, "sign": np.sign, "reciprocal": np.reciprocal, "sin": np.sin,
    "cos": np.cos, "tanh": np.tanh, "greater": np.greater, "greater_equal": np.greater_equal,
    "less": np.less, "less_equal": np.less_equal, "equal": np.equal, "not_equal": np.not_equal,
    "bitwise_and": np.bitwise_and, "dot": np.dot, "maximum_reduce": np.maximum.reduce, "matmul": np.matmul, "add_reduce": np.add.reduce, "copyto": np.copyto,
    "broadcast_to": np.broadcast_to, "empty": np.empty, "array": np.array, "float32": np.float32,
}


def _same(t: TensorType, out: TensorType) -> bool:
    return t.shape == out.shape and t.dtype == out.dtype


def _inplace_ok(types: list[TensorType], out: TensorType, candidates) -> tuple[int, ...]:
    return tuple(i for i in candidates if _same(types[i], out))


def _ufunc(fname: str, float_only: bool = False) -> Lowerer:
    # NumPy 2.4 deprecates a positional out for maximum/minimum only
    out_arg = "out=" if fname in ("maximum", "minimum") else ""

    def lower(node, types, out):
        if float_only and out.dtype.kind != "f":
            return None
        return Lowered("out", lambda a, o: f"{fname}({', '.join(a)}, {out_arg}{o})",
                       inplace=_inplace_ok(types, out, range(len(types))))

    return lower


def _power(node, types, out):
    y = node.inputs[1]
    if out.dtype.kind != "f":
        return None
    if isinstance(y.op, Constant) and y.op.value.shape == () and types[0].shape == out.shape:
        e = float(y.op.value)
        if e == 1.0:
            return Lowered("out", lambda a, o: f"copyto({o}, {a[0]})", inplace=(0,))
        if e == 2.0:
            return Lowered("out", lambda a, o: f"multiply({a[0]}, {a[0]}, {o})", inplace=(0,))
        if e == 3.0:  # u*u*u: out is written before u's last read, so no in-place here
            return Lowered("out", lambda a, o: f"multiply({a[0]}, {a[0]}, {o}); multiply({o}, {a[0]}, {o})")
        if e == 0.5:
            return Lowered("out", lambda a, o: f"sqrt({a[0]}, {o})", inplace=(0,))
    return _ufunc("power")(node, types, out)


def _is_zero(v) -> bool:
    op = getattr(v, "op", None)
    return isinstance(op, Constant) and op.value.shape == () and op.value.dtype.kind in "fiu" and op.value == 0


def _where(node, types, out):
    it = out.dtype.itemsize
    if out.dtype.kind == "f" and it in (4, 8):
        # where(c, a, 0) as a bit mask: branch-free, ~8x faster than a masked copy on random
        # masks (relu gradients) and exact (a's bits where c holds, +0.0 elsewhere).
        u = f"uint{8 * it}"
        names = {u: np.dtype(u).type}
        temps = [TensorType(out.shape, np.dtype(u))]
        c, a, b = node.inputs
        if _is_zero(b) and types[1].dtype == out.dtype:
            return Lowered("out", lambda x, o: f"subtract(0, {x[0]}, {x[3]}, dtype={u}); "
                           f"bitwise_and({x[1]}.view({u}), {x[3]}, {o}.view({u}))",
                           names=names, temps=temps, inplace=_inplace_ok(types, out, (1,)))
        if _is_zero(a) and types[2].dtype == out.dtype:
            return Lowered("out", lambda x, o: f"subtract({x[0]}, 1, {x[3]}, dtype={u}); "
                           f"bitwise_and({x[2]}.view({u}), {x[3]}, {o}.view({u}))",
                           names=names, temps=temps, inplace=_inplace_ok(types, out, (2,)))
    # Two passes, no temporary: fill with the "else" operand, then copy where the mask holds.
    return Lowered("out", lambda a, o: f"copyto({o}, {a[2]}, 'unsafe'); copyto({o}, {a[1]}, 'unsafe', {a[0]})",
                   inplace=_inplace_ok(types, out, (2,)))


def _cast(node, types, out):
    return Lowered("out", lambda a, o: f"copyto({o}, {a[0]}, 'unsafe')")


def _matmul(node, types, out):
    a, b = types
    fn = "dot" if a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype == out.dtype else "matmul"
    return Lowered("out", lambda x, o: f"{fn}({x[0]}, {x[1]}, {o})")


def _sum(node, types, out):
    op = node.op
    axis = op.axis if len(op.axis) != types[0].ndim else None
    kd = ", True" if op.keepdims else ""
    return Lowered("out", lambda a, o: f"add_reduce({a[0]}, {axis!r}, {out.dtype.name}, {o}{kd})",
                   names={out.dtype.name: out.dtype.type})


def _mean(node, types, out):
    if out.dtype.kind != "f" or out.dtype.itemsize < 4:
        return None  # np.mean accumulates float16 in float32; keep its kernel
    op = node.op
    count = 1
    for a in op.axis:
        count *= types[0].shape[a]
    axis = op.axis if len(op.axis) != types[0].ndim else None
    kd = ", True" if op.keepdims else ""
    return Lowered(
        "out",
        lambda a, o: f"add_reduce({a[0]}, {axis!r}, {out.dtype.name}, {o}{kd}); divide({o}, {count}, {o})",
        names={out.dtype.name: out.dtype.type},
    )


def _stand_in(t: TensorType) -> np.ndarray:
    """A zero-cost array of type ``t`` for kernels that read only their operand's shape."""
    return np.broadcast_to(np.zeros((), t.dtype), t.shape)


def _const(node, types, out):
    value = np.asarray(node.op.compute(*(_stand_in(t) for t in types)))
    value.setflags(write=False)
    return Lowered("const", value=value)


def _view(expr: Callable[[str], str], fn: Callable[[np.ndarray], np.ndarray]) -> Lowered:
    return Lowered("view", lambda a, o: expr(a[0]), view=fn)


def _transpose(node, types, out):
    axes = node.op.axes
    if axes == tuple(range(len(axes)))[::-1]:
        return _view(lambda a: f"{a}.T", lambda x: x.T)
    return _view(lambda a: f"{a}.transpose({axes!r})", lambda x: x.transpose(axes))


def _broadcast(node, types, out):
    shape = out.shape
    if types[0].shape == shape:
        return _view(lambda a: a, lambda x: x)
    return _view(lambda a: f"broadcast_to({a}, {shape!r})", lambda x: np.broadcast_to(x, shape))


def _reshape_to(node, types, out):
    shape = out.shape
    if types[0].shape == shape:
        return _view(lambda a: a, lambda x: x)
    return _view(lambda a: f"{a}.reshape({shape!r})", lambda x: x.reshape(shape))


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
    linalg.MatMul: _matmul, reduce.Sum: _sum, reduce.Mean: _mean,
    reduce.ReducedCount: _const, creation.Full: _const,
    sh.Transpose: _transpose, sh.BroadcastTo: _broadcast, sh.Reshape: _reshape_to,
    sh.ExpandDims: _reshape_to, sh.Squeeze: _reshape_to,
}


def _register_optional() -> None:
    """Lowerings for ops defined outside the core (activations, fused ops), when present."""
    try:
        from ..ops.activations import Relu

        LOWERINGS[Relu] = lambda node, types, out: Lowered(
            "out", lambda a, o: f"maximum({a[0]}, 0, out={o})", inplace=_inplace_ok(types, out, (0,)))
    except ImportError:  # pragma: no cover - depends on which ops are installed
        pass
    try:
        from ..ops.activations import Gelu, GeluTanhGrad

        from ..ops.activations import _GELU_C, _SQRT_2_OVER_PI as k

        kc, k3 = k * _GELU_C, 3 * k * _GELU_C

        def tanh_inner(u: str, t: str) -> str:
            """``t = tanh(k u (1 + c3 u^2))``: four in-place calls after ``u*u`` (constants
            pre-multiplied; ``u*u*u``, never ``u**3``)."""
            return (f"multiply({u}, {u}, {t}); multiply({t}, {kc!r}, {t}); add({t}, {k!r}, {t}); "
                    f"multiply({t}, {u}, {t}); tanh({t}, {t})")

        def gelu(node, types, out):
            if node.op.approximate != "tanh" or out.dtype.kind != "f" or types[0] != out:
                return None
            # 0.5 u (1 + tanh(...)): 8 calls, one scratch buffer
            return Lowered("out", lambda a, o: (
                f"{tanh_inner(a[0], a[1])}; add({a[1]}, 1.0, {a[1]}); multiply({a[1]}, {a[0]}, {o}); "
                f"multiply({o}, 0.5, {o})"), temps=[out])

        def gelu_grad(node, types, out):
            if out.dtype.kind != "f" or types[0] != out:
                return None
            # with h = 0.5 (1 + t) and d = k (1 + 3 c3 u^2): gelu' = h (1 + 2 u d (1 - h)),
            # since 0.5 (1 - t^2) = 2 h (1 - h). 15 calls, tanh once, two scratch buffers.
            return Lowered("out", lambda a, o: (
                f"{tanh_inner(a[0], a[1])}; multiply({a[0]}, {a[0]}, {o}); multiply({o}, {2 * k3!r}, {o}); "
                f"add({o}, {2 * k!r}, {o}); multiply({o}, {a[0]}, {o}); multiply({a[1]}, 0.5, {a[1]}); "
                f"add({a[1]}, 0.5, {a[1]}); subtract(1.0, {a[1]}, {a[2]}); multiply({o}, {a[2]}, {o}); "
                f"add({o}, 1.0, {o}); multiply({o}, {a[1]}, {o})"), temps=[out, out])

        LOWERINGS[GeluTanhGrad] = gelu_grad
        LOWERINGS[Gelu] = gelu
    except ImportError:  # pragma: no cover
        pass
    try:
        _register_nn()
    except ImportError:  # pragma: no cover
        pass
    try:
        from ..ops.fused import AddN, MatMulBiasAct

        def add_n(node, types, out):
            def emit(a, o):
                return "; ".join([f"add({a[0]}, {a[1]}, {o})"] + [f"add({o}, {x}, {o})" for x in a[2:]])

            # the first call writes the output: an operand read again later (add_n(a, x, a))
            # must not be the buffer it writes
            later = node.inputs[2:]
            first = tuple(k for k in (0, 1) if not any(v is node.inputs[k] for v in later))
            return Lowered("out", emit, inplace=_inplace_ok(types, out, first))

        def matmul_bias_act(node, types, out):
            a, w, b = types
            act = node.op.activation_op
            if not (a.ndim == w.ndim == 2 and a.dtype == w.dtype == b.dtype == out.dtype):
                return None
            act_low = LOWERINGS.get(type(act)) if act is not None else None
            act_stmt = None
            if act is not None:
                got = act_low(node, [out], out) if act_low is not None else None
                if got is None or got.kind != "out" or 0 not in got.inplace:
                    return None
                act_stmt = got.emit

            def emit(x, o):
                s = f"dot({x[0]}, {x[1]}, {o}); add({o}, {x[2]}, {o})"
                return s if act_stmt is None else f"{s}; {act_stmt([o], o)}"

            return Lowered("out", emit)

        LOWERINGS[AddN] = add_n
        LOWERINGS[MatMulBiasAct] = matmul_bias_act
    except ImportError:  # pragma: no cover
        pass


_OPTIONAL_DONE: list[bool] = []


def _rows_last_axis(types: list[TensorType], axis: int) -> bool:
    x = types[0]
    return x.ndim == 2 and axis in (1, -1) and x.dtype.kind == "f" and x.dtype.itemsize >= 4


def _register_nn() -> None:
    """Softmax, its cross-entropy and one-hot over the last axis of 2-D float logits: the
    max-subtracted formulas with out= into row-sized scratch, no temporaries per call."""
    from ..ops.indexing import OneHot
    from ..ops.nn import Softmax, SoftmaxCrossEntropy

    def softmax(node, types, out):
        if not _rows_last_axis(types, node.op.axis) or out.dtype != types[0].dtype:
            return None
        rows = TensorType((types[0].shape[0], 1), out.dtype)
        return Lowered("out", lambda a, o: (
            f"maximum_reduce({a[0]}, 1, None, {a[1]}, True); subtract({a[0]}, {a[1]}, {o}); exp({o}, {o}); "
            f"add_reduce({o}, 1, None, {a[2]}, True); divide({o}, {a[2]}, {o})"),
            temps=[rows, rows], inplace=_inplace_ok(types, out, (0,)))

    def cross_entropy(node, types, out):
        x, labels = types
        if not _rows_last_axis(types, node.op.axis) or labels.dtype.kind not in "iu" or out.dtype != x.dtype:
            return None
        n = x.shape[0]
        rows_name = f"rows_{n}"
        return Lowered("out", lambda a, o: (
            f"maximum_reduce({a[0]}, 1, None, {a[2]}, True); subtract({a[0]}, {a[2]}, {a[3]}); "
            f"exp({a[3]}, {a[4]}); add_reduce({a[4]}, 1, None, {o}); log({o}, {o}); "
            f"subtract({o}, {a[3]}[{rows_name}, {a[1]}], {o})"),
            names={rows_name: np.arange(n)},
            temps=[TensorType((n, 1), x.dtype), x, x])

    def one_hot(node, types, out):
        if types[0].ndim != 1 or node.op.axis not in (-1, 1):
            return None
        depth = node.op.depth
        name = f"arange_{depth}"
        return Lowered("out", lambda a, o: f"equal({a[0]}[:, None], {name}, {o})",
                       names={name: np.arange(depth)})

    LOWERINGS[Softmax] = softmax
    LOWERINGS[SoftmaxCrossEntropy] = cross_entropy
    LOWERINGS[OneHot] = one_hot

def _with_out(node: Node, types, out) -> Lowered | None:
    """Ops whose ``compute`` takes ``out=`` write into the planned buffer (no in-place)."""
    try:
        params = inspect.signature(node.op.compute).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return None
    if "out" not in params:
        return None
    return Lowered("out", lambda a, o: f"{{kernel}}({', '.join(a)}, out={o})")


def lower(node: Node, types: list[TensorType], out: TensorType) -> Lowered:
    """The lowering of ``node`` at concrete operand ``types`` and output type ``out``."""
    if not _OPTIONAL_DONE:
        _register_optional()
        _OPTIONAL_DONE.append(True)
    fn = LOWERINGS.get(type(node.op))
    got = fn(node, types, out) if fn is not None else None
    if got is None and out.is_concrete and all(t.is_concrete for t in types):
        got = _with_out(node, types, out)
    return got if got is not None else Lowered("call", lambda a, o: f"{{kernel}}({', '.join(a)})")
