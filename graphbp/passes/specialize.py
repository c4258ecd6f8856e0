"""Specialize: n-ary gradient accumulation, matmul+bias+activation, elementwise fusion.

These passes need use counts (a node read twice must stay materialised), so each runs as
one sweep over the topological order with a ``users`` table: linear in the graph size.
Fusion never crosses the forward/backward boundary: a fused node is all-forward or
all-gradient, so the schedule split and the saved activations stay as autodiff made them.
"""

from __future__ import annotations

from ..graph.node import Node
from ..graph.traverse import toposort
from ..ops import activations as act
from ..ops import elementwise as ew
from ..ops.leaves import Leaf
from ..ops.linalg import MatMul
from ..ops.reduce import Sum
from ..ops.shape import BroadcastTo
from .core import LogEntry, PassResult, rebuild, union_provenance
from .fused import AddN, FusedElementwise, Instr, MatMulBiasAct


# ------------------------------------------------------------------ accumulation
def _is_add(n: Node) -> bool:
    return isinstance(n.op, (ew.Add, AddN))


def _uniform(n: Node) -> bool:
    return all(i.type == n.type for i in n.inputs)


def flatten_adds(roots: list[Node]) -> PassResult:
    """Trees of same-typed adds whose inner adds have one use become one ``add_n``.

    Autodiff accumulates fan-out gradients as a chain of binary adds; a parameter shared by
    k layers gets a chain of k adds. One sweep with use counts finds each tree's root and
    collects its terms with an explicit stack, so the pass is linear in the graph size (a
    rule that absorbed one level per application would copy the term list k times).
    """
    order = toposort(roots)
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

    new: dict[Node, Node] = {}
    log: list[LogEntry] = []
    for n in order:
        if isinstance(n.op, Leaf):
            new[n] = n
            continue
        if absorbable(n):
            continue  # summed directly into the tree it feeds
        if _is_add(n) and any(absorbable(i) for i in n.inputs):
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
            new[n] = out
            continue
        ins = tuple(new[i] for i in n.inputs)
        new[n] = n if all(a is b for a, b in zip(ins, n.inputs)) else rebuild(n, ins)
    return PassResult([new[r] for r in roots], log)


# ------------------------------------------------------------------ fusion helpers
def _users(order: list[Node]) -> dict[Node, list[Node]]:
    out: dict[Node, list[Node]] = {}
    for n in order:
        for i in n.inputs:
            out.setdefault(i, []).append(n)
    return out


def _single_use(p: Node, users: dict, roots: set, side: bool) -> bool:
    return len(users.get(p, ())) == 1 and p not in roots and bool(p.provenance) == side


def _substitute(order, roots, groups: dict[Node, tuple], skip: set) -> list[Node]:
    """Rebuild the graph: each group root becomes its fused node built over new inputs."""
    new: dict[Node, Node] = {}
    for n in order:
        if n in skip:
            continue
        if n in groups:
            make, ext = groups[n]
            new[n] = make(tuple(new[i] for i in ext))
            continue
        ins = tuple(new[i] for i in n.inputs)
        new[n] = n if all(a is b for a, b in zip(ins, n.inputs)) else rebuild(n, ins)
    return [new[r] for r in roots]


def _logged(log: list, pass_name: str, before: tuple, after: Node) -> Node:
    rule_name = "matmul_bias_act" if isinstance(after.op, MatMulBiasAct) else "fuse"
    log.append(LogEntry(pass_name, rule_name, before, after))
    return after


def _fused_node(op, ins, root: Node, members: list[Node]) -> Node:
    return Node(op, ins, root.type, name=root.name, origin=root.origin, scope=root.scope,
                provenance=union_provenance(members))


# ------------------------------------------------------------------ gelu value + derivative
_K, _C3 = act._SQRT_2_OVER_PI, act._GELU_C  # the op's own constants (sqrt(2/pi), 0.044715)


def _like(proto: Node, made: Node, prov) -> Node:
    """``made`` re-stamped with ``proto``'s user line and scope and the given provenance."""
    return Node(made.op, made.inputs, made.type, origin=proto.origin, scope=proto.scope, provenance=prov)


def share_gelu(roots: list[Node], pass_name: str = "share_gelu") -> PassResult:
    """A forward ``gelu_tanh(u)`` and a backward ``gelu_tanh_grad(u)`` share one ``tanh``.

    Both ops evaluate ``t = tanh(k u (1 + c u^2))``; separately, the backward recomputes it
    (five full passes, one a ``tanh``). Here the forward computes ``q = 1 + t`` as its own
    node (saved for the backward in place of ``t``: one write and one read) and both are
    expressed through it: ``gelu = 0.5 u q`` and, as ``1 - t^2 = q (2 - q)``,
    ``gelu' = 0.5 q (1 + u d (2 - q))`` with ``u d = u (k + 3 k c u^2)``: eight calls
    where the term-by-term derivative takes twelve. The trailing ``* 0.5`` of each meets the
    user's and the seed's scalar factors in ``recanonicalize``. Forward nodes keep the
    gelu's (forward) provenance, derivative nodes the gradient node's.
    """
    order = toposort(roots)
    fwd: dict[Node, Node] = {}
    for n in order:
        if (isinstance(n.op, act.Gelu) and n.op.approximate == "tanh" and not n.provenance
                and n.dtype.kind == "f" and n.type == n.inputs[0].type):
            fwd.setdefault(n.inputs[0], n)
    grads = [n for n in order if isinstance(n.op, act.GeluTanhGrad) and n.provenance
             and n.inputs[0] in fwd and n.type == n.inputs[0].type]
    if not grads:
        return PassResult(list(roots), [])
    used = {fwd[g.inputs[0]] for g in grads}
    grad_set = set(grads)
    q_of: dict[Node, Node] = {}  # u -> the forward's 1 + tanh(...)
    new: dict[Node, Node] = {}
    log: list[LogEntry] = []
    for n in order:
        ins = tuple(new[i] for i in n.inputs)
        if n in used:
            u, f = ins[0], (lambda m, n=n: _like(n, m, ()))
            s = f(ew.multiply(u, u))
            w = f(ew.add(f(ew.multiply(s, _K * _C3)), _K))
            q = f(ew.add(f(ew.tanh(f(ew.multiply(w, u)))), 1.0))
            out = f(ew.multiply(f(ew.multiply(q, u)), 0.5))
            q_of[n.inputs[0]] = q
        elif n in grad_set:
            u, q = ins[0], q_of[n.inputs[0]]
            f = (lambda m, n=n: _like(n, m, n.provenance))
            ud = f(ew.multiply(f(ew.add(f(ew.multiply(f(ew.multiply(u, u)), 3 * _K * _C3)), _K)), u))
            inner = f(ew.add(f(ew.multiply(ud, f(ew.subtract(2.0, q)))), 1.0))
            out = f(ew.multiply(f(ew.multiply(q, inner)), 0.5))
        else:
            out = None
        if out is None or out.type != n.type:  # else: a dtype the scalar constants would promote
            new[n] = n if all(a is b for a, b in zip(ins, n.inputs)) else rebuild(n, ins)
            continue
        log.append(LogEntry(pass_name, "share_gelu_tanh", (n,), out))
        new[n] = out
    return PassResult([new[r] for r in roots], log)


# ------------------------------------------------------------------ matmul + bias + act
ACTIVATIONS = (ew.Tanh, act.Sigmoid, act.Relu)


def fuse_matmul(roots: list[Node], pass_name: str = "fuse_matmul") -> PassResult:
    """``act(a @ w + b)`` (``b`` broadcast along rows) becomes one ``matmul_bias_act``."""
    order = toposort(roots)
    users = _users(order)
    rootset = set(roots)
    groups: dict[Node, tuple] = {}
    skip: set[Node] = set()
    log: list[LogEntry] = []
    for n in order:
        if not isinstance(n.op, ew.Add) or n in skip:
            continue
        side = bool(n.provenance)
        for mm, b in (n.inputs, n.inputs[::-1]):
            if (isinstance(mm.op, MatMul) and mm.ndim == 2 and b.ndim <= 2 and mm.shape == n.shape
                    and mm.dtype == n.dtype and _single_use(mm, users, rootset, side)):
                break
        else:
            continue
        root, activation, members = n, None, [mm, n]
        us = users.get(n, [])
        if (len(us) == 1 and isinstance(us[0].op, ACTIVATIONS) and _single_use(n, users, rootset, side)
                and us[0].type == n.type):
            root, activation = us[0], us[0].op
            members.append(root)
        op = MatMulBiasAct(activation, tuple(m.op.name for m in members))
        ext = (*mm.inputs, b)
        groups[root] = (lambda ins, op=op, root=root, members=members:
                        _logged(log, pass_name, tuple(members), _fused_node(op, ins, root, members)), ext)
        skip.update(m for m in members if m is not root)
    if not groups:
        return PassResult(list(roots), log)
    return PassResult(_substitute(order, roots, groups, skip), log)


# ------------------------------------------------------------------ elementwise fusion
CHEAP = (ew.Add, ew.Subtract, ew.Multiply, ew.Negative, BroadcastTo)
"""Ops a fused kernel recomputes rather than reading a materialised multi-use value."""
RECOMPUTE_USERS = 3
"""Any elementwise value with at most this many readers is recomputed inside the kernels
that read it: one pass of a transcendental over cached data costs less than writing the
full array and reading it back (measured on the W4 chain)."""

def _fusible(n: Node) -> bool:
    op = n.op
    if isinstance(op, (Leaf, FusedElementwise)):
        return False
    return bool(getattr(op, "elementwise", False)) or isinstance(op, BroadcastTo)


def _approx_size(n: Node) -> int:
    size = 1
    for d in n.shape:
        size *= 128 if d is None else d
    return size


def fuse_elementwise(roots: list[Node], pass_name: str = "fuse_elementwise", min_size: int = 32768) -> PassResult:
    """Chains of elementwise ops (a full ``sum`` may end one) become ``fused_elementwise``.

    Reverse topological sweep: each unassigned elementwise node roots a group and absorbs
    inputs that are elementwise, read only by the group, on the same side (forward or
    gradient) and of the root's shape. Groups of one op, or smaller than ``min_size``
    elements (where per-call overhead dominates), are left alone.
    """
    order = toposort(roots)
    pos = {n: k for k, n in enumerate(order)}
    users = _users(order)
    rootset = set(roots)
    assigned: set[Node] = set()
    external: set[Node] = set()  # read by a fused kernel: must stay materialised
    groups: dict[Node, tuple] = {}
    skip: set[Node] = set()
    log: list[LogEntry] = []
    for n in reversed(order):
        if n in assigned:
            continue
        reduce_sum = False
        if isinstance(n.op, Sum) and len(n.op.axis) == n.inputs[0].ndim and not n.op.keepdims:
            top = n.inputs[0]
            if not (_fusible(top) and _single_use(top, users, rootset, bool(n.provenance))):
                continue
            reduce_sum = True
        elif _fusible(n):
            top = n
        else:
            continue
        side = bool(n.provenance)
        shape = top.shape
        members = [top]
        inside = {top}
        copied: set[Node] = set()  # recomputed here, still materialised if others read them
        stack = [(top, False)]
        while stack:
            m, under_copy = stack.pop()
            for p in m.inputs:
                if p in inside or p in assigned or not _fusible(p) or p.shape != shape:
                    continue
                if not under_copy and p not in external and _single_use(p, users, rootset, side):
                    members.append(p)
                    inside.add(p)
                    stack.append((p, False))
                elif p not in rootset and (isinstance(p.op, CHEAP) or len(users.get(p, ())) <= RECOMPUTE_USERS):
                    members.append(p)  # cheaper to recompute than to write and re-read
                    inside.add(p)
                    copied.add(p)
                    stack.append((p, True))
        n_ops = len(members) + reduce_sum
        if n_ops < 2 or _approx_size(top) < min_size:
            continue
        members.sort(key=pos.__getitem__)
        assigned.update(m for m in members if m not in copied)
        mset = set(members)
        ext: list[Node] = []
        slot: dict[Node, int] = {}
        for m in members:
            for i in m.inputs:
                if i not in mset and i not in slot:
                    slot[i] = len(ext)
                    ext.append(i)
        external.update(ext)
        prog = []
        for k, m in enumerate(members):
            slot[m] = len(ext) + k
            prog.append(Instr(m.op, tuple(slot[i] for i in m.inputs), m.dtype.name))
        absorbed_all = members + ([n] if reduce_sum else [])
        op = FusedElementwise(len(ext), tuple(prog), tuple(shape), reduce_sum,
                              tuple(m.op.name for m in absorbed_all), tuple(absorbed_all))
        owned = [m for m in absorbed_all if m not in copied]
        groups[n] = (lambda ins, op=op, root=n, ms=owned, ab=tuple(absorbed_all):
                     _logged(log, pass_name, ab, _fused_node(op, ins, root, ms)), tuple(ext))
        skip.update(m for m in owned if m is not n)
    if not groups:
        return PassResult(list(roots), log)
    return PassResult(_substitute(order, roots, groups, skip), log)
