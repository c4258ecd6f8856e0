"""Activation functions: elementwise, with kernels that never overflow and one-line VJPs.

Each activation is a primitive (not a composite of ``exp``/``log`` nodes) because the
stable kernel is one NumPy expression while the composite would need several nodes and
would still overflow (``exp(x)`` of a large logit) before any rewrite could fix it. The VJPs
are built from public builders, so second derivatives work. ``gelu`` is the exception:
a composite of ``tanh`` (or ``erf``) and arithmetic, which cannot overflow where it matters
and which the general passes compile as fast as a fused kernel.

``erf`` is its own op: NumPy has none and SciPy is not a dependency. Its kernel is W. J.
Cody's rational Chebyshev approximation (Math. Comp. 23, 1969; Netlib SPECFUN ``calerf``),
accurate to about 1e-16 relative in float64 on the whole real line.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numpy as np

from ..graph.node import Node
from .base import apply, as_node, dtype_error
from .elementwise import Elementwise, cast, exp, greater, square, tanh, where

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_SQRT_1_2 = math.sqrt(0.5)


class _FloatUnary(Elementwise):
    """An elementwise op on float data: integers are promoted as ``np.exp`` would."""

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        if dtype.kind not in "fiub":
            raise dtype_error(f"needs a numeric operand, got {dtype.name}")
        return dtype if dtype.kind == "f" else np.result_type(dtype, np.float16)


# ------------------------------------------------------------------------------ relu
@dataclasses.dataclass(frozen=True)
class Relu(Elementwise):
    """``max(x, 0)``; the derivative at exactly 0 is taken as 0.

    The rule reads the output (``y > 0`` exactly where ``x > 0``), as PyTorch's does: the
    backward then keeps ``y``, which the next layer's rule keeps anyway, rather than ``x``,
    and a producer of ``x`` may absorb the relu (``matmul_bias_act``, ``conv_bias_act``)."""

    name: ClassVar[str] = "relu"
    vjp_formula: ClassVar[str] = "g * (y > 0)"

    def compute(self, x):
        return np.maximum(x, np.zeros((), x.dtype))

    def vjp(self, node, g):
        return (where(greater(node, 0), g, 0),)


@dataclasses.dataclass(frozen=True)
class LeakyRelu(_FloatUnary):
    """``x`` for ``x > 0``, ``alpha * x`` otherwise."""

    name: ClassVar[str] = "leaky_relu"
    vjp_formula: ClassVar[str] = "g * where(x > 0, 1, alpha)"
    alpha: float = 0.01

    def compute(self, x):
        x = x if x.dtype.kind == "f" else x.astype(self.result_dtype(x.dtype))
        return np.where(x > 0, x, x * x.dtype.type(self.alpha))

    def vjp(self, node, g):
        return (where(greater(node.inputs[0], 0), g, g * self.alpha),)


@dataclasses.dataclass(frozen=True)
class Elu(_FloatUnary):
    """``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise (``expm1`` of ``min(x, 0)``,
    so large positive inputs never reach ``exp``)."""

    name: ClassVar[str] = "elu"
    vjp_formula: ClassVar[str] = "g * where(x > 0, 1, y + alpha)"
    alpha: float = 1.0

    def compute(self, x):
        x = x if x.dtype.kind == "f" else x.astype(self.result_dtype(x.dtype))
        neg = x.dtype.type(self.alpha) * np.expm1(np.minimum(x, 0))
        return np.where(x > 0, x, neg)

    def vjp(self, node, g):
        # alpha * exp(x) == y + alpha on the negative side: reuse the output
        return (where(greater(node.inputs[0], 0), g, g * (node + self.alpha)),)


# -------------------------------------------------------------------- sigmoid family
def _sigmoid_kernel(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` evaluated with ``exp(-|x|)`` only, so nothing overflows."""
    with np.errstate(under="ignore"):
        e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@dataclasses.dataclass(frozen=True)
class Sigmoid(_FloatUnary):
    """The logistic function; stable for any ``|x|`` (no overflow warnings)."""

    name: ClassVar[str] = "sigmoid"
    vjp_formula: ClassVar[str] = "g * y * (1 - y)"

    def compute(self, x):
        x = x if x.dtype.kind == "f" else x.astype(self.result_dtype(x.dtype))
        return _sigmoid_kernel(x)

    def vjp(self, node, g):
        return (g * node * (1 - node),)


@dataclasses.dataclass(frozen=True)
class Softplus(_FloatUnary):
    """``log(1 + exp(x))`` as ``np.logaddexp(0, x)``: exact for large ``|x|``."""

    name: ClassVar[str] = "softplus"
    vjp_formula: ClassVar[str] = "g * sigmoid(x)"

    def compute(self, x):
        x = x if x.dtype.kind == "f" else x.astype(self.result_dtype(x.dtype))
        with np.errstate(under="ignore"):
            return np.logaddexp(x.dtype.type(0), x)

    def vjp(self, node, g):
        return (g * sigmoid(node.inputs[0]),)


# ----------------------------------------------------------------------------- erf
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)
_ONE_OVER_SQRT_PI = 5.6418958354775628695e-1


def erf_kernel(x: np.ndarray) -> np.ndarray:
    """Vectorised Cody ``calerf`` in float64 (three intervals of ``|x|``), cast back."""
    xf = np.asarray(x, dtype=np.float64)
    y = np.abs(xf)
    out = np.empty_like(xf)
    small = y <= 0.46875
    if small.any():  # erf(x) = x * R(x^2)
        ys = y[small]
        z = ys * ys
        num, den = _A[4] * z, z
        for i in range(3):
            num = (num + _A[i]) * z
            den = (den + _B[i]) * z
        out[small] = xf[small] * (num + _A[3]) / (den + _B[3])
    mid = (~small) & (y <= 4.0)
    big = y > 4.0
    erfc = np.zeros_like(xf)
    if mid.any():  # erfc(y) = exp(-y^2) * R(y)
        ym = y[mid]
        num, den = _C[8] * ym, ym
        for i in range(7):
            num = (num + _C[i]) * ym
            den = (den + _D[i]) * ym
        erfc[mid] = _exp_neg_square(ym) * (num + _C[7]) / (den + _D[7])
    if big.any():  # erfc(y) = exp(-y^2) / y * (1/sqrt(pi) - R(1/y^2) / y^2)
        yb = np.minimum(y[big], 30.0)  # erfc(30) underflows to 0; also keeps inf finite
        with np.errstate(over="ignore", under="ignore"):
            z = 1.0 / (yb * yb)
            num, den = _P[5] * z, z
            for i in range(4):
                num = (num + _P[i]) * z
                den = (den + _Q[i]) * z
            r = z * (num + _P[4]) / (den + _Q[4])
            erfc[big] = _exp_neg_square(yb) * (_ONE_OVER_SQRT_PI - r) / yb
    rest = ~small
    out[rest] = np.copysign(1.0 - erfc[rest], xf[rest])
    out[np.isnan(xf)] = np.nan
    return out.astype(float_result(np.asarray(x).dtype), copy=False)


def _exp_neg_square(y: np.ndarray) -> np.ndarray:
    """``exp(-y*y)`` with Cody's split of ``y`` so the rounding error of ``y*y`` is not
    amplified by ``exp`` (matters for ``|y|`` in the tail)."""
    ysq = np.trunc(y * 16.0) / 16.0
    delta = (y - ysq) * (y + ysq)
    with np.errstate(under="ignore"):
        return np.exp(-ysq * ysq) * np.exp(-delta)


def float_result(dtype: np.dtype) -> np.dtype:
    return dtype if dtype.kind == "f" else np.result_type(dtype, np.float16)


@dataclasses.dataclass(frozen=True)
class Erf(_FloatUnary):
    """The error function (Cody's rational approximation; see the module docstring)."""

    name: ClassVar[str] = "erf"
    vjp_formula: ClassVar[str] = "g * 2 / sqrt(pi) * exp(-x**2)"

    def compute(self, x):
        return erf_kernel(x)

    def vjp(self, node, g):
        x = node.inputs[0]
        return (g * (2 / math.sqrt(math.pi)) * exp(-square(x)),)


# ------------------------------------------------------------------------- builders
def relu(x) -> Node:
    """``np.maximum(x, 0)``; the gradient at 0 is 0."""
    return apply(Relu(), as_node(x))


def leaky_relu(x, alpha: float = 0.01) -> Node:
    """``x if x > 0 else alpha * x``."""
    return apply(LeakyRelu(float(alpha)), as_node(x))


def elu(x, alpha: float = 1.0) -> Node:
    """``x if x > 0 else alpha * (exp(x) - 1)``."""
    return apply(Elu(float(alpha)), as_node(x))


def gelu(x, approximate: str = "tanh") -> Node:
    """GELU, ``x * Phi(x)``: ``approximate="tanh"`` (default) or ``"none"`` (erf form).

    A composite of primitives, not an op: ``0.5 x (1 + tanh(k (x + 0.044715 x^3)))`` with
    ``k = sqrt(2/pi)``, or ``0.5 x (1 + erf(x / sqrt 2))``. Its derivative comes from the
    primitives' VJPs, and the compiler's general passes (CSE, ``collect_terms``) make value
    and derivative share one ``tanh`` and one loop, as fast as a hand-fused op was
    (docs/performance.md, W4). Integer operands are promoted as ``np.tanh`` would.
    """
    if approximate not in ("tanh", "none"):
        raise ValueError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")
    x = as_node(x)
    if x.dtype.kind in "iub":
        x = cast(x, float_result(x.dtype))
    if approximate == "tanh":
        return 0.5 * x * (1 + tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1 + erf(x * _SQRT_1_2))


def erf(x) -> Node:
    """The error function, accurate to ~1e-16 in float64 (no SciPy needed)."""
    return apply(Erf(), as_node(x))


def sigmoid(x) -> Node:
    """``1 / (1 + exp(-x))``, computed without overflow for any ``x``."""
    return apply(Sigmoid(), as_node(x))


def softplus(x) -> Node:
    """``log(1 + exp(x))`` via ``np.logaddexp(0, x)``."""
    return apply(Softplus(), as_node(x))
