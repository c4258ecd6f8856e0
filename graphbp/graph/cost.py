"""The cost model: element counts, bytes and FLOPs as polynomials in the unknown batch dim.

Shapes may have unknown (``None``) dims, usually the batch. Rather than inventing a size,
every quantity is kept as a polynomial in one symbol, "a row" (one unit of an unknown dim):
``f32(?, 128)`` is 512 B/row, ``f32(128, 10)`` is 5 KiB, and their sum prints as both.
Several unknown dims are all taken to be the same symbol (an approximation the text says).
It sits below ops, passes, runtime and render, so each of them can price a node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import TensorType, TupleType


@dataclass(frozen=True)
class Poly:
    """``sum(coeff * rows**power)``; ``terms`` maps power to coefficient (no zero entries)."""

    terms: tuple[tuple[int, int], ...] = field(default=())

    @staticmethod
    def of(coeff: int, power: int = 0) -> "Poly":
        return Poly(((power, coeff),)) if coeff else Poly()

    def __add__(self, other: "Poly") -> "Poly":
        acc = dict(self.terms)
        for p, c in other.terms:
            acc[p] = acc.get(p, 0) + c
        return Poly(tuple(sorted((p, c) for p, c in acc.items() if c)))

    def __sub__(self, other: "Poly") -> "Poly":
        return self + Poly(tuple((p, -c) for p, c in other.terms))

    def scale(self, k: int) -> "Poly":
        return Poly(tuple((p, c * k) for p, c in self.terms if c * k))

    def shift(self) -> "Poly":
        """Multiply by one more row (a contraction over an unknown dim)."""
        return Poly(tuple((p + 1, c) for p, c in self.terms))

    def at(self, rows: int) -> int:
        return sum(c * rows**p for p, c in self.terms)

    @property
    def is_zero(self) -> bool:
        return not self.terms

    def format(self, unit: str = "B") -> str:
        if not self.terms:
            return f"0 {unit}"
        parts = []
        for p, c in sorted(self.terms, reverse=True):
            amount = human(c, unit)
            parts.append(amount if p == 0 else f"{amount}/row" if p == 1 else f"{amount}/row^{p}")
        return " + ".join(parts)

    def __str__(self) -> str:
        return self.format()


def human(n: int, unit: str = "B") -> str:
    """``1536 -> '1.5 KiB'`` for bytes, ``1.5e6 -> '1.5 M'`` for counts (deterministic text)."""
    if unit == "B":
        steps, base = ("B", "KiB", "MiB", "GiB", "TiB"), 1024
    else:
        steps, base = (unit, f"k{unit}", f"M{unit}", f"G{unit}", f"T{unit}"), 1000
    value = float(n)
    i = 0
    while abs(value) >= base and i < len(steps) - 1:
        value /= base
        i += 1
    if i == 0:
        return f"{int(n)} {steps[0]}"
    return f"{value:.3g} {steps[i]}"


def size_poly(t: TensorType | TupleType) -> Poly:
    """Element count of ``t`` as a polynomial in rows (each unknown dim is one row factor)."""
    if isinstance(t, TupleType):  # a multi-output value: all its items
        total = Poly()
        for item in t.items:
            total = total + size_poly(item)
        return total
    known, unknown = 1, 0
    for d in t.shape:
        if d is None:
            unknown += 1
        else:
            known *= d
    return Poly.of(known, unknown)


def bytes_poly(t: TensorType | TupleType) -> Poly:
    if isinstance(t, TupleType):  # a multi-output value holds all its items
        total = Poly()
        for item in t.items:
            total = total + bytes_poly(item)
        return total
    return size_poly(t).scale(t.dtype.itemsize)


def format_bytes(t: TensorType) -> str:
    return bytes_poly(t).format("B")
