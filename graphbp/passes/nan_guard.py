"""Static NaN-hazard analysis: singular ops behind a ``where`` mask.

``where(x > 0, sqrt(x), 0)`` is finite, but its gradient is not: the where's VJP sends
``0`` to ``sqrt`` at ``x = 0`` and sqrt's rule computes ``0 * 0.5 / sqrt(0) = 0 * inf = NaN``.
The forward "double where" (``sqrt(where(c, x, 1))``) only helps *before* differentiation;
a compile pass sees the gradient graph already built. So this pass applies the same idea to
the gradient graph: when every forward use of a singular node ``n = f(x)`` (an op with
``singular_inputs``) goes, through shape-preserving elementwise ops and re-views (reshape,
expand_dims, squeeze, transpose), into the same branch of ``where`` nodes with one condition
``c``, the true cotangent of ``n`` is exactly zero wherever ``c`` selects the other branch.
Each cotangent ``n``'s VJP rule emits (the nodes with provenance ``(n, "vjp", i)`` that
leave that rule) is wrapped in ``where(c', cotangent, 0)``, ``c'`` being ``c`` viewed back
into ``n``'s shape. That turns the spurious ``0 * inf`` back into the exact ``0`` and leaves
every other element unchanged.

The forward uses are read from the forward graph the gradients were derived from (their
provenance names its nodes), not from the program's outputs: a program that outputs only
``gb.grad(y, x)`` does not contain ``y`` or its ``where``. Must run before passes that
rebuild nodes (provenance points at the original forward nodes). Bodies of scan and cond
nodes get the same analysis on their own graph (the pullback body of a gradient scan holds
the step's forward nodes and their cotangents).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ShapeError
from ..graph.context import stamp
from ..graph.node import Node
from ..graph.rewrite import rebuild, rewrite
from ..graph.traverse import toposort
from ..graph.types import broadcast_shapes
from ..ops import elementwise as ew
from ..ops import shape as sh
from ..ops.base import apply
from ..ops.leaves import constant
from .core import LogEntry, PassResult, holds_bodies, in_bodies

_ORDER_VIEWS = (sh.Reshape, sh.ExpandDims, sh.Squeeze)
"""Re-views that keep the element order: a mask maps back by reshaping."""


@dataclasses.dataclass(frozen=True)
class Hazard:
    """A singular op guarded by a ``where``: what, where the user built it, what was done."""

    node: Node
    guard: Node
    action: str

    def __str__(self) -> str:
        where = f" built at {self.node.origin}" if self.node.origin else ""
        return f"{self.node.op.name}{where} is masked by where ({self.guard.inputs[0].op.name}); {self.action}"


@dataclasses.dataclass(frozen=True)
class _Guard:
    cond: Node
    branch: int  # 1: n flows into the where's "true" operand, 2: into its "false" operand
    where: Node
    views: tuple[Node, ...]  # the re-views from n to the where operand, in order


def _guard(n: Node, fwd_users: dict[Node, list[Node]]) -> _Guard | None:
    """The guard when all forward uses of ``n`` flow into one where branch (one condition,
    one chain of re-views)."""
    found: _Guard | None = None
    stack: list[tuple[Node, tuple[Node, ...]]] = [(n, ())]
    seen: set[Node] = set()
    while stack:
        m, views = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        us = fwd_users.get(m, [])
        if not us:
            return None  # an output (the loss) or unused: its cotangent is not masked
        for u in us:
            if isinstance(u.op, ew.Where):
                c, a, b = u.inputs
                if c is m or (a is m) == (b is m):
                    return None
                g = _Guard(c, 1 if a is m else 2, u, views)
                if found is None:
                    found = g
                elif c is not found.cond or g.branch != found.branch or [v.op for v in views] != [
                        v.op for v in found.views]:
                    return None
            elif u.op.elementwise and u.shape == m.shape and u.inputs[0].shape is not None:
                stack.append((u, views))
            elif isinstance(u.op, (*_ORDER_VIEWS, sh.Transpose)) and u.inputs[0] is m:
                stack.append((u, views + (u,)))
            else:
                return None
    if found is None:
        return None
    target = found.views[-1] if found.views else n
    try:
        if broadcast_shapes(found.cond.shape, target.shape) != target.shape:
            return None
    except ValueError:
        return None
    return found


def _mask_in_shape_of(g: _Guard, n: Node) -> Node:
    """The where's condition, broadcast to the guarded operand and viewed back into ``n``'s
    shape (undoing the re-views in reverse)."""
    c = g.cond
    target = g.views[-1] if g.views else n
    if c.shape != target.shape:
        c = sh.broadcast_to(c, target.shape, like=None if target.type.is_concrete else target)
    for v in reversed(g.views):
        src = v.inputs[0]
        if isinstance(v.op, sh.Transpose):
            c = sh.transpose(c, tuple(int(a) for a in np.argsort(v.op.axes)))
        elif src.type.is_concrete:
            c = sh.reshape(c, src.shape)
        else:
            c = sh.reshape_like(c, src)
    return c


def forward_graph(order: list[Node]) -> list[Node]:
    """The forward nodes of the program plus the forward graph its gradients came from."""
    sources = [n for n in order if not n.provenance]
    sources.extend(p.forward for n in order for p in n.provenance)
    return [n for n in toposort(sources) if not n.provenance]


def nan_guard(roots: list[Node], pass_name: str = "nan_guard", order: list[Node] | None = None
              ) -> tuple[PassResult, list[Hazard]]:
    """Find guarded singular ops and mask their cotangents (see the module docstring)."""
    order = toposort(roots) if order is None else order
    hazards: list[Hazard] = []
    log: list[LogEntry] = []

    def guard_body(body_roots: list[Node]) -> PassResult:  # a scan/cond body: the same analysis
        res, found = nan_guard(body_roots, pass_name)
        hazards.extend(found)
        return res

    inside = in_bodies(guard_body, log) if holds_bodies(order) else None
    candidates = [n for n in order if not n.provenance and n.op.singular_inputs]
    candidates += [p.forward for n in order for p in n.provenance if p.rule == "vjp" and p.forward.op.singular_inputs]
    if not candidates:  # the common case: nothing to guard, no forward graph to walk
        if inside is None:
            return PassResult(list(roots), [], order), []
        return PassResult(rewrite(roots, order=order, bodies=inside), log), hazards
    forward = forward_graph(order)
    fwd_users: dict[Node, list[Node]] = {}
    for n in forward:
        for i in n.inputs:
            fwd_users.setdefault(i, []).append(n)
    vjp_nodes: dict[Node, list[Node]] = {}
    for n in order:
        for p in n.provenance:
            if p.rule == "vjp":
                vjp_nodes.setdefault(p.forward, []).append(n)
    read_by: dict[Node, list[Node]] = {}  # node -> its users in the program, once needed
    rootset, program = set(roots), set(order)
    replace: dict[Node, Node] = {}
    for n in forward:
        if not n.op.singular_inputs:
            continue
        g = _guard(n, fwd_users)
        if g is None:
            continue
        group = vjp_nodes.get(n, [])
        if not group and n not in program:
            continue  # only the loss's graph holds it and no gradient here reads it
        gset = set(group)
        if group and not read_by:
            for m in order:
                for i in m.inputs:
                    read_by.setdefault(i, []).append(m)
        # a cotangent leaving the rule: a group node read outside the group, or a root
        exits = [m for m in group if m in rootset or any(u not in gset for u in read_by.get(m, ()))]
        masked = 0
        for e in exits:
            if e.dtype.kind != "f":
                continue
            with stamp(origin=e.origin, scope=e.scope, provenance=e.provenance):
                try:
                    cond = _mask_in_shape_of(g, n)
                except ShapeError:  # a view the mask cannot follow back: leave it
                    continue
                zero = constant(0, dtype=e.dtype)
                new = apply(ew.Where(), cond, e, zero) if g.branch == 1 else apply(ew.Where(), cond, zero, e)
            if new.type != e.type:
                continue
            replace[e] = new
            log.append(LogEntry(pass_name, "mask_cotangent", (e, n), new))
            masked += 1
        action = (f"masked {masked} cotangent(s) of its gradient so the untaken branch gives 0, not NaN"
                  if masked else "no gradient reads it (forward value is already safe)")
        hazards.append(Hazard(n, g.where, action))
    if not replace and inside is None:
        return PassResult(list(roots), log), hazards
    return PassResult(rewrite(roots, _substituter(replace), order=order, bodies=inside), log), hazards


def _substituter(replace: dict[Node, Node]):
    """A rewrite visitor putting each mask over the (rebuilt) cotangent it wraps."""
    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        w = replace.get(n)
        if w is None:
            return None
        cur = n if ins == n.inputs else rebuild(n, ins)
        c, a, b = w.inputs
        return rebuild(w, (c, cur, b) if a is n else (c, a, cur))

    return visit
