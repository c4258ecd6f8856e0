"""Static NaN-hazard analysis: singular ops behind a ``where`` mask.

``where(x > 0, sqrt(x), 0)`` is finite, but its gradient is not: the where's VJP sends
``0`` to ``sqrt`` at ``x = 0`` and sqrt's rule computes ``0 * 0.5 / sqrt(0) = 0 * inf = NaN``.
The forward "double where" (``sqrt(where(c, x, 1))``) only helps *before* differentiation;
a compile pass sees the gradient graph already built. So this pass applies the same idea to
the gradient graph: when every forward use of a singular node ``n = f(x)`` goes (through
shape-preserving elementwise ops) into the same branch of ``where`` nodes with one
condition ``c``, the true cotangent of ``n`` is exactly zero wherever ``c`` selects the
other branch. Each cotangent ``n``'s VJP rule emits (the nodes with provenance
``(n, "vjp", i)`` that leave that rule) is wrapped in ``where(c, cotangent, 0)``, which turns
the spurious ``0 * inf`` back into the exact ``0`` and leaves every other element unchanged.
Must run before passes that rebuild nodes (provenance points at the original forward nodes).
"""

from __future__ import annotations

import dataclasses

from ..graph.node import Node
from ..graph.traverse import toposort
from ..graph.types import broadcast_shapes
from ..ops import elementwise as ew
from ..ops.base import apply
from ..ops.leaves import constant
from .core import LogEntry, PassResult, rebuild, stamp_fresh
from ..graph.node import _serials

SINGULAR = (ew.Sqrt, ew.Log, ew.Log1p, ew.Divide, ew.Power, ew.Reciprocal)
"""Ops whose derivative is infinite (or undefined) at points a mask typically excludes."""


@dataclasses.dataclass(frozen=True)
class Hazard:
    """A singular op guarded by a ``where``: what, where the user built it, what was done."""

    node: Node
    guard: Node
    action: str

    def __str__(self) -> str:
        where = f" built at {self.node.origin}" if self.node.origin else ""
        return f"{self.node.op.name}{where} is masked by where ({self.guard.inputs[0].op.name}); {self.action}"


def _guard(n: Node, fwd_users: dict[Node, list[Node]]):
    """``(condition, branch)`` when all forward uses of ``n`` flow into one where branch."""
    cond = branch = None
    stack = [n]
    seen = set()
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        us = fwd_users.get(m, [])
        if not us:
            return None  # a root or unused: its cotangent is not masked
        for u in us:
            if isinstance(u.op, ew.Where):
                c, a, b = u.inputs
                if c is m or (a is m) == (b is m):
                    return None
                br = 1 if a is m else 2
                if cond is None:
                    cond, branch = c, br
                elif c is not cond or br != branch:
                    return None
            elif getattr(u.op, "elementwise", False) and u.shape == n.shape and u.inputs[0].shape is not None:
                stack.append(u)
            else:
                return None
    if cond is None:
        return None
    try:
        if broadcast_shapes(cond.shape, n.shape) != n.shape:
            return None
    except ValueError:
        return None
    return cond, branch


def nan_guard(roots: list[Node], pass_name: str = "nan_guard") -> tuple[PassResult, list[Hazard]]:
    """Find guarded singular ops and mask their cotangents (see the module docstring)."""
    order = toposort(roots)
    fwd_users: dict[Node, list[Node]] = {}
    vjp_nodes: dict[int, list[Node]] = {}
    # the forward graph the gradient was derived from, even where only the gradient is
    # compiled (gb.grad alone does not reach the where that masks it): provenance names it
    fwd_roots = list(roots) + [p.forward for n in order for p in n.provenance]
    for n in toposort(list(dict.fromkeys(fwd_roots))):
        if not n.provenance:
            for i in n.inputs:
                fwd_users.setdefault(i, []).append(n)
    for n in order:
        for p in n.provenance:
            if p.rule == "vjp":
                vjp_nodes.setdefault(id(p.forward), []).append(n)
    hazards: list[Hazard] = []
    replace: dict[Node, Node] = {}
    log: list[LogEntry] = []
    for n in order:
        if n.provenance or not isinstance(n.op, SINGULAR):
            continue
        g = _guard(n, fwd_users)
        if g is None:
            continue
        cond, branch = g
        group = vjp_nodes.get(id(n), [])
        gset = set(group)
        users_in_graph: dict[Node, bool] = {}
        # a cotangent leaving the rule: a group node read by a node outside the group
        for m in order:
            for i in m.inputs:
                if i in gset and m not in gset:
                    users_in_graph[i] = True
        exits = [m for m in group if m in users_in_graph or m in roots]
        guard_node = fwd_users[n][0]
        masked = 0
        for e in exits:
            if e.dtype.kind != "f":
                continue
            watermark = next(_serials)
            zero = constant(0, dtype=e.dtype)
            new = apply(ew.Where(), cond, e, zero) if branch == 1 else apply(ew.Where(), cond, zero, e)
            if new.type != e.type:
                continue
            stamp_fresh(new, watermark, e, e.provenance)
            replace[e] = new
            log.append(LogEntry(pass_name, "mask_cotangent", (e, n), new))
            masked += 1
        action = (f"masked {masked} cotangent(s) of its gradient so the untaken branch gives 0, not NaN"
                  if masked else "no gradient reads it (forward value is already safe)")
        hazards.append(Hazard(n, guard_node, action))
    if not replace:
        return PassResult(list(roots), log), hazards
    new_roots = _substitute(order, roots, replace)
    return PassResult(new_roots, log), hazards


def _substitute(order: list[Node], roots: list[Node], replace: dict[Node, Node]) -> list[Node]:
    """Rebuild users of replaced nodes (the replacements read the originals, not themselves)."""
    new: dict[Node, Node] = {}
    for n in order:
        ins = tuple(new[i] for i in n.inputs)
        cur = n if all(a is b for a, b in zip(ins, n.inputs)) else rebuild(n, ins)
        if n in replace:
            w = replace[n]
            c, a, b = w.inputs
            cur = rebuild(w, (c, cur, b) if a is n else (c, a, cur))
        new[n] = cur
    return [new[r] for r in roots]
