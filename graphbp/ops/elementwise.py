"""Elementwise ops: NumPy ufunc semantics, broadcasting, and one-line VJP rules.

Each rule returns cotangents in the output's broadcast shape; the autodiff pass sums them
back to each operand's shape, so no rule here deals with broadcasting.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType, broadcast_shapes
from .base import Op, apply, as_node, as_nodes, dtype_error, shape_error


@dataclasses.dataclass(frozen=True)
class Elementwise(Op):
    """Broadcasting shape rule; dtype is whatever NumPy's kernel gives for the operand dtypes."""

    elementwise: ClassVar[bool] = True

    def infer(self, *types: TensorType) -> TensorType:
        try:
            shape = broadcast_shapes(*[t.shape for t in types])
        except ValueError as e:
            raise shape_error(f"operands do not broadcast: {e}") from None
        dtype = self.result_dtype(*[t.dtype for t in types])
        for t in types:  # an operand's type when it is the result's (types are immutable values)
            if t.shape == shape and t.dtype == dtype:
                return t
        return TensorType(shape, dtype)

    def result_dtype(self, *dtypes: np.dtype) -> np.dtype:
        fields = getattr(type(self), "__dataclass_fields__", None)
        # a parameter's type is part of the key: Op(0) == Op(0.0), but 0 * int_array stays int
        key = (self, tuple(type(getattr(self, f)) for f in fields), dtypes) if fields else (self, dtypes)
        try:
            hit = _RESULT_DTYPES.get(key)
        except TypeError:  # an op holding an unhashable value
            key = hit = None
        if hit is not None:
            return hit
        try:
            with np.errstate(all="ignore"):
                hit = np.asarray(self.compute(*(np.zeros(1, d) for d in dtypes))).dtype
        except TypeError as e:
            raise dtype_error(f"not defined for dtypes {', '.join(d.name for d in dtypes)} ({e})") from None
        if key is not None:
            if len(_RESULT_DTYPES) >= 4096:
                _RESULT_DTYPES.clear()
            _RESULT_DTYPES[key] = hit
        return hit


_RESULT_DTYPES: dict[tuple, np.dtype] = {}
"""What each op's kernel gives for the operand dtypes, memoised (every node built asks, and
running the kernel on zeros costs more than the rest of the node): ops are frozen values
and a ufunc's result dtype depends on nothing else. Bounded; dropped when full."""


class Comparison(Elementwise):
    differentiable: ClassVar[bool] = False


def _float_only(op: Op, *dtypes: np.dtype) -> None:
    for d in dtypes:
        if d.kind not in "fiub":
            raise dtype_error(f"{op.name} needs numeric operands, got {d.name}")


# ---------------------------------------------------------------------------- binary
@dataclasses.dataclass(frozen=True)
class Add(Elementwise):
    name: ClassVar[str] = "add"
    vjp_formula: ClassVar[str] = "g, g"

    def compute(self, x, y):
        return np.add(x, y)

    def vjp(self, node, g):
        return g, g


@dataclasses.dataclass(frozen=True)
class Subtract(Elementwise):
    name: ClassVar[str] = "subtract"
    vjp_formula: ClassVar[str] = "g, -g"

    def compute(self, x, y):
        return np.subtract(x, y)

    def vjp(self, node, g):
        return g, negative(g)


@dataclasses.dataclass(frozen=True)
class Multiply(Elementwise):
    name: ClassVar[str] = "multiply"
    vjp_formula: ClassVar[str] = "g * y, g * x"

    def compute(self, x, y):
        return np.multiply(x, y)

    def vjp(self, node, g):
        x, y = node.inputs
        return g * y, g * x


@dataclasses.dataclass(frozen=True)
class Divide(Elementwise):
    name: ClassVar[str] = "divide"
    singular_inputs: ClassVar[tuple[int, ...]] = (1,)
    vjp_formula: ClassVar[str] = "g / y, -g * (x / y) / y"

    def compute(self, x, y):
        return np.divide(x, y)

    def vjp(self, node, g):
        x, y = node.inputs
        gx = g / y
        return gx, negative(gx * node)  # d(x/y)/dy = -(x/y)/y


@dataclasses.dataclass(frozen=True)
class Power(Elementwise):
    name: ClassVar[str] = "power"
    singular_inputs: ClassVar[tuple[int, ...]] = (0,)
    vjp_formula: ClassVar[str] = "g * y * x**(y - 1), g * x**y * log(x) (0 where x <= 0)"

    def compute(self, x, y):
        return np.power(x, y)

    def vjp(self, node, g):
        x, y = node.inputs
        gx = g * y * power(x, y - 1)
        # d/dy x**y = x**y log x; guard log at x <= 0 where the rule is undefined anyway
        safe_x = where(greater(x, 0), x, 1)
        gy = g * node * log(safe_x)
        return gx, gy


@dataclasses.dataclass(frozen=True)
class Maximum(Elementwise):
    name: ClassVar[str] = "maximum"
    vjp_formula: ClassVar[str] = "g * (x >= y), g * (x < y)  (ties to x)"

    def compute(self, x, y):
        return np.maximum(x, y)

    def vjp(self, node, g):
        x, y = node.inputs
        take_x = greater_equal(x, y)  # ties go to the first operand
        return where(take_x, g, 0), where(take_x, 0, g)


@dataclasses.dataclass(frozen=True)
class Minimum(Elementwise):
    name: ClassVar[str] = "minimum"
    vjp_formula: ClassVar[str] = "g * (x <= y), g * (x > y)  (ties to x)"

    def compute(self, x, y):
        return np.minimum(x, y)

    def vjp(self, node, g):
        x, y = node.inputs
        take_x = less_equal(x, y)
        return where(take_x, g, 0), where(take_x, 0, g)


@dataclasses.dataclass(frozen=True)
class Where(Elementwise):
    name: ClassVar[str] = "where"
    vjp_formula: ClassVar[str] = "none to c, where(c, g, 0), where(c, 0, g)"
    nondiff_inputs: ClassVar[tuple[int, ...]] = (0,)

    def infer(self, c, a, b):
        if c.dtype != np.bool_:
            raise dtype_error(f"condition must be bool, got {c.dtype.name}")
        return super().infer(c, a, b)

    def compute(self, c, a, b):
        return np.where(c, a, b)

    def vjp(self, node, g):
        c = node.inputs[0]
        return None, where(c, g, 0), where(c, 0, g)


def _comparison(cls_name: str, public: str, fn) -> type:
    cls = type(cls_name, (Comparison,), {
        "__annotations__": {"name": ClassVar[str]},
        "name": public,
        "compute": lambda self, x, y: fn(x, y),
        "__doc__": f"``np.{public}``; boolean output, no gradient.",
        "__module__": __name__,
    })
    return dataclasses.dataclass(frozen=True)(cls)


Greater = _comparison("Greater", "greater", np.greater)
GreaterEqual = _comparison("GreaterEqual", "greater_equal", np.greater_equal)
Less = _comparison("Less", "less", np.less)
LessEqual = _comparison("LessEqual", "less_equal", np.less_equal)
Equal = _comparison("Equal", "equal", np.equal)
NotEqual = _comparison("NotEqual", "not_equal", np.not_equal)


# ----------------------------------------------------------------------------- unary
@dataclasses.dataclass(frozen=True)
class Negative(Elementwise):
    name: ClassVar[str] = "negative"
    vjp_formula: ClassVar[str] = "-g"

    def compute(self, x):
        return np.negative(x)

    def vjp(self, node, g):
        return (negative(g),)


@dataclasses.dataclass(frozen=True)
class Exp(Elementwise):
    name: ClassVar[str] = "exp"
    vjp_formula: ClassVar[str] = "g * y"

    def compute(self, x):
        return np.exp(x)

    def vjp(self, node, g):
        return (g * node,)


@dataclasses.dataclass(frozen=True)
class Log(Elementwise):
    name: ClassVar[str] = "log"
    singular_inputs: ClassVar[tuple[int, ...]] = (0,)
    vjp_formula: ClassVar[str] = "g / x"

    def compute(self, x):
        return np.log(x)

    def vjp(self, node, g):
        return (g / node.inputs[0],)


@dataclasses.dataclass(frozen=True)
class Log1p(Elementwise):
    name: ClassVar[str] = "log1p"
    singular_inputs: ClassVar[tuple[int, ...]] = (0,)
    vjp_formula: ClassVar[str] = "g / (1 + x)"

    def compute(self, x):
        return np.log1p(x)

    def vjp(self, node, g):
        return (g / (node.inputs[0] + 1),)


@dataclasses.dataclass(frozen=True)
class Sqrt(Elementwise):
    name: ClassVar[str] = "sqrt"
    singular_inputs: ClassVar[tuple[int, ...]] = (0,)
    vjp_formula: ClassVar[str] = "g * 0.5 / y"

    def compute(self, x):
        return np.sqrt(x)

    def vjp(self, node, g):
        return (g * 0.5 / node,)


@dataclasses.dataclass(frozen=True)
class Square(Elementwise):
    name: ClassVar[str] = "square"
    vjp_formula: ClassVar[str] = "g * 2 x"

    def compute(self, x):
        return np.square(x)

    def vjp(self, node, g):
        return (g * 2 * node.inputs[0],)


@dataclasses.dataclass(frozen=True)
class Abs(Elementwise):
    name: ClassVar[str] = "abs"
    vjp_formula: ClassVar[str] = "g * sign(x)"

    def compute(self, x):
        return np.abs(x)

    def vjp(self, node, g):
        return (g * sign(node.inputs[0]),)


@dataclasses.dataclass(frozen=True)
class Sign(Elementwise):
    """Piecewise constant: its derivative is zero wherever it exists."""

    name: ClassVar[str] = "sign"
    differentiable: ClassVar[bool] = False

    def compute(self, x):
        return np.sign(x)


@dataclasses.dataclass(frozen=True)
class Reciprocal(Elementwise):
    name: ClassVar[str] = "reciprocal"
    singular_inputs: ClassVar[tuple[int, ...]] = (0,)
    vjp_formula: ClassVar[str] = "-g * y**2"

    def compute(self, x):
        # np.reciprocal truncates integers; 1/x matches NumPy's true division instead
        return np.reciprocal(x) if x.dtype.kind == "f" else np.divide(1, x)

    def vjp(self, node, g):
        return (negative(g * node * node),)


@dataclasses.dataclass(frozen=True)
class Sin(Elementwise):
    name: ClassVar[str] = "sin"
    vjp_formula: ClassVar[str] = "g * cos(x)"

    def compute(self, x):
        return np.sin(x)

    def vjp(self, node, g):
        return (g * cos(node.inputs[0]),)


@dataclasses.dataclass(frozen=True)
class Cos(Elementwise):
    name: ClassVar[str] = "cos"
    vjp_formula: ClassVar[str] = "-g * sin(x)"

    def compute(self, x):
        return np.cos(x)

    def vjp(self, node, g):
        return (negative(g * sin(node.inputs[0])),)


@dataclasses.dataclass(frozen=True)
class Tanh(Elementwise):
    name: ClassVar[str] = "tanh"
    vjp_formula: ClassVar[str] = "g * (1 - y**2)"

    def compute(self, x):
        return np.tanh(x)

    def vjp(self, node, g):
        return (g * (1 - square(node)),)


# ------------------------------------------------------------------------- builders
def _binary(op: Op, x, y) -> Node:
    return apply(op, *as_nodes(x, y))


def add(x, y) -> Node:
    """``x + y`` with broadcasting."""
    return _binary(Add(), x, y)


def subtract(x, y) -> Node:
    """``x - y`` with broadcasting."""
    return _binary(Subtract(), x, y)


def multiply(x, y) -> Node:
    """``x * y`` with broadcasting."""
    return _binary(Multiply(), x, y)


def divide(x, y) -> Node:
    """``x / y`` (true division) with broadcasting."""
    return _binary(Divide(), x, y)


def power(x, y) -> Node:
    """``x ** y``; the gradient wrt ``y`` uses ``log x`` and is 0 where ``x <= 0``."""
    return _binary(Power(), x, y)


def maximum(x, y) -> Node:
    """Elementwise max; at ties the gradient goes to ``x``."""
    return _binary(Maximum(), x, y)


def minimum(x, y) -> Node:
    """Elementwise min; at ties the gradient goes to ``x``."""
    return _binary(Minimum(), x, y)


def where(condition, x, y) -> Node:
    """``np.where(condition, x, y)``; no gradient flows into ``condition``."""
    c = as_node(condition)
    a, b = as_nodes(x, y)
    return apply(Where(), c, a, b)


def greater(x, y) -> Node:
    return _binary(Greater(), x, y)


def greater_equal(x, y) -> Node:
    return _binary(GreaterEqual(), x, y)


def less(x, y) -> Node:
    return _binary(Less(), x, y)


def less_equal(x, y) -> Node:
    return _binary(LessEqual(), x, y)


def equal(x, y) -> Node:
    return _binary(Equal(), x, y)


def not_equal(x, y) -> Node:
    return _binary(NotEqual(), x, y)


def negative(x) -> Node:
    return apply(Negative(), as_node(x))


def exp(x) -> Node:
    return apply(Exp(), as_node(x))


def log(x) -> Node:
    return apply(Log(), as_node(x))


def log1p(x) -> Node:
    return apply(Log1p(), as_node(x))


def sqrt(x) -> Node:
    return apply(Sqrt(), as_node(x))


def square(x) -> Node:
    return apply(Square(), as_node(x))


def abs(x) -> Node:  # noqa: A001 - NumPy's name
    return apply(Abs(), as_node(x))


def sign(x) -> Node:
    return apply(Sign(), as_node(x))


def reciprocal(x) -> Node:
    return apply(Reciprocal(), as_node(x))


def sin(x) -> Node:
    return apply(Sin(), as_node(x))


def cos(x) -> Node:
    return apply(Cos(), as_node(x))


def tanh(x) -> Node:
    return apply(Tanh(), as_node(x))


@dataclasses.dataclass(frozen=True)
class Cast(Elementwise):
    """``x.astype(dtype)``; the gradient is cast back to the operand's (float) dtype."""

    name: ClassVar[str] = "cast"
    vjp_formula: ClassVar[str] = "cast(g, x.dtype) (none if y is not float)"
    dtype: str

    def infer(self, x: TensorType) -> TensorType:
        return TensorType(x.shape, np.dtype(self.dtype))

    def compute(self, x):
        return x.astype(self.dtype, copy=False)

    def vjp(self, node, g):
        x = node.inputs[0]
        if node.dtype.kind != "f":
            return (None,)
        return (cast(g, x.dtype),)


def cast(x, dtype) -> Node:
    """``x.astype(dtype)``; a no-op (returns ``x``) when the dtype already matches."""
    x = as_node(x)
    dt = np.dtype(dtype)
    if x.dtype == dt:
        return x
    return apply(Cast(dt.name), x)


astype = cast_to = cast


@dataclasses.dataclass(frozen=True)
class Clip(Elementwise):
    """``np.clip(x, lo, hi)`` with scalar bounds (``None`` = unbounded on that side).

    At a bound itself the gradient passes through (the derivative from inside the interval).
    """

    name: ClassVar[str] = "clip"
    vjp_formula: ClassVar[str] = "g * (lo <= x <= hi)"
    lo: float | None
    hi: float | None

    def compute(self, x):
        if x.dtype.kind in "iu" and not all(b is None or float(b).is_integer() for b in (self.lo, self.hi)):
            x = x.astype(np.result_type(x.dtype, np.float16))
        lo = None if self.lo is None else x.dtype.type(self.lo)
        hi = None if self.hi is None else x.dtype.type(self.hi)
        return np.clip(x, lo, hi)

    def vjp(self, node, g):
        x = node.inputs[0]
        if self.lo is not None:
            g = where(less(x, self.lo), 0, g)
        if self.hi is not None:
            g = where(greater(x, self.hi), 0, g)
        return (g,)


def clip(x, lo=None, hi=None) -> Node:
    """``np.clip(x, lo, hi)``. Scalar bounds make one ``clip`` node; node or array bounds
    become ``minimum(maximum(x, lo), hi)`` (gradients then also flow into the bounds)."""
    x = as_node(x)
    if lo is None and hi is None:
        raise ValueError("clip: at least one of lo and hi must be given")
    if all(b is None or isinstance(b, (int, float, np.integer, np.floating)) for b in (lo, hi)):
        return apply(Clip(None if lo is None else float(lo), None if hi is None else float(hi)), x)
    out = x if lo is None else maximum(x, lo)
    return out if hi is None else minimum(out, hi)
