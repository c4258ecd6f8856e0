"""Specialize: n-ary gradient accumulation, matmul+bias+activation.

These passes need use counts (a node read twice must stay materialised), so each runs as
one sweep over the topological order with a ``users`` table: linear in the graph size.
Each steps into the bodies of scan and cond nodes (``rewrite(bodies=...)``), where it runs
on the body as on any graph.
Fusion never crosses the forward/backward boundary: a fused node is all-forward or
all-gradient, so the schedule split and the saved activations stay as autodiff made them.
The ops they make (``add_n``, ``matmul_bias_act``, ``conv_bias_act``) are ordinary ops in :mod:`graphbp.ops.fused`.
"""

from __future__ import annotations

from ..graph.context import stamp
from ..graph.node import Node
from ..graph.traverse import toposort
from ..ops import elementwise as ew
from ..ops.base import Op, apply
from ..ops.conv import Conv2D
from ..ops.fused import MATMUL_ACTIVATIONS, AddN, ConvBiasAct, MatMulBiasAct
from ..ops.leaves import Leaf
from ..ops.linalg import MatMul
from .core import LogEntry, PassResult, holds_bodies, in_bodies, rewrite, union_provenance


# ------------------------------------------------------------------ accumulation
def _is_add(n: Node) -> bool:
    return isinstance(n.op, (ew.Add, AddN))


def _uniform(n: Node) -> bool:
    return all(i.type == n.type for i in n.inputs)


def flatten_adds(roots: list[Node], order: list[Node] | None = None) -> PassResult:
    """Trees of same-typed adds whose inner adds have one use become one ``add_n``.

    Autodiff accumulates fan-out gradients as a chain of binary adds; a parameter shared by
    k layers gets a chain of k adds. One sweep with use counts finds each tree's root and
    collects its terms with an explicit stack, so the pass is linear in the graph size (a
    rule that absorbed one level per application would copy the term list k times).
    """
    order = toposort(roots) if order is None else order
    uses: dict[Node, int] = {}
    user: dict[Node, Node] = {}
    for n in order:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
            user[i] = n
    root_set = set(roots)

    def absorbable(x: Node) -> bool:
        if not _is_add(x) or uses.get(x) != 1 or x in root_set or not _uniform(x):
            return False
        u = user[x]
        return (_is_add(u) and u.type == x.type and _uniform(u)
                and bool(u.provenance) == bool(x.provenance))

    if not any(absorbable(n) for n in order) and not holds_bodies(order):
        return PassResult(list(roots), [], order)  # no chain to flatten: no rewrite walk
    log: list[LogEntry] = []

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        if absorbable(n):
            return n  # summed directly into the tree it feeds: left behind unreached, not rebuilt
        if isinstance(n.op, Leaf) or not (_is_add(n) and any(absorbable(i) for i in n.inputs)):
            return None
        terms: list[Node] = []
        absorbed: list[Node] = []
        stack = list(reversed(n.inputs))
        while stack:
            t = stack.pop()
            if absorbable(t):
                absorbed.append(t)
                stack.extend(reversed(t.inputs))
            else:
                terms.append(new[t])
        with stamp(origin=n.origin, scope=n.scope, provenance=union_provenance([n, *absorbed])):
            out = apply(AddN(len(terms)), *terms, name=n.name)
        log.append(LogEntry("accumulate", "flatten_add", (n, *absorbed), out))
        return out

    return PassResult(rewrite(roots, visit, order=order, bodies=in_bodies(flatten_adds, log)), log)


# ------------------------------------------------------------------ matmul + bias + act
def _users(order: list[Node]) -> dict[Node, list[Node]]:
    out: dict[Node, list[Node]] = {}
    for n in order:
        for i in n.inputs:
            out.setdefault(i, []).append(n)
    return out


def _single_use(p: Node, users: dict, roots: set, side: bool) -> bool:
    return len(users.get(p, ())) == 1 and p not in roots and bool(p.provenance) == side


def fuse_matmul(roots: list[Node], pass_name: str = "fuse_matmul", order: list[Node] | None = None) -> PassResult:
    """``act(a @ w + b)`` (``b`` broadcast along rows) becomes one ``matmul_bias_act``, and
    ``act(conv2d(x, w) + b)`` (``b`` per channel) one ``conv_bias_act``: the product's
    buffer takes the bias and the activation in place."""
    order = toposort(roots) if order is None else order
    users = _users(order)
    rootset = set(roots)
    groups: dict[Node, tuple[Op, tuple[Node, ...], list[Node]]] = {}
    taken: set[Node] = set()
    for n in order:
        if not isinstance(n.op, ew.Add) or n in taken:
            continue
        side = bool(n.provenance)
        for mm, b in (n.inputs, n.inputs[::-1]):
            dense = isinstance(mm.op, MatMul) and mm.ndim == 2 and b.ndim <= 2
            if ((dense or type(mm.op) is Conv2D) and mm.shape == n.shape and mm.dtype == n.dtype
                    and _single_use(mm, users, rootset, side)):
                break
        else:
            continue
        root, activation, members = n, None, [mm, n]
        us = users.get(n, [])
        if (len(us) == 1 and MATMUL_ACTIVATIONS.get(us[0].op.name) == us[0].op
                and _single_use(n, users, rootset, side) and us[0].type == n.type):
            root, activation = us[0], us[0].op.name
            members.append(root)
        names = tuple(m.op.name for m in members)
        op = MatMulBiasAct(activation, names) if dense else ConvBiasAct.of(mm.op, activation, names)
        groups[root] = (op, (*mm.inputs, b), members)
        taken.update(members)
    if not groups and not holds_bodies(order):
        return PassResult(list(roots), [], order)
    log: list[LogEntry] = []
    inside = in_bodies(lambda rs: fuse_matmul(rs, pass_name), log)

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        group = groups.get(n)
        if group is None:
            return n if n in taken else None  # other members: left behind unreached, not rebuilt
        op, ext, members = group
        with stamp(origin=n.origin, scope=n.scope, provenance=union_provenance(members)):
            out = apply(op, *(new[i] for i in ext), name=n.name)
        log.append(LogEntry(pass_name, op.name, tuple(members), out))
        return out

    return PassResult(rewrite(roots, visit, order=order, bodies=inside), log)
