"""Ops the passes make from several others: n-ary add, matmul + bias + activation and
convolution + bias + activation.

They are ops like any other (``infer``, ``compute``, ``vjp``, facts, an op-database row,
saved by ``gb.save``), so a rewritten graph can be verified, rendered, saved and
differentiated again. Their VJPs *un-fuse*: they chain the absorbed ops' own rules over the
re-emitted parts (passes run after autodiff, so this serves second derivatives).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ..graph.cost import Poly, size_poly
from ..graph.types import TensorType
from . import elementwise as ew
from .activations import Relu, Sigmoid
from .base import Op, apply, shape_error
from .conv import Conv2D, _Geometry
from .linalg import MatMul, contraction_flops, matmul


@dataclasses.dataclass(frozen=True)
class AddN(ew.Elementwise):
    """``x0 + x1 + ... + xn`` in one op: one output buffer, accumulated in place.

    Autodiff sums partial gradients as a chain of binary adds; the accumulation pass
    flattens such chains into this op.
    """

    name: ClassVar[str] = "add_n"
    vjp_formula: ClassVar[str] = "g for every term"
    n: int = 2

    def infer(self, *types: TensorType) -> TensorType:
        if len(types) != self.n:
            raise shape_error(f"expects {self.n} terms, got {len(types)}")
        return super().infer(*types)

    def compute(self, *xs, out=None):
        shape = np.broadcast_shapes(*(x.shape for x in xs))
        dtype = np.result_type(*xs)
        if out is None:
            out = np.empty(shape, dtype)
        elif any(np.may_share_memory(out, x) for x in xs[2:]):  # out aliases a later term
            acc = np.add(xs[0], xs[1])
            for x in xs[2:]:
                np.add(acc, x, out=acc)
            out[...] = acc
            return out
        np.add(xs[0], xs[1], out=out)
        for x in xs[2:]:
            np.add(out, x, out=out)
        return out

    def result_dtype(self, *dtypes):
        return np.result_type(*dtypes)

    def flops(self, in_types: Sequence[TensorType], out_type: TensorType) -> Poly:
        """``n - 1`` additions per output element."""
        return size_poly(out_type).scale(max(1, len(in_types) - 1))

    def vjp(self, node, g):
        return (g,) * len(node.inputs)


MATMUL_ACTIVATIONS: dict[str, Op] = {"tanh": ew.Tanh(), "sigmoid": Sigmoid(), "relu": Relu()}
"""The activations ``matmul_bias_act`` absorbs, by name (a name keeps the op saveable)."""

_IN_PLACE: dict[str, np.ufunc] = {"tanh": np.tanh}
"""Activations that are one ufunc, applied in place on the matmul's result buffer."""


class _AbsorbsActivation:
    """What ``matmul_bias_act`` and ``conv_bias_act`` share: the activation they absorbed,
    named (a name keeps the op saveable), and the names of the ops they stand for."""

    activation: str | None
    absorbed: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.activation is not None and self.activation not in MATMUL_ACTIVATIONS:
            raise ValueError(f"{self.name}: activation must be one of {sorted(MATMUL_ACTIVATIONS)} "
                             f"or None, got {self.activation!r}")

    @property
    def activation_op(self) -> Op | None:
        return None if self.activation is None else MATMUL_ACTIVATIONS[self.activation]

    def parts(self) -> tuple[str, ...]:
        return self.absorbed


@dataclasses.dataclass(frozen=True)
class MatMulBiasAct(_AbsorbsActivation, Op):
    """``act(a @ w + bias)``: the matmul writes its result buffer, bias and activation are
    applied in place (``activation`` names one of :data:`MATMUL_ACTIVATIONS`, or ``None``)."""

    name: ClassVar[str] = "matmul_bias_act"
    vjp_formula: ClassVar[str] = "gz = act's rule at z = a @ w + bias; gz @ w.T, a.T @ gz, gz"
    activation: str | None = None
    absorbed: tuple[str, ...] = ()

    def infer(self, a: TensorType, w: TensorType, b: TensorType) -> TensorType:
        z = ew.Add().infer(MatMul().infer(a, w), b)
        return z if self.activation is None else self.activation_op.infer(z)

    def flops(self, in_types: Sequence[TensorType], out_type: TensorType) -> Poly:
        """The matmul's ``2 K`` per element plus the bias and activation's own counts."""
        z = ew.Add().infer(MatMul().infer(in_types[0], in_types[1]), in_types[2])
        total = contraction_flops(in_types[0], z) + size_poly(z)
        return total if self.activation is None else total + self.activation_op.flops((z,), out_type)

    def compute(self, a, w, b, out=None):
        z = np.matmul(a, w, out=out) if out is not None else np.matmul(a, w)
        if z.dtype != np.result_type(z, b) or z.shape != np.broadcast_shapes(z.shape, b.shape):
            z = z + b
        else:
            np.add(z, b, out=z)
        if self.activation is None:
            return z
        uf = _IN_PLACE.get(self.activation)
        if uf is not None and z.dtype.kind == "f":
            return uf(z, out=z)
        res = np.asarray(self.activation_op.compute(z))
        if out is None:
            return res
        out[...] = res
        return out

    def vjp(self, node, g):
        a, w, b = node.inputs
        mm = matmul(a, w)
        z = ew.add(mm, b)
        gz = g if self.activation is None else self.activation_op.vjp(apply(self.activation_op, z), g)[0]
        ga, gw = MatMul().vjp(mm, gz)
        return ga, gw, gz  # autodiff sums gz back to the bias's shape


@dataclasses.dataclass(frozen=True)
class ConvBiasAct(_AbsorbsActivation, _Geometry):
    """``act(conv2d(x, w) + bias)``: the convolution's result buffer takes the bias and the
    activation in place, as ``matmul_bias_act`` does for a dense layer. The fields are the
    convolution's settings (plain data, so graph files hold them); ``bias`` broadcasts over
    the output (``(C, 1, 1)`` per channel)."""

    name: ClassVar[str] = "conv_bias_act"
    vjp_formula: ClassVar[str] = "gz = act's rule at z = conv2d(x, w) + bias; conv2d's rule for x and w, gz"
    activation: str | None = None
    absorbed: tuple[str, ...] = ()

    @classmethod
    def of(cls, conv: Conv2D, activation: str | None, absorbed: tuple[str, ...]) -> "ConvBiasAct":
        return cls(conv.stride, conv.padding, conv.dilation, conv.groups, activation, absorbed)

    @property
    def conv(self) -> Conv2D:
        return Conv2D(self.stride, self.padding, self.dilation, self.groups)

    def infer(self, x: TensorType, w: TensorType, b: TensorType) -> TensorType:
        y = self.conv.infer(x, w)
        z = ew.Add().infer(y, b)
        if z.shape != y.shape:
            raise shape_error(f"bias {b} would broadcast the convolution's output {y}")
        return z if self.activation is None else self.activation_op.infer(z)

    def flops(self, in_types: Sequence[TensorType], out_type: TensorType) -> Poly:
        y = self.conv.infer(in_types[0], in_types[1])
        total = self.conv.flops(in_types[:2], y) + size_poly(y)
        return total if self.activation is None else total + self.activation_op.flops((y,), out_type)

    def compute(self, x, w, b):
        z = np.asarray(self.conv.compute(x, w))
        if z.dtype != np.result_type(z, b) or not z.flags.writeable:
            z = z + b
        else:
            np.add(z, b, out=z)
        if self.activation is None:
            return z
        if self.activation == "relu" and z.dtype.kind == "f":
            return np.maximum(z, 0, out=z)
        uf = _IN_PLACE.get(self.activation)
        if uf is not None and z.dtype.kind == "f":
            return uf(z, out=z)
        return np.asarray(self.activation_op.compute(z))

    def vjp(self, node, g):
        x, w, b = node.inputs
        y = apply(self.conv, x, w)
        z = ew.add(y, b)
        gz = g if self.activation is None else self.activation_op.vjp(apply(self.activation_op, z), g)[0]
        gx, gw = self.conv.vjp(y, gz)
        return gx, gw, gz  # autodiff sums gz back to the bias's shape
