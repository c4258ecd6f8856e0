"""Shape arithmetic over run-time sizes, folded while importing.

ONNX models compute shapes as data: ``Shape`` of a tensor, then ``Gather``, ``Slice``,
``Concat``, ``Add``/``Sub``/``Mul``, ``ReduceProd``, ``Squeeze``/``Unsqueeze``. Where a dim is
unknown (``None`` in graphbp's types) these values are not known at import time, but they are
known *symbolically*: each element is an integer polynomial in the run-time sizes of named
tensors (``dim(x, 0) * 512``). :class:`Dims` holds such a vector, so the ops that take a shape
find what graphbp means by it: a shape equal, element by element, to some tensor's shape is
that tensor's ``like=`` operand; a shape with one unknown element is a ``reshape`` with
``-1``; a count is ``reduced_count``. The polynomials are bounded in size, so a hostile model
cannot make folding expensive.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import ops
from ..ops.base import apply
from ..graph.node import Node

MAX_TERMS = 32
MAX_DEGREE = 16
MAX_ITEMS = 256
MAX_COEFF = 1 << 62

DimRef = tuple[Node, int]  # (tensor, axis): that tensor's run-time size along axis
Monomial = tuple[DimRef, ...]  # a product of sizes, sorted; () is the constant term


class SymbolicError(ValueError):
    """Shape arithmetic past the folding bounds (the importer reports it as malformed)."""


def _key(d: DimRef) -> tuple[int, int]:
    return (d[0].serial, d[1])


@dataclasses.dataclass(frozen=True, eq=False)
class Sym:
    """``sum(coeff * product of sizes)``: one element of a shape computed from run-time sizes."""

    terms: tuple[tuple[Monomial, int], ...]

    @staticmethod
    def const(c: int) -> "Sym":
        return Sym(((((), int(c)),) if c else ()))

    @staticmethod
    def dim(node: Node, axis: int) -> "Sym":
        size = node.shape[axis]
        return Sym.const(size) if size is not None else Sym(((((node, axis),), 1),))

    @staticmethod
    def _make(acc: dict[Monomial, int]) -> "Sym":
        terms = tuple(sorted(((m, c) for m, c in acc.items() if c), key=lambda t: [_key(d) for d in t[0]]))
        if len(terms) > MAX_TERMS or any(abs(c) > MAX_COEFF or len(m) > MAX_DEGREE for m, c in terms):
            raise SymbolicError("shape arithmetic past the folding bounds")
        return Sym(terms)

    def __add__(self, other: "Sym") -> "Sym":
        acc = dict(self.terms)
        for m, c in other.terms:
            acc[m] = acc.get(m, 0) + c
        return Sym._make(acc)

    def __neg__(self) -> "Sym":
        return Sym(tuple((m, -c) for m, c in self.terms))

    def __sub__(self, other: "Sym") -> "Sym":
        return self + (-other)

    def __mul__(self, other: "Sym") -> "Sym":
        if len(self.terms) * len(other.terms) > MAX_TERMS * MAX_TERMS:
            raise SymbolicError("shape arithmetic past the folding bounds")
        acc: dict[Monomial, int] = {}
        for m1, c1 in self.terms:
            for m2, c2 in other.terms:
                m = tuple(sorted(m1 + m2, key=_key))
                acc[m] = acc.get(m, 0) + c1 * c2
        return Sym._make(acc)

    def substitute(self, sizes: dict[DimRef, "Sym"]) -> "Sym":
        """Each size that ``sizes`` knows in other terms replaced by them (once: the entries
        are written in terms of sizes known when the tensor was made)."""
        total = Sym.const(0)
        for m, c in self.terms:
            term = Sym.const(c)
            for d in m:
                term = term * sizes.get(d, Sym(((((d,)), 1),)))
            total = total + term
        return total

    def exact_quotient(self, other: "Sym") -> "Sym | None":
        """``self / other`` when both are one product of sizes and ``other`` divides ``self``."""
        if len(self.terms) != 1 or len(other.terms) != 1:
            return None
        (m1, c1), = self.terms
        (m2, c2), = other.terms
        rest = list(m1)
        for d in m2:
            k = next((i for i, r in enumerate(rest) if r[0] is d[0] and r[1] == d[1]), None)
            if k is None:
                return None
            del rest[k]
        return Sym(((tuple(rest), c1 // c2),)) if c1 % c2 == 0 else None

    @property
    def value(self) -> int | None:
        """The integer, when no run-time size is left in it."""
        if not self.terms:
            return 0
        (m, c), *rest = self.terms
        return c if not m and not rest else None

    def same(self, other: "Sym") -> bool:
        return len(self.terms) == len(other.terms) and all(
            c1 == c2 and len(m1) == len(m2) and all(a[0] is b[0] and a[1] == b[1] for a, b in zip(m1, m2))
            for (m1, c1), (m2, c2) in zip(self.terms, other.terms))

    def nodes(self) -> list[Node]:
        seen: list[Node] = []
        for m, _ in self.terms:
            for node, _ax in m:
                if not any(node is s for s in seen):
                    seen.append(node)
        return seen

    def as_node(self, dtype) -> Node:
        """This value computed at run time: ``reduced_count`` of each tensor's axes, in ``dtype``."""
        total = None
        for m, c in self.terms:
            term = None
            for node in dict.fromkeys(d[0] for d in m):
                count = apply(ops.ReducedCount(tuple(a for n2, a in m if n2 is node)), node)
                term = count if term is None else term * count
            term = ops.constant(np.asarray(c, np.float64)) if term is None else (term if c == 1 else term * float(c))
            total = term if total is None else total + term
        total = ops.constant(np.asarray(0.0)) if total is None else total
        return ops.cast(total, dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class Dims:
    """An int64 vector (``scalar=True``: a 0-d value) whose elements are :class:`Sym`."""

    items: tuple[Sym, ...]
    scalar: bool = False

    def __post_init__(self) -> None:
        if len(self.items) > MAX_ITEMS or (self.scalar and len(self.items) != 1):
            raise SymbolicError("a shape vector past the folding bounds")

    @staticmethod
    def of_shape(node: Node, axes) -> "Dims":
        return Dims(tuple(Sym.dim(node, a) for a in axes))

    @staticmethod
    def of_array(arr: np.ndarray) -> "Dims":
        if arr.dtype.kind not in "iu" or arr.ndim > 1:
            raise SymbolicError(f"shape arithmetic with a {arr.dtype}{arr.shape} value")
        return Dims(tuple(Sym.const(int(v)) for v in arr.reshape(-1)), scalar=arr.ndim == 0)

    def values(self) -> list[int | None]:
        return [s.value for s in self.items]

    @property
    def is_static(self) -> bool:
        return all(v is not None for v in self.values())

    def array(self) -> np.ndarray:
        arr = np.asarray(self.values(), dtype=np.int64)
        return arr.reshape(()) if self.scalar else arr

    def single_dim(self) -> DimRef | None:
        """``(node, axis)`` when this is one run-time size and nothing else."""
        if len(self.items) != 1 or len(self.items[0].terms) != 1:
            return None
        (m, c), = self.items[0].terms
        return m[0] if c == 1 and len(m) == 1 else None

    def like(self) -> Node | None:
        """A tensor whose shape this is, element by element (so its ``like=`` operand), or,
        for one element counting all of a tensor's elements, that tensor flattened."""
        for node in [n for s in self.items for n in s.nodes()]:
            if len(self.items) == node.ndim and all(s.same(Sym.dim(node, a)) for a, s in enumerate(self.items)):
                return node
            if len(self.items) == 1:
                count = Sym.const(1)
                for a in range(node.ndim):
                    count = count * Sym.dim(node, a)
                if self.items[0].same(count):
                    return ops.reshape(node, (-1,))
        return None

    def as_node(self) -> Node:
        """The vector as int64 data computed at run time."""
        if self.scalar:
            return self.items[0].as_node(np.int64)
        return ops.stack([s.as_node(np.int64) for s in self.items]) if self.items else \
            ops.constant(np.zeros(0, np.int64))


def broadcast(a: Dims, b: Dims, fn) -> Dims:
    """Elementwise ``fn`` with NumPy broadcasting of a one-element side."""
    if len(a.items) == 1 or len(b.items) == 1 or len(a.items) == len(b.items):
        n = max(len(a.items), len(b.items))
        xs = a.items * n if len(a.items) == 1 else a.items
        ys = b.items * n if len(b.items) == 1 else b.items
        return Dims(tuple(fn(x, y) for x, y in zip(xs, ys)), scalar=a.scalar and b.scalar)
    raise SymbolicError(f"shape vectors of {len(a.items)} and {len(b.items)} elements do not broadcast")
