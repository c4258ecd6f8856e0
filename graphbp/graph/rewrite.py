"""Rebuilding graphs without mutating them: the one copy-with-new-inputs helper and the
one topological rewrite walk every pass (and autodiff's provenance narrowing) uses.

Nodes are immutable, so "changing" a graph means building new nodes for everything whose
inputs changed, keeping a memo ``old -> new``; the untouched part of the graph is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .context import Provenance
from .node import Node
from .traverse import toposort

Visit = Callable[[Node, tuple[Node, ...], Mapping[Node, Node]], "Node | None"]


def rebuild(node: Node, inputs: tuple[Node, ...], *,
            provenance: tuple[Provenance, ...] | None = None) -> Node:
    """A copy of ``node`` over new ``inputs``: same op, type, name, scope and user line;
    same provenance unless ``provenance`` is given."""
    return Node(node.op, inputs, node.type, name=node.name, origin=node.origin, scope=node.scope,
                provenance=node.provenance if provenance is None else provenance)


def rewrite(roots: Sequence[Node], visit: Visit | None = None, *,
            order: list[Node] | None = None, bodies: Callable[[list[Node]], list[Node]] | None = None
            ) -> list[Node]:
    """The roots after replacing nodes, in one walk in topological order.

    For each node, its inputs are first mapped to their replacements (``ins``); then
    ``visit(node, ins, new)`` may return a replacement, built over ``ins`` or over the
    replacements ``new[m]`` of any earlier node ``m``.
    Otherwise the node is kept when its inputs are unchanged and rebuilt over ``ins`` when
    they are not, and, given ``bodies`` (a pass over a body's outputs), the bodies it holds
    are rewritten by it (:func:`step_into`). ``order`` is the roots' topological order when
    the caller has it.
    """
    new: dict[Node, Node] = {}
    for n in toposort(roots) if order is None else order:
        ins = tuple(map(new.__getitem__, n.inputs))
        out = visit(n, ins, new) if visit is not None else None
        if out is None:
            out = n if ins == n.inputs else rebuild(n, ins)  # tuples of nodes compare by identity
            if bodies is not None:
                out = step_into(out, bodies)
        new[n] = out
    return [new[r] for r in roots]


def step_into(node: Node, inside: Callable[[list[Node]], list[Node]]) -> Node:
    """``node`` with ``inside`` (a pass over a graph's outputs) run in each body it holds
    (``op.subgraphs()``; nested bodies are reached when ``inside`` steps in again), rebuilt
    over the new bodies when one changed. The one way passes step into bodies: a body is
    rewritten on its own, its placeholders standing for the operands."""
    found = node.op.subgraphs()
    if not found:
        return node
    op = node.op.replace_subgraphs([b.map(inside) for b in found])
    if op is node.op:
        return node
    return Node(op, node.inputs, node.type, name=node.name, origin=node.origin, scope=node.scope,
                provenance=node.provenance)


def restamp(out: Node, fresh: Callable[[Node], bool], provenance: tuple[Provenance, ...],
            memo: dict[Node, Node]) -> Node:
    """``out`` with the ``fresh`` nodes feeding it rebuilt under ``provenance``.

    The walk follows inputs only through ``fresh`` nodes (nodes a rule just built), so it
    costs the size of that sub-graph, not of the whole graph. ``memo`` maps nodes already
    rebuilt (by an earlier call) to their copies, which are reused as they are.
    """
    if not fresh(out):
        return out
    stack = [(out, False)]
    while stack:
        n, expanded = stack.pop()
        if n in memo:
            continue
        if not expanded:
            stack.append((n, True))
            stack.extend((i, False) for i in n.inputs if fresh(i) and i not in memo)
            continue
        ins = tuple([memo.get(i, i) for i in n.inputs])
        memo[n] = rebuild(n, ins, provenance=provenance)
    return memo[out]
