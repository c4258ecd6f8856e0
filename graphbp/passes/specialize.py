"""Specialize: n-ary gradient accumulation, matmul+bias+activation, the shared gelu form.

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
from ..ops import activations as act
from ..ops import elementwise as ew
from ..ops.base import Op
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
        out = Node(AddN(len(terms)), tuple(terms), n.type, name=n.name, origin=n.origin,
                   scope=n.scope, provenance=union_provenance([n, *absorbed]))
        log.append(LogEntry("accumulate", "flatten_add", (n, *absorbed), out))
        return out

    return PassResult(rewrite(roots, visit, order=order, bodies=in_bodies(flatten_adds, log)), log)


# ------------------------------------------------------------------ gelu value + derivative
def share_gelu(roots: list[Node], pass_name: str = "share_gelu", order: list[Node] | None = None) -> PassResult:
    """A forward ``gelu_tanh(u)`` and a backward ``gelu_tanh_grad(u)`` share one ``tanh``.

    Both ops evaluate ``t = tanh(k u (1 + c u^2))``; separately, the backward recomputes it
    (five full passes, one a ``tanh``). Here the forward computes ``q = 1 + t`` as its own
    node (saved for the backward in place of ``t``: one write and one read) and both are
    expressed through it (the formulas of :mod:`graphbp.ops.activations`: ``gelu = 0.5 u q``
    and, as ``1 - t^2 = q (2 - q)``, ``gelu' = 0.5 q (1 + u d (2 - q))``): eight calls
    where the term-by-term derivative takes twelve. The trailing ``* 0.5`` of each meets the
    user's and the seed's scalar factors in ``recanonicalize``. Forward nodes keep the
    gelu's (forward) provenance, derivative nodes the gradient node's.
    """
    order = toposort(roots) if order is None else order
    fwd: dict[Node, Node] = {}
    for n in order:
        if (isinstance(n.op, act.Gelu) and n.op.approximate == "tanh" and not n.provenance
                and n.dtype.kind == "f" and n.type == n.inputs[0].type):
            fwd.setdefault(n.inputs[0], n)
    grads = {n for n in order if isinstance(n.op, act.GeluTanhGrad) and n.provenance
             and n.inputs[0] in fwd and n.type == n.inputs[0].type}
    if not grads and not holds_bodies(order):
        return PassResult(list(roots), [], order)
    used = {fwd[g.inputs[0]] for g in grads}
    q_of: dict[Node, Node] = {}  # u -> the forward's 1 + tanh(...)
    log: list[LogEntry] = []
    inside = in_bodies(lambda rs: share_gelu(rs, pass_name), log)

    def q(u: Node, u_new: Node) -> Node:
        """The forward's ``1 + tanh(...)`` of ``u``, built by whichever of the two comes
        first in the order (the derivative may: it reads ``u``, not the gelu)."""
        hit = q_of.get(u)
        if hit is None:
            g = fwd[u]
            with stamp(origin=g.origin, scope=g.scope, provenance=()):
                hit = q_of[u] = act.gelu_tanh_q(u_new, ew.tanh)
        return hit

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        if n in used:
            with stamp(origin=n.origin, scope=n.scope, provenance=()):
                out = act.gelu_tanh_from_q(ins[0], q(n.inputs[0], ins[0]))
        elif n in grads:
            with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
                out = act.gelu_tanh_grad_from_q(ins[0], q(n.inputs[0], ins[0]))
        else:
            return None
        if out.type != n.type:  # a dtype the scalar constants would promote
            return None
        log.append(LogEntry(pass_name, "share_gelu_tanh", (n,), out))
        return out

    return PassResult(rewrite(roots, visit, order=order, bodies=inside), log)


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
        out = Node(op, tuple(new[i] for i in ext), n.type, name=n.name, origin=n.origin,
                   scope=n.scope, provenance=union_provenance(members))
        log.append(LogEntry(pass_name, op.name, tuple(members), out))
        return out

    return PassResult(rewrite(roots, visit, order=order, bodies=inside), log)
