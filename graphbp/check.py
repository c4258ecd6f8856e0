"""``gb.check_grad``: compare symbolic gradients with finite differences, and find the bad rule.

The check runs in float64 on a copy of the graph (parameters and constants are copied, so
the caller's values are never touched): for each differentiated value ``w`` it draws a
random direction ``v`` and compares the directional derivative ``<grad_w, v>`` with the
central difference ``(L(w + eps v) - L(w - eps v)) / (2 eps)``.

When a gradient disagrees, the graph is bisected down to single ops: every op with a float
output is re-checked on its own, on the actual intermediate values it saw, by comparing its
VJP rule (through ``gb.vjp``) with central differences of its kernel, for every float input.
Inputs a rule declares non-differentiable (``nondiff_inputs``, or a whole op with
``differentiable = False``) are checked too, against a VJP of zero: a rule that wrongly
drops a gradient is the culprit as surely as one that computes it wrong. The ops whose
rule fails are reported with the user's line that built them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import GraphbpError, GraphError
from .graph.node import Node
from .graph.traverse import toposort
from .graph.types import TensorType
from .autodiff import grad, vjp
from .ops import constant, input as input_, sum as sum_
from .ops.base import OpError, apply
from .ops.leaves import Constant, Input, Leaf, Param
from .runtime.program import compile as compile_

F64 = np.dtype(np.float64)


class GradCheckError(GraphbpError, AssertionError):
    """Symbolic and numerical gradients disagree; ``.result`` holds the details."""

    def __init__(self, message: str, result: "GradCheckResult") -> None:
        super().__init__(message)
        self.result = result


@dataclasses.dataclass
class Comparison:
    """One directional-derivative comparison."""

    what: str
    analytic: float
    numeric: float
    ok: bool


@dataclasses.dataclass
class OpFailure:
    """An op whose VJP rule disagrees with finite differences of its kernel."""

    node: Node
    input_index: int
    analytic: float
    numeric: float

    @property
    def declared_nondiff(self) -> bool:
        """The rule declares this input non-differentiable (its VJP is taken as zero)."""
        op = self.node.op
        return not op.differentiable or self.input_index in op.nondiff_inputs

    def describe(self) -> str:
        where = f" built at {self.node.origin}" if self.node.origin else ""
        how = " (declared non-differentiable, so taken as 0)" if self.declared_nondiff else ""
        return (f"{self.node.op.name} ({type(self.node.op).__name__}){where}: VJP for input "
                f"{self.input_index} gives {self.analytic:.8g}{how}, finite differences {self.numeric:.8g}")


@dataclasses.dataclass
class GradCheckResult:
    ok: bool
    comparisons: list[Comparison]
    culprits: list[OpFailure]

    def report(self) -> str:
        lines = [f"{'ok' if c.ok else 'MISMATCH'} {c.what}: analytic {c.analytic:.8g}, numeric {c.numeric:.8g}"
                 for c in self.comparisons]
        if not self.ok:
            if self.culprits:
                lines.append("wrong VJP rule(s), found by checking each op on its actual operands:")
                lines += [f"  {f.describe()}" for f in self.culprits]
            else:
                lines.append("every op's VJP passes on its own: the error is in how gradients are "
                             "combined (accumulation, unbroadcast) or in a rewrite pass")
        return "\n".join(lines)


def check_grad(
    f: Any,
    inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray] = (),
    *,
    wrt: Sequence[Node] | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    seed: int = 0,
    optimize: bool = False,
    raise_on_failure: bool = True,
) -> GradCheckResult:
    """Check the gradient of a scalar (or randomly contracted) output numerically.

    Parameters
    ----------
    f : callable, Program, or (output, wrt) tuple
        A function of input nodes returning an output node (called with one float64
        ``gb.input`` per array in ``inputs``); a compiled ``Program`` (its first output,
        fed ``inputs``); or an output node with the nodes to differentiate.
    inputs : sequence or mapping of arrays
        Values of the inputs (by position, or by input name).
    wrt : sequence of nodes, optional
        What to differentiate (default: every float input and trainable float parameter).
    eps, rtol, atol : float
        Step of the central differences and the tolerance
        ``|analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|)``.
    seed : int
        Seed of the random directions and cotangents.
    optimize : bool
        Compile with the rewrite passes (checks the passes too), off by default.
    raise_on_failure : bool
        Raise :class:`GradCheckError` (with the op whose rule is wrong) on a mismatch.
    """
    rng = np.random.default_rng(seed)
    out, feeds, wrt_nodes = _resolve(f, inputs, wrt)
    order = toposort([out] + list(wrt_nodes) + list(feeds))
    new = _retype(order)
    y = new[out]
    input_nodes = [new[n] for n in feeds]
    feed_values = [np.asarray(v, F64) if new[n].dtype == F64 else np.asarray(v) for n, v in feeds.items()]
    ws = [new[w] for w in wrt_nodes] if wrt_nodes else _default_wrt(toposort([y]))
    if not ws:
        raise GraphError("check_grad: nothing to differentiate (no float inputs or trainable float params)")
    shape = y.shape if y.type.is_concrete else compile_(input_nodes, [y], optimize=False)(*feed_values)[0].shape
    loss = _scalarize(y, shape, rng)

    grads = grad(loss, ws)
    prog = compile_(input_nodes, [loss, *grads], optimize=optimize)
    values = {w: _value(w, input_nodes, feed_values) for w in ws}

    def loss_at(w: Node, v: np.ndarray) -> float:
        if isinstance(w.op, Input):
            fv = [v if n is w else x for n, x in zip(input_nodes, feed_values)]
            return float(prog(*fv)[0])
        saved = w.op.value.copy()
        try:
            w.op.value[...] = v
            return float(prog(*feed_values)[0])
        finally:
            w.op.value[...] = saved

    _, *analytic_grads = prog(*feed_values)
    comparisons = []
    for w, g in zip(ws, analytic_grads):
        v = rng.standard_normal(w.op.value.shape if isinstance(w.op, Param) else values[w].shape)
        a = float(np.vdot(g, v))
        n = (loss_at(w, values[w] + eps * v) - loss_at(w, values[w] - eps * v)) / (2 * eps)
        comparisons.append(Comparison(f"d/d {w.name or w.op.name}", a, n, _close(a, n, rtol, atol)))
    ok = all(c.ok for c in comparisons)
    culprits = [] if ok else bisect(y, input_nodes, feed_values, eps=eps, rtol=rtol, atol=atol, seed=seed)
    result = GradCheckResult(ok, comparisons, culprits)
    if not ok and raise_on_failure:
        head = (f"check_grad: gradient mismatch; the wrong rule is in {culprits[0].node.op.name}"
                if culprits else "check_grad: gradient mismatch")
        raise GradCheckError(head + "\n" + result.report(), result)
    return result


def bisect(y: Node, inputs: Sequence[Node], feeds: Sequence[np.ndarray], *, eps: float = 1e-6,
           rtol: float = 1e-5, atol: float = 1e-8, seed: int = 0) -> list[OpFailure]:
    """Check every float-valued op under ``y`` on its own, on the values it actually sees,
    for every float input (including the ones its rule declares non-differentiable)."""
    order = [n for n in toposort([y]) if not isinstance(n.op, Leaf)]
    values = dict(zip(order, compile_(list(inputs), order, optimize=False)(*feeds))) if order else {}
    for n in toposort([y]):
        if isinstance(n.op, Leaf):
            values[n] = n.op.value if hasattr(n.op, "value") else feeds[list(inputs).index(n)]
    rng = np.random.default_rng(seed + 1)
    failures = []
    for node in order:
        if node.dtype.kind == "f":
            failures += _check_op(node, [np.asarray(values[i]) for i in node.inputs], rng, eps, rtol, atol)
    return failures


def _check_op(node: Node, args: list[np.ndarray], rng, eps, rtol, atol) -> list[OpFailure]:
    locals_ = [input_(f"operand{k}", a.shape, a.dtype) for k, a in enumerate(args)]
    local_out = apply(node.op, *locals_)
    idx = [k for k, a in enumerate(args) if a.dtype.kind == "f"]  # gb.vjp gives zeros where none flows
    if not idx:
        return []
    u = rng.standard_normal(np.shape(node.op.compute(*args)))
    grads = vjp(local_out, [locals_[k] for k in idx], u)
    gvals = compile_(locals_, grads, optimize=False)(*args)
    out = []
    for k, g in zip(idx, gvals):
        v = rng.standard_normal(args[k].shape)

        def f_at(x: np.ndarray, k: int = k) -> float:
            a2 = list(args)
            a2[k] = x
            return float(np.sum(u * node.op.compute(*a2)))

        a = float(np.vdot(g, v))
        n = (f_at(args[k] + eps * v) - f_at(args[k] - eps * v)) / (2 * eps)
        if not _close(a, n, rtol, atol):
            out.append(OpFailure(node, k, a, n))
    return out


# ------------------------------------------------------------------------------ helpers
def _close(a: float, n: float, rtol: float, atol: float) -> bool:
    return bool(np.isfinite(a) and np.isfinite(n) and abs(a - n) <= atol + rtol * max(abs(a), abs(n)))


def _resolve(f: Any, inputs: Any, wrt: Sequence[Node] | None) -> tuple[Node, dict[Node, np.ndarray], list[Node]]:
    from .runtime.program import Program

    if isinstance(f, Program):
        out = getattr(f, "user_outputs", f.outputs)[0]
        feeds = _bind(f.inputs, inputs)
    elif isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], Node):
        out, wrt_ = f
        wrt = [wrt_] if isinstance(wrt_, Node) else list(wrt_)
        ins = [n for n in toposort([out]) if isinstance(n.op, Input)]
        feeds = _bind(ins, inputs)
    elif callable(f):
        if isinstance(inputs, Mapping):
            nodes = {k: input_(k, np.shape(v), _float64(v)) for k, v in inputs.items()}
            out = f(**nodes)
            feeds = {nodes[k]: np.asarray(v) for k, v in inputs.items()}
        else:
            nodes_l = [input_(f"x{k}", np.shape(v), _float64(v)) for k, v in enumerate(inputs)]
            out = f(*nodes_l)
            feeds = {n: np.asarray(v) for n, v in zip(nodes_l, inputs)}
        if not isinstance(out, Node):
            raise GraphError(f"check_grad: f must return a node, got {type(out).__name__}")
    else:
        raise GraphError("check_grad: f must be a callable, a Program or an (output, wrt) tuple")
    return out, feeds, list(wrt or [])


def _float64(v: Any) -> np.dtype:
    dt = np.asarray(v).dtype
    return F64 if dt.kind == "f" else dt


def _bind(ins: Sequence[Node], inputs: Any) -> dict[Node, np.ndarray]:
    if isinstance(inputs, Mapping):
        names = {n.op.input_name: n for n in ins}
        missing = sorted(set(names) - set(inputs))
        if missing:
            raise GraphError(f"check_grad: no values for inputs {missing}")
        return {names[k]: np.asarray(inputs[k]) for k in names}
    vals = list(inputs)
    if len(vals) != len(ins):
        raise GraphError(f"check_grad: {len(ins)} inputs ({[n.op.input_name for n in ins]}) but {len(vals)} values")
    return {n: np.asarray(v) for n, v in zip(ins, vals)}


def _retype(order: list[Node]) -> dict[Node, Node]:
    """A float64 copy of the graph (same ops, names, scopes, lines; copied leaf values)."""
    new: dict[Node, Node] = {}
    for n in order:
        op = n.op
        if isinstance(op, Input):
            t = TensorType(n.shape, F64 if n.dtype.kind == "f" else n.dtype)
            op2, t2 = Input(op.input_name, t), t
        elif isinstance(op, (Param, Constant)):
            val = op.value.astype(F64) if op.value.dtype.kind == "f" else op.value.copy()
            op2 = Param(op.param_name, val, op.trainable) if isinstance(op, Param) else Constant(val)
            t2 = TensorType(val.shape, val.dtype)
        else:
            changes = {k: _f64_dtype(v) for k, v in op.params().items() if "dtype" in k and _is_float_dtype(v)}
            op2 = dataclasses.replace(op, **changes) if changes else op
            try:
                t2 = op2.infer(*(new[i].type for i in n.inputs))
            except OpError as e:
                raise GraphError(f"check_grad: cannot retype {n.describe()} to float64: {e.reason}") from None
        node = Node(op2, tuple(new[i] for i in n.inputs), t2, name=n.name, scope=n.scope,
                    origin=n.origin or _NOWHERE, provenance=n.provenance)
        node.origin = n.origin
        new[n] = node
    return new


def _is_float_dtype(v: Any) -> bool:
    try:
        return v is not None and np.dtype(v).kind == "f"
    except TypeError:
        return False


def _f64_dtype(v: Any) -> Any:
    return F64.name if isinstance(v, str) else F64


def _default_wrt(order: list[Node]) -> list[Node]:
    return [n for n in order if n.dtype.kind == "f" and (
        isinstance(n.op, Input) or (isinstance(n.op, Param) and n.op.trainable))]


def _scalarize(y: Node, shape: tuple, rng) -> Node:
    """A scalar output as is; otherwise ``sum(y * u)`` with a random cotangent ``u``."""
    if y.dtype.kind != "f":
        raise GraphError(f"check_grad: the output {y.describe()} is not a float value")
    if y.shape == ():
        return y
    return sum_(y * constant(rng.standard_normal(shape)))


def _value(w: Node, inputs: Sequence[Node], feeds: Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(w.op, Input):
        return feeds[list(inputs).index(w)]
    if isinstance(w.op, Param):
        return w.op.value.copy()
    raise GraphError(f"check_grad: can only differentiate inputs and parameters, got {w.describe()}")


from .graph.source import SourceLocation  # noqa: E402

_NOWHERE = SourceLocation("<check_grad>", 0, "<check_grad>")
