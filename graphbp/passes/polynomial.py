"""Collect terms: elementwise sums of products rewritten in a factored normal form.

Autodiff differentiates term by term, so the derivative of an activation written from
primitives arrives as a sum of products that repeat factors: gelu-tanh's ``u + c u^3``
gives three gradient terms ``g c u u`` (one per factor ``u`` of the cube) and a fourth
``g``. This pass reads the expression a node stands for as a polynomial over *atoms*
(operands that are not sums or products: ``tanh(...)``, a matmul, an input) with scalar
coefficients (constants and one-element operands), merges like terms (``3 c g u^2``),
and writes it back factored (``g (1 + 3c u^2)``, powers as ``square``), choosing by
counting full-size operations. Products that nodes kept in the graph already compute
(the forward's ``u s`` in SiLU's derivative ``s + u s (1 - s)``, a ``square`` an earlier
rewrite built) are read as atoms where they divide a term (:class:`_Known`), and a number
joins the scalar operands multiplied in anyway. It rewrites a node only when the factored
form takes fewer full-size operations than the nodes it removes. Scan and cond bodies are
rewritten the same way (``in_bodies``). Forward chains and gradients are rewritten; arithmetic the user writes on gradients (an optimiser's update, tested bit-exact
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
from .core import LogEntry, PassResult, in_bodies, rewrite

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
            if m1 and m2:
                pw = dict(m1)
                for a, k in m2:
                    pw[a] = pw.get(a, 0) + k
                m = tuple(sorted(pw.items()))
            else:
                m = m1 or m2
            key = (m, tuple(sorted(s1 + s2)) if s1 and s2 else s1 or s2)
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
    """Reads nodes as polynomials over one region type (memoised for the whole pass).

    One walk over the order finds the members (full-size float products and sums whose
    operands are of their type or scalars), who reads each member and how often, and
    whether a node holds a body; the other nodes are never looked at again."""

    def __init__(self, order: list[Node]) -> None:
        self.order = order
        members: set[Node] = set()
        uses: dict[Node, int] = {}  # of members only: how often each is read
        users: dict[Node, list[Node]] = {}  # of members only (a node reading one twice is listed twice)
        kinds: dict[type, int] = {}  # op class -> 1 a product or sum, 2 may hold bodies, 0 neither
        self.bodies = False
        for n in order:
            op = n.op
            kind = kinds.get(type(op))
            if kind is None:
                kind = kinds[type(op)] = (1 if issubclass(type(op), _MEMBERS)
                                          else 2 if op.may_hold_bodies else 0)
            if kind == 1:
                if self._member(n):
                    members.add(n)
            elif kind == 2 and op.subgraphs():
                self.bodies = True
            for i in n.inputs:
                if i in members:
                    uses[i] = uses.get(i, 0) + 1
                    users.setdefault(i, []).append(n)
        self.members, self.uses, self.users = members, uses, users
        self.memo: dict[Node, tuple[Poly, frozenset[Node]] | None] = {}
        self._pos: dict[Node, int] | None = None

    @property
    def pos(self) -> dict[Node, int]:
        """Each node's position in the order: its atom id (built when first read)."""
        if self._pos is None:
            self._pos = {n: k for k, n in enumerate(self.order)}
        return self._pos

    @staticmethod
    def scalar(n: Node, like: Node) -> bool:
        """One element (every dim 1, none unknown), of ``like``'s dtype and at most its rank."""
        t, shape = n.type, n.type.shape
        return (shape.count(1) == len(shape) and len(shape) <= len(like.type.shape)
                and t.dtype == like.type.dtype)

    def _member(self, n: Node) -> bool:
        t = n.type
        if t.dtype.kind != "f" or n.op.effectful or self.scalar(n, n):
            return False
        for i in n.inputs:
            it = i.type
            if it is not t and not (it.shape == t.shape and it.dtype == t.dtype) and not self.scalar(i, n):
                return False
        return True

    def member(self, n: Node) -> bool:
        """A full-size float product or sum whose operands are all of its type or scalars."""
        return n in self.members

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
        if c in self.members and c.type == like.type and (isinstance(c.op, _PRODUCTS) or self.uses.get(c) == 1):
            hit = self.read(c)
            if hit is not None:
                return hit
        return self.atom(c, like), frozenset()

    def _read(self, n: Node) -> tuple[Poly, frozenset[Node]] | None:
        if n not in self.members:
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
        if scal:  # a number out with the scalar operands (free: they are multiplied per call anyway)
            for num in sorted({abs(c) for c in rest.values()} - {0.0, 1.0}):
                outer = _term(tuple(sorted(common.items())), tuple(sorted(scal.elements())), num)
                cands.append(("*", outer, write({k: c / num for k, c in rest.items()})))
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


class _Known:
    """Products of atoms that kept nodes already compute, by monomial, so a later node's
    polynomial reads them instead of multiplying again: SiLU's derivative
    ``s + u s (1 - s)`` reads the forward's ``u s``, gelu's derivative the ``u^2`` the
    forward's rewrite made. Each gets an atom id from ``base`` on (ids below are positions
    in the order); a product is kept either as an original node no rewrite absorbs or as a
    node an accepted rewrite built. Products made for a gradient are offered only to
    gradient nodes, so a forward value never reads a backward one."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.atoms: list[tuple[Node, bool, tuple[Counter, Counter, float]]] = []  # node, in a gradient, value
        self.by_key: dict[Key, int] = {}
        self.by_atom: dict[int, list[Key]] = {}  # so a polynomial looks only at products of its atoms

    def value(self, atom: int) -> tuple[Counter, Counter, float]:
        """The monomial, scalars and number an atom stands for, in original atoms."""
        if atom < self.base:
            return Counter({atom: 1}), Counter(), 1.0
        return self.atoms[atom - self.base][2]

    def add(self, node: Node, mono: Counter, scal: Counter, num: float) -> None:
        if sum(mono.values()) < 2 or num == 0.0:
            return  # a single atom is one already
        key = (tuple(sorted((a, p) for a, p in mono.items() if p)), tuple(sorted(scal.elements())))
        if key not in self.by_key:
            self.by_key[key] = self.base + len(self.atoms)
            self.atoms.append((node, bool(node.provenance), (mono, scal, num)))
            self.by_atom.setdefault(min(mono), []).append(key)

    def expr_value(self, e: Expr) -> tuple[Counter, Counter, float] | None:
        """What a product expression stands for; None for a sum."""
        kind = e[0]
        if kind == "a":
            return self.value(e[1])
        if kind == "s":
            return Counter(), Counter(e[2]), e[1]
        parts = [self.expr_value(x) for x in ((e[1], e[1]) if kind == "sq" else e[1:] if kind == "*" else ())]
        if not parts or any(p is None for p in parts):
            return None
        mono, scal, num = Counter(), Counter(), 1.0
        for m, sc, c in parts:
            mono.update(m)
            scal.update(sc)
            num *= c
        return mono, scal, num

    def substitute(self, poly: Poly, in_gradient: bool) -> Poly:
        """``poly`` with known products as atoms, the largest first, wherever they divide a term."""
        atoms = {a for m, _ in poly for a, _ in m}
        keys = [k for a in sorted(atoms) for k in self.by_atom.get(a, ())]
        found = sorted(((sum(p for _, p in k[0]), k, self.by_key[k]) for k in keys
                        if in_gradient or not self.atoms[self.by_key[k] - self.base][1]), key=lambda t: (-t[0], t[1]))
        if not found:
            return poly
        out: Poly = {}
        for (m, sc), c in poly.items():
            pw, rest = Counter(dict(m)), Counter(sc)
            for _, (km, ks), atom in found:
                need, scal_need = dict(km), Counter(ks)
                num = self.atoms[atom - self.base][2][2]
                while all(pw[a] >= p for a, p in need.items()) and all(rest[x] >= k for x, k in scal_need.items()):
                    pw.subtract(need)
                    rest.subtract(scal_need)
                    pw[atom] += 1
                    c /= num
            key = (tuple(sorted((a, p) for a, p in pw.items() if p)), tuple(sorted(rest.elements())))
            out[key] = out.get(key, 0.0) + c
        return out

    def used(self, e: Expr) -> set[Node]:
        """The known nodes ``e`` reads."""
        if e[0] == "a":
            return {self.atoms[e[1] - self.base][0]} if e[1] >= self.base else set()
        if e[0] == "s":
            return set()
        return set().union(*(self.used(x) for x in e[1:] if isinstance(x, tuple)))


def collect_terms(roots: list[Node], pass_name: str = "collect_terms", order: list[Node] | None = None) -> PassResult:
    """Rewrite each float sum-of-products node in the factored form, where that takes
    fewer full-size operations (see the module docstring). ``order`` is the roots'
    topological order when the caller has it.

    The nodes that may be rewritten (*sites*: members no user reads through, not user
    arithmetic on gradients) are first decided in order without building anything, up to
    the first that a rewrite changes: most graphs (a deep MLP's ``g (1 - y^2)``) have none,
    and then the graph is returned as it is, without a rewrite walk."""
    order = toposort(roots) if order is None else order
    reader = _Reader(order)
    rootset = set(roots)
    updates: set[Node] = set()  # user arithmetic on gradients (an optimiser's update)
    for n in order:
        if not n.provenance and any(i.provenance or i in updates for i in n.inputs):
            updates.add(n)

    def absorbed(n: Node) -> bool:
        """Read into each of its users' polynomials (so not rewritten on its own)."""
        us = reader.users.get(n)
        return (n not in rootset and bool(us) and all(reader.member(u) and u.type == n.type for u in us)
                and (isinstance(n.op, _PRODUCTS) or reader.uses.get(n, 0) == 1))

    sites = [n for n in order if n in reader.members and n not in updates and not absorbed(n)]
    log: list[LogEntry] = []
    known = _Known(len(order))

    def plan(n: Node) -> tuple[Expr, frozenset[Node]] | None:
        """The factored form of site ``n`` and the nodes it reads through, when it takes
        fewer full-size operations than the nodes it removes; None to keep ``n``."""
        hit = reader.read(n)
        if hit is None:
            return None
        poly, replaced = hit
        sub = known.substitute(poly, bool(n.provenance))
        e = write(poly) if sub is poly else min(write(poly), write(sub), key=_rank)
        # what the rewrite removes: the node and the products only it reads (a product kept
        # for another reader stays, and so does one the new form reads)
        removed = {r for r in replaced if r is n or absorbed(r)} - known.used(e)
        if not _full(e) or cost(e) >= len(removed):
            return None
        return e, replaced

    def keep(n: Node) -> None:
        """Site ``n`` stays: the products it reads through are known, for later sites."""
        hit = reader.read(n)  # a product kept as it is, and the products it reads through
        for r in sorted(hit[1], key=reader.pos.__getitem__) if hit is not None and len(hit[0]) == 1 else ():
            part = reader.read(r)
            if part is not None and len(part[0]) == 1:
                ((m, sc), c), = part[0].items()
                known.add(r, Counter(dict(m)), Counter(sc), c)

    first = len(sites)  # sites before the first rewrite are decided (and kept) once, here
    for k, n in enumerate(sites):
        if plan(n) is not None:
            first = k
            break
        keep(n)
    todo = set(sites[first:])
    if not todo and not reader.bodies:
        return PassResult(list(roots), [], order)

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        if n not in todo:
            return None
        p = plan(n)
        out = None if p is None else _build(n, *p, new)
        if out is None:
            keep(n)
        return out

    def _build(n: Node, e: Expr, replaced: frozenset[Node], new) -> Node | None:
        built: dict[Expr, Node] = {}

        def node(x: Expr) -> Node:
            if x in built:
                return built[x]
            kind = x[0]
            if kind == "a":
                if x[1] < known.base:
                    out = new[reader.order[x[1]]]
                else:  # a kept original node (as rewritten) or one a rewrite built
                    kept = known.atoms[x[1] - known.base][0]
                    out = new.get(kept, kept)
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
        for x, b in built.items():
            v = known.expr_value(x) if x[0] in ("*", "sq") else None
            if v is not None and b.type == n.type:
                known.add(b, *v)
        rest = sorted(replaced - {n}, key=reader.pos.__getitem__)
        log.append(LogEntry(pass_name, "collect_terms", (n, *rest), out))
        return out

    inside = in_bodies(lambda rs: collect_terms(rs, pass_name), log)
    return PassResult(rewrite(roots, visit, order=order, bodies=inside), log)
