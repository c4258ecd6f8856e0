"""2-D max and average pooling on NCHW tensors, as PyTorch's defaults (floor mode).

Kernels loop over the ``kH * kW`` window offsets, each step one NumPy expression over a strided
slice of every window at once: no Python loop over pixels, no ``np.add.at``.

Max pooling pads with ``-inf`` and sends the gradient of a window to *one* maximal element, the
first in row-major window order (PyTorch picks one too); ties therefore do not split it. The
gradient op ``max_pool2d_grad(x, y, g)`` is linear in ``g``; its own gradient picks a
cotangent's values at the same positions (``max_pool2d_gather``), so second derivatives work.
Average pooling counts padded zeros in the divisor (``count_include_pad=True``); its gradient
``avg_pool2d_grad`` spreads ``g / (kH * kW)`` over each window and its adjoint is ``avg_pool2d``.
Global average pooling is ``gb.mean(x, axis=(2, 3))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from ..errors import ShapeError
from ..graph.cost import Poly, size_poly
from ..graph.node import Node
from ..graph.types import TensorType, format_shape
from .base import Op, apply, as_node, describe_error, dtype_error, shape_error
from .conv import is_pair

Pair = tuple[int, int]


def _windows(shape, kernel: Pair, stride: Pair) -> Iterator[tuple[int, int, tuple[slice, ...]]]:
    """For each kernel offset (i, j), the slice of the padded input it reads in every window."""
    ho, wo = shape
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            yield i, j, (Ellipsis, slice(i, i + stride[0] * (ho - 1) + 1, stride[0]),
                         slice(j, j + stride[1] * (wo - 1) + 1, stride[1]))


def _pad(x: np.ndarray, padding: Pair, value: float) -> np.ndarray:
    if padding == (0, 0):
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=value)


def _crop(xp: np.ndarray, padding: Pair) -> np.ndarray:
    ph, pw = padding
    return xp[..., ph: xp.shape[2] - ph, pw: xp.shape[3] - pw]


@dataclasses.dataclass(frozen=True)
class _Pool(Op):
    kernel: Pair
    stride: Pair
    padding: Pair

    def out_hw(self, hw) -> Pair:
        ho, wo = ((n + 2 * p - k) // s + 1 for n, k, s, p in zip(hw, self.kernel, self.stride, self.padding))
        return ho, wo

    def check(self, x: TensorType, what: str = "input") -> Pair:
        if x.ndim != 4:
            raise shape_error(f"{what} must be 4-D (N, C, H, W), got {format_shape(x.shape)}")
        if x.shape[2] is None or x.shape[3] is None:
            raise shape_error(f"{what} {format_shape(x.shape)} needs known spatial dims")
        if x.dtype.kind != "f":
            raise dtype_error(f"{what} must be floating point, got {x.dtype.name}")
        setting = f"kernel_size={self.kernel}, stride={self.stride}, padding={self.padding}"
        if not (is_pair(self.kernel, 1) and is_pair(self.stride, 1) and is_pair(self.padding, 0)):
            # the builders check these; a graph file or an ONNX model can hold any value here
            raise shape_error(f"kernel sizes and strides must be pairs of ints >= 1, padding a pair of ints >= 0 "
                              f"({setting})")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise shape_error(f"padding must be at most half the kernel ({setting})")
        if any(n + 2 * p < k for n, p, k in zip(x.shape[2:], self.padding, self.kernel)):
            raise shape_error(f"kernel is larger than the padded input {format_shape(x.shape)} ({setting})")
        return self.out_hw(x.shape[2:])

    def flops(self, in_types, out_type) -> Poly:
        return size_poly(out_type).scale(self.kernel[0] * self.kernel[1])


# ------------------------------------------------------------------------- max pooling
def _max(xp: np.ndarray, pool: _Pool, out_hw: Pair) -> np.ndarray:
    out = None
    for _, _, sl in _windows(out_hw, pool.kernel, pool.stride):
        out = xp[sl].copy() if out is None else np.maximum(out, xp[sl], out=out)
    return out


def _first_max(xp: np.ndarray, y: np.ndarray, pool: _Pool) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Per offset: the slice and the mask of windows whose first maximum sits at that offset
    (the mask buffer is reused from one offset to the next)."""
    free = np.ones(y.shape, bool)
    hit = np.empty(y.shape, bool)
    offsets = list(_windows(y.shape[2:], pool.kernel, pool.stride))
    for k, (_, _, sl) in enumerate(offsets):
        np.equal(xp[sl], y, out=hit)
        if k:
            hit &= free
        if k < len(offsets) - 1:
            free ^= hit  # hit is a subset of free: this clears the windows just served
        yield sl, hit


@dataclasses.dataclass(frozen=True)
class MaxPool2D(_Pool):
    """The maximum of each window."""

    name: ClassVar[str] = "max_pool2d"
    vjp_formula: ClassVar[str] = "max_pool2d_grad(x, y, g): g to the first maximum of each window"

    def infer(self, x: TensorType) -> TensorType:
        return TensorType((*x.shape[:2], *self.check(x)), x.dtype)

    def compute(self, x):
        return _max(_pad(x, self.padding, -np.inf), self, self.out_hw(x.shape[2:]))

    def vjp(self, node: Node, g: Node):
        return (apply(MaxPool2DGrad(self.kernel, self.stride, self.padding), node.inputs[0], node, g),)


@dataclasses.dataclass(frozen=True)
class MaxPool2DGrad(_Pool):
    """``g`` of each window routed to its first maximal element of ``x`` (``y`` is the pool)."""

    name: ClassVar[str] = "max_pool2d_grad"
    nondiff_inputs: ClassVar[tuple[int, ...]] = (0, 1)
    vjp_formula: ClassVar[str] = "none to x and y (piecewise constant); max_pool2d_gather(x, v) to g"

    def infer(self, x: TensorType, y: TensorType, g: TensorType) -> TensorType:
        hw = self.check(x)
        for t, what in ((y, "pooled output"), (g, "cotangent")):
            if t.ndim != 4 or tuple(t.shape[2:]) != hw or t.shape[1] != x.shape[1]:
                raise shape_error(f"{what} {format_shape(t.shape)} does not fit the pool of {format_shape(x.shape)}")
        return TensorType(x.shape, np.result_type(x.dtype, g.dtype))

    def compute(self, x, y, g):
        xp = _pad(x, self.padding, -np.inf)
        dxp = np.zeros(xp.shape, np.result_type(x.dtype, g.dtype))
        disjoint = all(s >= k for s, k in zip(self.stride, self.kernel))
        for sl, hit in _first_max(xp, y, self):
            if disjoint:  # each input element is in at most one window: write, do not add
                np.multiply(g, hit, out=dxp[sl])
            else:
                dxp[sl] += g * hit
        return _crop(dxp, self.padding)

    def vjp(self, node: Node, v: Node):
        x = node.inputs[0]
        return None, None, apply(MaxPool2DGather(self.kernel, self.stride, self.padding), x, v)


@dataclasses.dataclass(frozen=True)
class MaxPool2DGather(_Pool):
    """``v`` read at the first maximal element of each window of ``x``: the adjoint of
    ``max_pool2d_grad`` in its cotangent (``max_pool2d(x) == max_pool2d_gather(x, x)``)."""

    name: ClassVar[str] = "max_pool2d_gather"
    nondiff_inputs: ClassVar[tuple[int, ...]] = (0,)
    vjp_formula: ClassVar[str] = "none to x; max_pool2d_grad(x, max_pool2d(x), g) to v"

    def infer(self, x: TensorType, v: TensorType) -> TensorType:
        hw = self.check(x)
        if tuple(v.shape[1:]) != tuple(x.shape[1:]) or v.ndim != 4:
            raise shape_error(f"values {format_shape(v.shape)} do not fit the input {format_shape(x.shape)}")
        return TensorType((*x.shape[:2], *hw), v.dtype)

    def compute(self, x, v):
        xp = _pad(x, self.padding, -np.inf)
        vp = _pad(v, self.padding, 0)
        y = _max(xp, self, self.out_hw(x.shape[2:]))
        out = np.zeros(y.shape, v.dtype)
        for sl, hit in _first_max(xp, y, self):
            np.copyto(out, vp[sl], where=hit)
        return out

    def vjp(self, node: Node, g: Node):
        x = node.inputs[0]
        pool = MaxPool2D(self.kernel, self.stride, self.padding)
        return None, apply(MaxPool2DGrad(self.kernel, self.stride, self.padding), x, apply(pool, x), g)


# ------------------------------------------------------------------------- average pooling
@dataclasses.dataclass(frozen=True)
class AvgPool2D(_Pool):
    """The mean of each window, padded zeros included."""

    name: ClassVar[str] = "avg_pool2d"
    vjp_formula: ClassVar[str] = "avg_pool2d_grad(g): g / (kH * kW) spread over each window"

    def infer(self, x: TensorType) -> TensorType:
        return TensorType((*x.shape[:2], *self.check(x)), x.dtype)

    def compute(self, x):
        xp = _pad(x, self.padding, 0)
        out = None
        for _, _, sl in _windows(self.out_hw(x.shape[2:]), self.kernel, self.stride):
            out = xp[sl].copy() if out is None else np.add(out, xp[sl], out=out)
        out *= out.dtype.type(1.0 / (self.kernel[0] * self.kernel[1]))
        return out

    def vjp(self, node: Node, g: Node):
        x = node.inputs[0]
        op = AvgPool2DGrad(self.kernel, self.stride, self.padding, (int(x.shape[2]), int(x.shape[3])))
        return (apply(op, g),)


@dataclasses.dataclass(frozen=True)
class AvgPool2DGrad(_Pool):
    """The adjoint of ``avg_pool2d`` for an input of spatial size ``in_hw``."""

    name: ClassVar[str] = "avg_pool2d_grad"
    vjp_formula: ClassVar[str] = "avg_pool2d(g)"
    in_hw: Pair = (1, 1)

    def infer(self, g: TensorType) -> TensorType:
        hw = self.check(TensorType((*g.shape[:2], *self.in_hw), g.dtype), "input")
        if g.ndim != 4 or tuple(g.shape[2:]) != hw:
            raise shape_error(f"cotangent {format_shape(g.shape)} does not fit a pool of {self.in_hw}")
        return TensorType((*g.shape[:2], *self.in_hw), g.dtype)

    def compute(self, g):
        ph, pw = self.padding
        dxp = np.zeros((*g.shape[:2], self.in_hw[0] + 2 * ph, self.in_hw[1] + 2 * pw), g.dtype)
        share = g * g.dtype.type(1.0 / (self.kernel[0] * self.kernel[1]))
        for _, _, sl in _windows(g.shape[2:], self.kernel, self.stride):
            dxp[sl] += share
        return _crop(dxp, self.padding)

    def vjp(self, node: Node, v: Node):
        return (apply(AvgPool2D(self.kernel, self.stride, self.padding), v),)

    def flops(self, in_types, out_type) -> Poly:
        return size_poly(in_types[0]).scale(self.kernel[0] * self.kernel[1])


# ------------------------------------------------------------------------- builders
def _pool_op(cls, x: Node, kernel_size, stride, padding) -> _Pool:
    def pair(v, what, minimum):
        p = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
        if len(p) != 2 or not all(isinstance(a, (int, np.integer)) and a >= minimum for a in p):
            dummy = cls((1, 1), (1, 1), (0, 0))
            raise ShapeError(describe_error(dummy, [x], f"{what} must be an int >= {minimum} or a pair, got {v!r}"))
        return int(p[0]), int(p[1])

    k = pair(kernel_size, "kernel_size", 1)
    return cls(k, k if stride is None else pair(stride, "stride", 1), pair(padding, "padding", 0))


def max_pool2d(x, kernel_size, stride=None, padding=0) -> Node:
    """Max pooling as ``torch.nn.functional.max_pool2d`` (``stride`` defaults to the kernel).

    The gradient of each window goes to one maximal element (the first in row-major order)."""
    x = as_node(x)
    return apply(_pool_op(MaxPool2D, x, kernel_size, stride, padding), x)


def avg_pool2d(x, kernel_size, stride=None, padding=0) -> Node:
    """Average pooling as ``torch.nn.functional.avg_pool2d`` (padded zeros are counted)."""
    x = as_node(x)
    return apply(_pool_op(AvgPool2D, x, kernel_size, stride, padding), x)
