"""Collect terms: elementwise sums of products rewritten in a factored normal form.

Autodiff differentiates term by term, so the derivative of an activation written from
primitives arrives as a sum of products that repeat factors: gelu-tanh's ``u + c u^3``
gives three gradient terms ``g c u u`` (one per factor ``u`` of the cube) and a fourth
``g``. This pass reads the expression a node stands for as a polynomial over *atoms*
(operands that are not sums or products: ``tanh(...)``, a matmul, an input) with scalar
coefficients (constants and one-element operands), merges like terms (``3 c g u^2``),
and writes it back factored (``g (1 + 3c u^2)``, powers as ``square``), choosing by
counting full-size operations. It rewrites a node only when the factored form takes
fewer full-size operations than the nodes it replaces. Forward chains and gradients are
rewritten; arithmetic the user writes on gradients (an optimiser's update, tested bit-exact
against its NumPy formula) keeps its operations and so its rounding.

Limits, each for a reason: products are read through any number of users (recomputing a
product is what CSE undoes when both sides now write it the same way), but a sum only
when it has one user (re-expanding a shared sum would duplicate it); a product of two sums
is not expanded (``(a + b)(c + d)`` has more terms than operations); at most
:data:`MAX_TERMS` terms. Only float nodes whose every operand has the node's own type or
one element take part (broadcasting between atoms would make a term's shape depend on
its factors).

Unlike the canonicalize rules, this pass is exact only for finite values, up to rounding
(reassociation and factoring move roundings, like ``scalar_factors``): terms whose
coefficients cancel are dropped, and where an intermediate is inf the factored form can
give another non-finite result than the term-by-term one (``inf - inf`` is NaN, ``inf (1 - 1)``
is not computed at all). Gradients written by autodiff are where it applies, and they are
already a reordering of the forward's arithmetic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from ..graph.context import stamp
from ..graph.node import Node
from ..graph.traverse import toposort
from ..ops import elementwise as ew
from ..ops import shape as sh
from ..ops.fused import AddN
from ..ops.leaves import Constant, constant
from .core import LogEntry, PassResult, count_uses, rewrite

MAX_TERMS = 8
"""A polynomial with more terms than this is left as it is (keeps the search small)."""

Mono = tuple[tuple[int, int], ...]  # (atom position, power), sorted
Key = tuple[Mono, tuple[int, ...]]  # monomial, scalar operands' positions (sorted)
Poly = dict[Key, float]  # term -> numeric coefficient
Expr = tuple  # ("a", pos) | ("s", num, scal) | ("*" | "+" | "-", e1, e2) | ("sq", e)

_PRODUCTS = (ew.Multiply, ew.Square, ew.Negative)
_SUMS = (ew.Add, ew.Subtract, AddN)
_MEMBERS = _PRODUCTS + _SUMS


def _mul(p: Poly, q: Poly) -> Poly | None:
    out: Poly = {}
    for (m1, s1), c1 in p.items():
        for (m2, s2), c2 in q.items():
            pw = Counter(dict(m1))
            pw.update(dict(m2))
            key = (tuple(sorted(pw.items())), tuple(sorted(s1 + s2)))
            out[key] = out.get(key, 0.0) + c1 * c2
    return out if len(out) <= MAX_TERMS else None


def _add(p: Poly, q: Poly, sign: float = 1.0) -> Poly | None:
    out = dict(p)
    for k, c in q.items():
        out[k] = out.get(k, 0.0) + sign * c
    return out if len(out) <= MAX_TERMS else None


def _scalar_or_mono(polys: list[Poly]) -> bool:
    """Both monomials, or one a sum and the other only a coefficient."""
    if all(len(p) == 1 for p in polys):
        return True
    return any(len(p) == 1 and not next(iter(p))[0] for p in polys)


class _Reader:
    """Reads nodes as polynomials over one region type (memoised for the whole pass)."""

    def __init__(self, order: list[Node]) -> None:
        self.pos = {n: k for k, n in enumerate(order)}
        self.order = order
        self.uses = count_uses(order)
        self.memo: dict[Node, tuple[Poly, frozenset[Node]] | None] = {}
        self.members: dict[Node, bool] = {}

    def scalar(self, n: Node, like: Node) -> bool:
        return (n.type.is_concrete and all(d == 1 for d in n.shape) and n.ndim <= like.ndim
                and n.dtype == like.dtype)

    def member(self, n: Node) -> bool:
        """A full-size float product or sum whose operands are all of its type or scalars
        (asked several times per node, by the node and by its users: memoised)."""
        hit = self.members.get(n)
        if hit is None:
            hit = self.members[n] = (isinstance(n.op, _MEMBERS) and n.dtype.kind == "f" and not n.op.effectful
                                     and not self.scalar(n, n)
                                     and all(i.type == n.type or self.scalar(i, n) for i in n.inputs))
        return hit

    def atom(self, n: Node, like: Node) -> Poly:
        if isinstance(n.op, sh.BroadcastTo) and self.scalar(n.inputs[0], like):
            n = n.inputs[0]  # a broadcast scalar (a gradient seed) is a coefficient
        if self.scalar(n, like):
            if type(n.op) is Constant:
                return {((), ()): float(np.asarray(n.op.value).reshape(()))}
            if isinstance(n.op, (ew.Multiply, ew.Negative)) and all(self.scalar(i, like) for i in n.inputs):
                out = {((), ()): -1.0 if isinstance(n.op, ew.Negative) else 1.0}
                for i in n.inputs:  # a product of scalars: its factors, so terms share them
                    out = _mul(out, self.atom(i, like)) or out
                return out
            return {((), (self.pos[n],)): 1.0}
        return {(((self.pos[n], 1),), ()): 1.0}

    def read(self, n: Node) -> tuple[Poly, frozenset[Node]] | None:
        """``n`` as a polynomial and the full-size nodes that expression reads through
        (the nodes it would replace); None when ``n`` is to be an atom."""
        if n not in self.memo:
            self.memo[n] = self._read(n)
        return self.memo[n]

    def _child(self, c: Node, like: Node) -> tuple[Poly, frozenset[Node]]:
        if c.type == like.type and self.member(c) and (isinstance(c.op, _PRODUCTS) or self.uses.get(c, 0) == 1):
            hit = self.read(c)
            if hit is not None:
                return hit
        return self.atom(c, like), frozenset()

    def _read(self, n: Node) -> tuple[Poly, frozenset[Node]] | None:
        if not self.member(n):
            return None
        parts = [self._child(c, n) for c in n.inputs]
        polys = [p for p, _ in parts]
        inner = frozenset().union(*(s for _, s in parts), (n,))
        op = n.op
        if isinstance(op, ew.Negative):
            out: Poly | None = {k: -c for k, c in polys[0].items()}
        elif isinstance(op, ew.Square):
            out = _mul(polys[0], polys[0]) if len(polys[0]) == 1 else None
        elif isinstance(op, ew.Multiply):  # distribute scalars over a sum, not full-size factors
            out = _mul(*polys) if min(len(p) for p in polys) == 1 and _scalar_or_mono(polys) else None
        elif isinstance(op, ew.Subtract):
            out = _add(polys[0], polys[1], -1.0)
        else:
            out = polys[0]
            for p in polys[1:]:
                out = _add(out, p) if out is not None else None
        if out is None:  # a product of sums, or too many terms: read the operands as atoms
            if not isinstance(op, _PRODUCTS):
                return None
            # a sum operand becomes a factor of its own; a monomial operand stays read
            keep = [len(p) == 1 for p in polys]
            factors = [p if k else self.atom(c, n) for p, k, c in zip(polys, keep, n.inputs)]
            out = factors[0]
            for p in factors[1:] if not isinstance(op, ew.Square) else factors:
                out = _mul(out, p)
            if out is None:
                return None
            inner = frozenset().union(*(s for (_, s), k in zip(parts, keep) if k), (n,))
        return out, inner


# ---------------------------------------------------------------------------- writing
def _cost(e: Expr, seen: set, full: Callable[[Expr], bool]) -> int:
    """Distinct full-size operations in ``e`` (scalar arithmetic is free)."""
    if e[0] in ("a", "s") or e in seen or not full(e):
        return 0
    seen.add(e)
    return 1 + sum(_cost(x, seen, full) for x in e[1:] if isinstance(x, tuple))


def _full(e: Expr) -> bool:
    if e[0] == "a":
        return True
    if e[0] == "s":
        return False
    return any(_full(x) for x in e[1:] if isinstance(x, tuple))


def cost(e: Expr) -> int:
    return _cost(e, set(), _full)


def _power(pos: int, p: int) -> Expr:
    if p == 1:
        return ("a", pos)
    if p % 2 == 0:
        return ("sq", _power(pos, p // 2))
    return ("*", _power(pos, p - 1), ("a", pos))


def _term(mono: Mono, scal: tuple[int, ...], num: float) -> Expr:
    prod: Expr | None = None
    for pos, p in mono:
        f = _power(pos, p)
        prod = f if prod is None else ("*", prod, f)
    if prod is None:
        return ("s", num, scal)
    if num == 1.0 and not scal:
        return prod
    return ("*", prod, ("s", num, scal))


def _flat(poly: Poly) -> Expr:
    """Terms added one after another (negative ones subtracted), constants last."""
    keys = sorted(poly, key=lambda k: (not k[0], poly[k] < 0, k))  # a positive term first
    if len(keys) > 1:
        keys = [k for k in keys if poly[k] != 0.0] or keys[:1]
    e: Expr | None = None
    for k in keys:
        num = poly[k]
        if e is None:
            e = _term(*k, num)
        elif num < 0:
            e = ("-", e, _term(*k, -num))
        else:
            e = ("+", e, _term(*k, num))
    assert e is not None
    return e


def _divide(poly: Poly, mono: Counter, scal: Counter) -> Poly:
    out: Poly = {}
    for (m, s), c in poly.items():
        pw = Counter(dict(m))
        pw.subtract(mono)
        rest = Counter(s)
        rest.subtract(scal)
        out[(tuple(sorted((a, p) for a, p in pw.items() if p)), tuple(sorted(rest.elements())))] = c
    return out


def _times(poly: Poly, scal: Counter) -> Poly:
    return {(m, tuple(sorted(s + tuple(scal.elements())))): c for (m, s), c in poly.items()}


def write(poly: Poly) -> Expr:
    """The cheapest of a few factorings of ``poly`` (by :func:`cost`); cancelled terms go."""
    if len(poly) > 1 and any(c == 0.0 for c in poly.values()):
        poly = {k: c for k, c in poly.items() if c != 0.0} or dict([next(iter(poly.items()))])
    if len(poly) == 1:
        ((k, num),) = poly.items()
        return _term(*k, num)
    cands = [_flat(poly)]
    monos = [Counter(dict(m)) for m, _ in poly]
    common = monos[0]
    for m in monos[1:]:
        common = common & m
    scal = Counter(poly and next(iter(poly))[1])
    for _, s in poly:
        scal = scal & Counter(s)
    if common or scal:
        rest = _divide(poly, common, scal)
        outer = _term(tuple(sorted(common.items())), tuple(sorted(scal.elements())), 1.0)
        cands.append(("*", outer, write(rest)) if common or scal else write(rest))
        if common and scal:  # the scalar inside the sum, where it may join a coefficient
            cands.append(("*", _term(tuple(sorted(common.items())), (), 1.0), write(_times(rest, scal))))
    else:
        counts = Counter(a for m in monos for a in m)
        best = [a for a, c in counts.most_common() if c >= 2]
        if best:
            a = min(best, key=lambda x: (-counts[x], x))
            group = {k: c for k, c in poly.items() if a in dict(k[0])}
            other = {k: c for k, c in poly.items() if k not in group}
            cands.append(("+", write(group), write(other)))
    return min(cands, key=_rank)


def _scalars(e: Expr, seen: set) -> int:
    if e in seen:
        return 0
    seen.add(e)
    if e[0] == "s":
        return int(bool(e[2]))  # computed per call (a constant coefficient is free)
    return sum(_scalars(x, seen) for x in e[1:] if isinstance(x, tuple))


def _rank(e: Expr) -> tuple[int, int]:
    """Full-size operations, then scalar ones computed per call: each of those is a step of
    its own, scheduled where first read, and can split a blocked elementwise chain."""
    return cost(e), _scalars(e, set())


def collect_terms(roots: list[Node], pass_name: str = "collect_terms", order: list[Node] | None = None) -> PassResult:
    """Rewrite each float sum-of-products node in the factored form, where that takes
    fewer full-size operations (see the module docstring). ``order`` is the roots'
    topological order when the caller has it."""
    order = toposort(roots) if order is None else order
    reader = _Reader(order)
    users: dict[Node, list[Node]] = {}
    for n in order:
        for i in dict.fromkeys(n.inputs):
            users.setdefault(i, []).append(n)
    rootset = set(roots)
    updates: set[Node] = set()  # user arithmetic on gradients (an optimiser's update)
    for n in order:
        if not n.provenance and any(i.provenance or i in updates for i in n.inputs):
            updates.add(n)

    def absorbed(n: Node) -> bool:
        """Read into each of its users' polynomials (so not rewritten on its own)."""
        us = users.get(n, [])
        return (n not in rootset and bool(us) and all(reader.member(u) and u.type == n.type for u in us)
                and (isinstance(n.op, _PRODUCTS) or reader.uses.get(n, 0) == 1))

    log: list[LogEntry] = []

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        hit = reader.read(n) if reader.member(n) and not absorbed(n) and n not in updates else None
        if hit is None:
            return None
        poly, replaced = hit
        e = write(poly)
        if not _full(e) or cost(e) >= len(replaced):
            return None
        built: dict[Expr, Node] = {}

        def node(x: Expr) -> Node:
            if x in built:
                return built[x]
            kind = x[0]
            if kind == "a":
                out = new[reader.order[x[1]]]
            elif kind == "s":
                out = constant(np.asarray(x[1], n.dtype)) if x[1] != 1.0 or not x[2] else None
                for p in x[2]:
                    s = new[reader.order[p]]
                    out = s if out is None else ew.multiply(out, s)
            elif kind == "sq":
                out = ew.square(node(x[1]))
            else:
                a, b = node(x[1]), node(x[2])
                if kind == "*" and b.type.size() == 1:
                    a, b = b, a  # scalar first: it is scheduled before the full-size chain
                out = {"*": ew.multiply, "+": ew.add, "-": ew.subtract}[kind](a, b)
            built[x] = out
            return out

        with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
            out = node(e)
        if out.type != n.type:
            return None
        rest = sorted(replaced - {n}, key=reader.pos.__getitem__)
        log.append(LogEntry(pass_name, "collect_terms", (n, *rest), out))
        return out

    return PassResult(rewrite(roots, visit, order=order), log)
