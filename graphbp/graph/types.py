"""Static tensor types: a shape whose dims may be unknown (``None``) and a NumPy dtype."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

Dim = int | None
Shape = tuple[Dim, ...]


@dataclass(frozen=True, slots=True)
class TensorType:
    """The static type of a node's value: ``shape`` (``None`` = unknown dim) and ``dtype``."""

    shape: Shape
    dtype: np.dtype

    def __post_init__(self) -> None:
        shape = self.shape
        if type(shape) is tuple:  # the common case, a shape an op rule built: checked in place
            for d in shape:
                if d is not None and (type(d) is not int or d < 0):
                    shape = None
                    break
        if type(shape) is not tuple:
            object.__setattr__(self, "shape", normalize_shape(self.shape))
        if not isinstance(self.dtype, np.dtype):
            object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def is_concrete(self) -> bool:
        return all(d is not None for d in self.shape)

    def size(self) -> int | None:
        """Element count, or ``None`` when a dim is unknown."""
        n = 1
        for d in self.shape:
            if d is None:
                return None
            n *= d
        return n

    def nbytes(self) -> int | None:
        n = self.size()
        return None if n is None else n * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype.name}{format_shape(self.shape)}"


@dataclass(frozen=True, slots=True)
class TupleType:
    """The type of a node with several outputs (a higher-order op such as ``gb.cond``).

    Such a node is read only through ``TupleGet(index)`` projections, whose nodes carry the
    ordinary :class:`TensorType` of one item: every other op, schedule and rule keeps seeing
    tensors, and autodiff gathers the projections' cotangents into one tuple for the
    multi-output op's VJP rule."""

    items: tuple[TensorType, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        for t in self.items:
            if not isinstance(t, TensorType):
                raise TypeError(f"a tuple type holds tensor types, got {t!r}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def is_concrete(self) -> bool:
        return all(t.is_concrete for t in self.items)

    def nbytes(self) -> int | None:
        sizes = [t.nbytes() for t in self.items]
        return None if any(n is None for n in sizes) else sum(sizes)

    def __str__(self) -> str:
        return "(" + ", ".join(str(t) for t in self.items) + ("," if len(self.items) == 1 else "") + ")"


def normalize_shape(shape: Iterable[Dim] | int) -> Shape:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    out = []
    for d in shape:
        if d is None:
            out.append(None)
        elif isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0:
            out.append(int(d))
        else:
            raise TypeError(f"a dim must be a non-negative int or None, got {d!r}")
    return tuple(out)


def format_shape(shape: Sequence[Dim]) -> str:
    inner = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def broadcast_shapes(*shapes: Shape) -> Shape:
    """NumPy broadcasting over static shapes; unknown dims broadcast with anything but a
    known dim > 1, which wins. Raises ``ValueError`` on incompatible dims."""
    first = shapes[0] if shapes else ()
    if all(s == first for s in shapes):  # same shapes (most operands): nothing to broadcast
        return tuple(first)
    ndim = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for axis in range(ndim):
        dims = [s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ValueError(f"dims {sorted(known)} at axis {axis - ndim} cannot broadcast")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def normalize_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of bounds for {ndim} dims")
    return axis % ndim


def normalize_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Axes as a sorted tuple of non-negative ints; ``None`` means all axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    axes = tuple(sorted(normalize_axis(int(a), ndim) for a in axis))
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {tuple(axis)}")
    return axes


def concrete_matches(declared: Shape, actual: Sequence[int]) -> bool:
    return len(declared) == len(actual) and all(d is None or d == a for d, a in zip(declared, actual))
