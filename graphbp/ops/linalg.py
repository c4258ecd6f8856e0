"""Matrix products with ``np.matmul`` semantics (vectors, matrices, broadcast batches)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..graph.cost import Poly, size_poly
from ..graph.node import Node
from ..graph.types import TensorType, broadcast_shapes, format_shape
from .base import Op, apply, as_nodes, dtype_error, shape_error


@dataclasses.dataclass(frozen=True)
class MatMul(Op):
    name: ClassVar[str] = "matmul"
    vjp_formula: ClassVar[str] = "g @ swapaxes(b), swapaxes(a) @ g  (vectors promoted to matrices)"

    def batched_form(self, stacked, types):
        (sa, sb), (a, b) = stacked, types
        if sa and sb:
            return self if a.ndim == b.ndim >= 2 else None
        if sa:
            return self if b.ndim <= 2 else None
        return self if a.ndim <= 2 and b.ndim >= 2 else None

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        if a.ndim == 0 or b.ndim == 0:
            raise shape_error("matmul needs operands with at least 1 dim (use multiply for scalars)")
        for t in (a, b):
            if t.dtype.kind not in "fiu":
                raise dtype_error(f"matmul needs numeric operands, got {t.dtype.name}")
        ash = (1,) + a.shape if a.ndim == 1 else a.shape
        bsh = b.shape + (1,) if b.ndim == 1 else b.shape
        k1, k2 = ash[-1], bsh[-2]
        if k1 is not None and k2 is not None and k1 != k2:
            raise shape_error(
                f"contracted dims differ: {format_shape(a.shape)} @ {format_shape(b.shape)} "
                f"({k1} != {k2})"
            )
        try:
            batch = broadcast_shapes(ash[:-2], bsh[:-2])
        except ValueError as e:
            raise shape_error(f"batch dims do not broadcast: {e}") from None
        shape = batch + (ash[-2], bsh[-1])
        if a.ndim == 1:
            shape = shape[:-2] + shape[-1:]
        if b.ndim == 1:
            shape = shape[:-1]
        return TensorType(shape, np.result_type(a.dtype, b.dtype))

    def compute(self, a, b):
        return np.matmul(a, b)

    def flops(self, in_types, out_type):
        """``2 K`` per output element (a multiply and an add per contracted pair); an
        unknown ``K`` counts as one more row factor."""
        return contraction_flops(in_types[0], out_type)

    def vjp(self, node: Node, g: Node):
        from .shape import expand_dims, squeeze, swapaxes

        a, b = node.inputs
        # Treat vectors as matrices so one pair of formulas covers every case.
        a2 = expand_dims(a, 0) if a.ndim == 1 else a
        b2 = expand_dims(b, -1) if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = expand_dims(g2, -2 if b.ndim > 1 else 0)
        if b.ndim == 1:
            g2 = expand_dims(g2, -1)
        ga = matmul(g2, swapaxes(b2, -1, -2))
        gb = matmul(swapaxes(a2, -1, -2), g2)
        if a.ndim == 1:
            ga = squeeze(ga, -2)
        if b.ndim == 1:
            gb = squeeze(gb, -1)
        return ga, gb


def contraction_flops(a: TensorType, out: TensorType) -> Poly:
    """FLOPs of a matmul of ``a`` (contracted over its last dim) producing ``out``."""
    k = a.shape[-1]
    size = size_poly(out)
    return size.shift().scale(2) if k is None else size.scale(2 * k)


def matmul(a, b) -> Node:
    """``a @ b`` as ``np.matmul``: batched with broadcasting; 1-D operands act as vectors."""
    return apply(MatMul(), *as_nodes(a, b))
