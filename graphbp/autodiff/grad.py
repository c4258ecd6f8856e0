"""Derive the gradient graph: walk the forward graph in reverse, apply each op's VJP rule.

Rules emit ordinary nodes through the public builders, so the result can be rendered,
optimised, compiled and differentiated again. This module owns the two things every rule
would otherwise repeat: summing a broadcast operand's cotangent back to its shape, and
summing the partial cotangents of a node used several times. Every node it creates is
stamped with a :class:`~graphbp.graph.context.Provenance` naming the forward node and rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import DTypeError, GraphError, ShapeError, UnusedParameterWarning
from ..graph.context import Provenance, provenance, scope_path
from ..graph.gcpause import without_gc
from ..graph.node import Node
from ..graph.rewrite import restamp
from ..graph.source import user_stacklevel
from ..graph.traverse import depends_on, toposort
from ..graph.types import TensorType, TupleType, format_shape
from ..ops import add, cast_to, constant, sum as reduce_sum
from ..ops.control import TupleGet
from ..ops.base import as_node
from ..ops.creation import zeros_like
from ..ops.leaves import Param


def _is_float(node: Node) -> bool:
    return node.dtype.kind == "f"


def unbroadcast(g: Node, target: TensorType) -> Node:
    """Sum ``g`` over the axes broadcasting added or stretched, then cast to ``target``'s dtype.

    A dim the target declares as unknown (``None``) is assumed to equal ``g``'s there.
    """
    lead = g.ndim - target.ndim
    if lead < 0:
        reason = f"gradient {format_shape(g.shape)} has fewer dims than its operand {format_shape(target.shape)}"
        from ..graph.context import current_provenance

        prov = current_provenance()  # name the forward op whose rule returned it (user's line)
        if prov:
            fwd = prov[0].forward
            where = f" built at {fwd.origin}" if fwd.origin else ""
            reason = f"while deriving the gradient of {fwd.op.name}{where}:\n{reason} ({prov[0].describe()})"
        raise ShapeError(reason)
    stretched = tuple(
        lead + i for i, d in enumerate(target.shape) if d == 1 and g.shape[lead + i] != 1
    )
    if stretched:
        g = reduce_sum(g, axis=stretched, keepdims=True)
    if lead:
        g = reduce_sum(g, axis=tuple(range(lead)))
    if g.dtype != target.dtype:
        g = cast_to(g, target.dtype)
    return g


def _accumulate(parts: list[Node]) -> Node:
    total = parts[0]
    for p in parts[1:]:
        total = add(total, p)
    return total


def vjp(outputs: Node | Sequence[Node], wrt: Node | Sequence[Node], cotangents) -> list[Node]:
    """Vector-Jacobian products: ``sum_k cotangent_k . d output_k / d w`` for each ``w`` in ``wrt``.

    Parameters
    ----------
    outputs : node or sequence of nodes
    wrt : node or sequence of nodes
        Float nodes to differentiate with respect to. One the outputs do not depend on
        gets zeros of its shape; an integer-typed one is an error.
    cotangents : node, array or sequence of them
        One per output, of its shape (arrays and scalars become constants).

    Returns
    -------
    list of Node
        The gradient nodes, one per ``wrt``, in order.
    """
    outs = [outputs] if isinstance(outputs, Node) else list(outputs)
    ws = [wrt] if isinstance(wrt, Node) else list(wrt)
    cts = [cotangents] if isinstance(outputs, Node) else list(cotangents)
    if len(cts) != len(outs):
        raise GraphError(f"vjp: {len(outs)} outputs but {len(cts)} cotangents")
    seeded: list[tuple[Node, Node]] = []
    for out, ct in zip(outs, cts):
        with provenance(Provenance(out, "seed")), scope_path(out.scope):
            ct = as_node(ct, like=out)
        if ct.shape != out.shape and not (ct.type.is_concrete and out.type.is_concrete and ct.shape == out.shape):
            if len(ct.shape) != len(out.shape) or any(
                a is not None and b is not None and a != b for a, b in zip(ct.shape, out.shape)
            ):
                raise ShapeError(
                    f"vjp: cotangent of shape {format_shape(ct.shape)} does not match output {out.describe()}"
                )
        seeded.append((out, ct))
    return _backprop(seeded, ws)


def grad(y: Node, wrt: Node | Sequence[Node], *, unused: str = "warn") -> Node | list[Node]:
    """The gradient of scalar ``y`` with respect to each node of ``wrt`` (same structure back).

    ``unused`` says what to do about a parameter ``y`` does not depend on (its gradient is
    zeros, which usually means a layer was left out of the model): ``"warn"`` (an
    :class:`~graphbp.errors.UnusedParameterWarning` naming it, once per call site),
    ``"raise"`` (a ``GraphError``) or ``"ignore"``."""
    if not isinstance(y, Node):
        raise GraphError(f"grad: y must be a node, got {type(y).__name__}")
    if y.shape != ():
        raise ShapeError(
            f"grad: y must be a scalar, but {y.describe()} has shape {format_shape(y.shape)}; "
            "reduce it first (gb.sum / gb.mean) or use gb.vjp with a cotangent"
        )
    if not _is_float(y):
        raise DTypeError(f"grad: y must be a float scalar, got {y.describe()}")
    with provenance(Provenance(y, "seed")), scope_path(y.scope):
        seed = constant(np.ones((), y.dtype), name="seed")
    single = isinstance(wrt, Node)
    result = _backprop([(y, seed)], [wrt] if single else list(wrt), unused)
    return result[0] if single else result


@without_gc  # a deep graph's gradient: the cyclic GC would rescan every node per allocation burst
def _backprop(seeded: list[tuple[Node, Node]], wrt: list[Node], unused: str = "ignore") -> list[Node]:
    if unused not in ("warn", "raise", "ignore"):
        raise GraphError(f"unused must be 'warn', 'raise' or 'ignore', got {unused!r}")
    for w in wrt:
        if not isinstance(w, Node):
            raise GraphError(f"wrt entries must be nodes, got {type(w).__name__}")
        if not _is_float(w):
            raise DTypeError(
                f"cannot differentiate with respect to {w.describe()}: gradients only flow into float values"
            )
    order = toposort([o for o, _ in seeded])
    relevant = depends_on(order, wrt)
    reached = set(order)
    _report_unused([w for w in wrt if w not in reached and isinstance(w.op, Param)], seeded[0][0], unused)
    partials: dict[Node, list[Node]] = {}
    for out, ct in seeded:
        partials.setdefault(out, []).append(ct)
    slots: dict[Node, dict[int, list[Node]]] = {}  # multi-output node -> output index -> partials
    total: dict[Node, Node] = {}
    wanted = set(wrt)
    for node in reversed(order):
        if isinstance(node.type, TupleType):
            gathered = slots.pop(node, None)
            if gathered is None or node not in relevant:
                continue
            with provenance(Provenance(node, "accumulate")), scope_path(node.scope):
                g = tuple(_accumulate(gathered[k]) if k in gathered else None for k in range(len(node.type)))
            _pull(node, g, relevant, partials)
            continue
        parts = partials.pop(node, None)
        if parts is None or node not in relevant:
            continue
        with provenance(Provenance(node, "accumulate")), scope_path(node.scope):
            g = _accumulate(parts)
        if node in wanted:
            total[node] = g
        if isinstance(node.op, TupleGet):  # a projection: its cotangent joins its tuple's
            slots.setdefault(node.inputs[0], {}).setdefault(node.op.index, []).append(g)
            continue
        if not node.inputs or not node.op.differentiable:
            continue
        _pull(node, g, relevant, partials)
    result = []
    for w in wrt:
        if w in total:
            result.append(total[w])
        else:
            with provenance(Provenance(w, "zeros")), scope_path(w.scope):
                result.append(zeros_like(w))
    return result


def _pull(node: Node, g, relevant: set[Node], partials: dict[Node, list[Node]]) -> None:
    """Apply ``node``'s VJP rule to its cotangent ``g`` (a tuple for a multi-output node,
    ``None`` entries being symbolic zeros) and file each input's share, summed back to its shape."""
    skip = node.op.nondiff_inputs
    wanted = [i for i, inp in enumerate(node.inputs) if inp in relevant and _is_float(inp) and i not in skip]
    # One cotangent wanted (a unary op, or one differentiable operand): the rule's nodes get
    # its input index at construction; others are restamped per cotangent after the rule.
    if not wanted:
        return  # only integer or constant operands: no cotangent to pull
    single = wanted[0] if len(wanted) == 1 else None
    with provenance(Provenance(node, "vjp", single)), scope_path(node.scope):
        rule_out = tuple(node.op.vjp(node, g))
    if len(rule_out) != len(node.inputs):
        raise GraphError(
            f"vjp rule of {node.op.name} returned {len(rule_out)} cotangents for {len(node.inputs)} inputs"
        )
    narrowed: dict[Node, Node] = {}
    for i in wanted:
        inp, gi = node.inputs[i], rule_out[i]
        if gi is None:
            continue
        if single is None:
            gi = _restamp(gi, node, i, narrowed)
        with provenance(Provenance(node, "unbroadcast", i)), scope_path(node.scope):
            gi = unbroadcast(gi, inp.type)
        partials.setdefault(inp, []).append(gi)


def _report_unused(params: list[Node], y: Node, unused: str) -> None:
    """Warn about (or refuse) parameters ``y`` does not depend on, at the user's call line."""
    if not params or unused == "ignore":
        return
    names = ", ".join(f"{p.name!r}" + (f" (created at {p.origin})" if p.origin else "") for p in params)
    msg = (f"the loss {y.describe()} does not depend on parameter(s) {names}: their gradient "
           "is zero and an optimiser would never change them (pass unused='ignore' to allow this)")
    if unused == "raise":
        raise GraphError(msg)
    warnings.warn(msg, UnusedParameterWarning, stacklevel=user_stacklevel())


def _restamp(gi: Node, node: Node, i: int, narrowed: dict[Node, Node]) -> Node:
    """Cotangent ``gi`` with the input index in the provenance of the nodes made for it.

    The rule ran once for all inputs under ``Provenance(node, "vjp")``; the new nodes that
    feed cotangent ``i`` are rebuilt (never edited) with ``Provenance(node, "vjp", i)``.
    A node feeding several cotangents keeps the first index (``narrowed`` is shared).
    """
    def fresh(n: Node) -> bool:
        p = n.provenance
        return bool(p) and p[0].forward is node and p[0].rule == "vjp" and p[0].input_index is None

    return restamp(gi, fresh, (Provenance(node, "vjp", i),), narrowed)
