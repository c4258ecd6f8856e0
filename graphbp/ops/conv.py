"""Convolutions on NCHW tensors with PyTorch's layouts and semantics.

Three primitives close under differentiation, so gradients of any order are ordinary nodes
and the diagrams read like the textbook:

* ``conv2d(x, w)``: cross-correlation, weight ``(C_out, C_in / groups, kH, kW)``.
* ``conv_transpose2d(x, w)``: the adjoint of ``conv2d`` in its input, weight
  ``(C_in, C_out / groups, kH, kW)``. It *is* the input gradient of ``conv2d``, and
  ``conv2d`` is its input gradient.
* ``conv2d_weight_grad(x, g)``: the weight gradient of ``conv2d`` (a bilinear map of the input
  and the output cotangent), whose own gradients are a ``conv_transpose2d`` and a ``conv2d``.

Padding is stored per side, ``((top, bottom), (left, right))``, because ``padding="same"``
with an even kernel pads one more zero at the bottom/right (as PyTorch). Inside the transposed
convolution the same pair means rows *cropped* from the full output; a negative entry extends
it with zeros (PyTorch's ``output_padding``). Spatial and channel dims must be known when the
graph is built; the batch dim may be unknown.

Kernels live in ``conv_kernels.py``: im2col with one strided copy and one ``matmul``, each
writing into an output and scratch arrays the caller passes (the executor passes buffers of
its memory plan).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from ..errors import ShapeError
from ..graph.cost import Poly, size_poly
from ..graph.node import Node
from ..graph.types import TensorType, format_shape
from .base import Op, apply, as_node, describe_error, dtype_error, shape_error
from .conv_kernels import Pads, Pair, conv2d_kernel, conv2d_weight_grad_kernel, conv_transpose2d_kernel  # noqa: F401


# ------------------------------------------------------------------------- shape rules
def _out_len(n: int, k: int, s: int, d: int, lo: int, hi: int) -> int:
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def _known(t: TensorType, what: str, dims: Sequence[int]) -> None:
    if t.ndim != 4:
        raise shape_error(f"{what} must be 4-D (N, C, H, W), got {format_shape(t.shape)}")
    if any(t.shape[i] is None for i in dims):
        raise shape_error(f"{what} {format_shape(t.shape)} needs known channel and spatial dims")
    if t.dtype.kind != "f":
        raise dtype_error(f"{what} must be floating point, got {t.dtype.name}")


def _settings(op) -> str:
    return (f"stride={op.stride}, padding={op.padding}, dilation={op.dilation}, "
            f"groups={op.groups}")


def is_pair(value, least: int) -> bool:
    """A pair of ints, each at least ``least`` (an image op's stride, kernel or padding)."""
    return (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) and v >= least for v in value))


def _check_geometry(op, kernel: Pair | None = None) -> None:
    """Strides, dilations (and a kernel) are pairs of ints >= 1, the padding a pair of
    (before, after) int pairs (negative: rows cropped, as a transposed convolution's
    ``output_padding`` makes its gradient's): the builders check these, but a graph file or an
    ONNX model can hold any value here."""
    pads = op.padding
    if not (is_pair(op.stride, 1) and is_pair(op.dilation, 1) and (kernel is None or is_pair(kernel, 1))
            and isinstance(pads, tuple) and len(pads) == 2 and all(is_pair(p, -2**62) for p in pads)):
        kern = "" if kernel is None else f", kernel={kernel}"
        raise shape_error(f"invalid geometry ({_settings(op)}{kern}): strides, dilations and kernel sizes "
                          "must be pairs of ints >= 1, the padding two (before, after) pairs of ints")


def _conv_out(op, x: TensorType, kernel: Pair) -> tuple[int, int]:
    """Output height and width of a convolution of ``x`` (checked)."""
    _check_geometry(op, kernel)
    out = []
    for n, k, s, d, (lo, hi) in zip(x.shape[2:], kernel, op.stride, op.dilation, op.padding):
        span = d * (k - 1) + 1
        if n + lo + hi < span:
            raise shape_error(
                f"kernel {kernel[0]}x{kernel[1]} spans {span} with dilation {d}, more than the padded "
                f"input {n + lo + hi} ({_settings(op)}); input {format_shape(x.shape)}"
            )
        out.append(_out_len(n, k, s, d, lo, hi))
    return out[0], out[1]


def _check_groups(op, cin: int, cout: int, what: str) -> None:
    if op.groups < 1 or cin % op.groups or cout % op.groups:
        raise shape_error(f"groups={op.groups} must divide {what} channels {cin} and {cout}")


@dataclasses.dataclass(frozen=True)
class _Geometry(Op):
    stride: Pair
    padding: Pads
    dilation: Pair
    groups: int

    def geometry(self) -> dict:
        return dict(stride=self.stride, dilation=self.dilation, groups=self.groups)


@dataclasses.dataclass(frozen=True)
class Conv2D(_Geometry):
    """``y[n, o] = sum_c x_pad[n, c] * w[o, c]`` (cross-correlation) per group."""

    name: ClassVar[str] = "conv2d"
    vjp_formula: ClassVar[str] = "conv_transpose2d(g, w), conv2d_weight_grad(x, g)"

    def infer(self, x: TensorType, w: TensorType) -> TensorType:
        _known(x, "input", (1, 2, 3))
        _known(w, "weight", (0, 1, 2, 3))
        cout, cg, kh, kw = w.shape
        _check_groups(self, x.shape[1], cout, "input and output")
        if x.shape[1] // self.groups != cg:
            raise shape_error(
                f"input has {x.shape[1]} channels but weight {format_shape(w.shape)} expects "
                f"{cg * self.groups} (C_in / groups = {cg}, groups={self.groups})"
            )
        ho, wo = _conv_out(self, x, (kh, kw))
        return TensorType((x.shape[0], cout, ho, wo), np.result_type(x.dtype, w.dtype))

    def compute(self, x, w):
        return conv2d_kernel(x, w, self.stride, self.padding, self.dilation, self.groups)

    def vjp(self, node: Node, g: Node):
        x, w = node.inputs
        return _input_grad(self, g, w, x.shape[2:]), _weight_grad(self, x, g, w.shape[2:])

    def flops(self, in_types, out_type) -> Poly:
        _, cg, kh, kw = in_types[1].shape
        return size_poly(out_type).scale(2 * cg * kh * kw)


@dataclasses.dataclass(frozen=True)
class ConvTranspose2D(_Geometry):
    """The adjoint of ``conv2d`` in its input; ``padding`` is cropped from the full output."""

    name: ClassVar[str] = "conv_transpose2d"
    vjp_formula: ClassVar[str] = "conv2d(g, w), conv2d_weight_grad(g, x)"

    def infer(self, x: TensorType, w: TensorType) -> TensorType:
        _known(x, "input", (1, 2, 3))
        _known(w, "weight", (0, 1, 2, 3))
        cin, cog, kh, kw = w.shape
        _check_groups(self, x.shape[1], cog * self.groups, "input and output")
        if x.shape[1] != cin:
            raise shape_error(
                f"input has {x.shape[1]} channels but weight {format_shape(w.shape)} expects {cin} "
                f"(groups={self.groups})"
            )
        _check_geometry(self)
        out = []
        for n, k, s, d, (lo, hi) in zip(x.shape[2:], (kh, kw), self.stride, self.dilation, self.padding):
            size = (n - 1) * s + d * (k - 1) + 1 - lo - hi
            if size < 1:
                raise shape_error(f"output would be empty ({_settings(self)}); input {format_shape(x.shape)}")
            out.append(size)
        return TensorType((x.shape[0], cog * self.groups, *out), np.result_type(x.dtype, w.dtype))

    def compute(self, x, w):
        return conv_transpose2d_kernel(x, w, self.stride, self.padding, self.dilation, self.groups)

    def vjp(self, node: Node, g: Node):
        x, w = node.inputs
        conv = Conv2D(self.stride, self.padding, self.dilation, self.groups)
        dx = apply(conv, g, w)
        dw = apply(Conv2DWeightGrad(self.stride, self.padding, self.dilation, self.groups, w.shape[2:]), g, x)
        return dx, dw

    def flops(self, in_types, out_type) -> Poly:
        _, cog, kh, kw = in_types[1].shape
        return size_poly(in_types[0]).scale(2 * cog * kh * kw)


@dataclasses.dataclass(frozen=True)
class Conv2DWeightGrad(_Geometry):
    """``dw[o, c] = sum_n x_pad[n, c] * g[n, o]`` over batch and pixels: ``conv2d``'s weight
    gradient as one matmul of the im2col matrix with the output cotangent."""

    name: ClassVar[str] = "conv2d_weight_grad"
    vjp_formula: ClassVar[str] = "conv_transpose2d(g_y, v), conv2d(x, v)"
    kernel: Pair = (1, 1)

    def infer(self, x: TensorType, g: TensorType) -> TensorType:
        _known(x, "input", (1, 2, 3))
        _known(g, "output cotangent", (1, 2, 3))
        _check_groups(self, x.shape[1], g.shape[1], "input and output")
        expect = _conv_out(self, x, self.kernel)
        if tuple(g.shape[2:]) != expect:
            raise shape_error(
                f"cotangent {format_shape(g.shape)} does not fit the conv2d output "
                f"{expect} of input {format_shape(x.shape)} ({_settings(self)})"
            )
        return TensorType((g.shape[1], x.shape[1] // self.groups, *self.kernel),
                          np.result_type(x.dtype, g.dtype))

    def compute(self, x, g):
        return conv2d_weight_grad_kernel(x, g, self.kernel, self.stride, self.padding, self.dilation,
                                         self.groups)

    def vjp(self, node: Node, v: Node):
        x, g = node.inputs
        conv = Conv2D(self.stride, self.padding, self.dilation, self.groups)
        return _input_grad(conv, g, v, x.shape[2:]), apply(conv, x, v)

    def flops(self, in_types, out_type) -> Poly:
        x, g = in_types
        kh, kw = self.kernel
        return size_poly(g).scale(2 * (x.shape[1] // self.groups) * kh * kw)


def _input_grad(conv: Conv2D, g: Node, w: Node, in_hw: Sequence[int]) -> Node:
    """``conv_transpose2d`` that maps ``conv``'s output cotangent back to an input of ``in_hw``:
    it crops the padding and extends with zeros rows the convolution never read."""
    crop = []
    for n, k, s, d, (lo, _), o in zip(in_hw, w.shape[2:], conv.stride, conv.dilation, conv.padding, g.shape[2:]):
        full = (o - 1) * s + d * (k - 1) + 1
        crop.append((lo, full - lo - n))
    return apply(ConvTranspose2D(conv.stride, (crop[0], crop[1]), conv.dilation, conv.groups), g, w)


def _weight_grad(conv: Conv2D, x: Node, g: Node, kernel: Sequence[int]) -> Node:
    return apply(Conv2DWeightGrad(conv.stride, conv.padding, conv.dilation, conv.groups,
                                  (int(kernel[0]), int(kernel[1]))), x, g)


# ------------------------------------------------------------------------- builders
class _Setting(Exception):
    pass


def _pair(value, what: str, minimum: int) -> Pair:
    v = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(v) != 2 or not all(isinstance(a, (int, np.integer)) and a >= minimum for a in v):
        raise _Setting(f"{what} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(v[0]), int(v[1])


def _pads(padding, kernel: Sequence[int | None], stride: Pair, dilation: Pair) -> Pads:
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise _Setting(f"padding='same' needs stride 1, got stride={stride}")
        total = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return (total[0] // 2, total[0] - total[0] // 2), (total[1] // 2, total[1] - total[1] // 2)
    p = _pair(padding, "padding", 0)
    return (p[0], p[0]), (p[1], p[1])


def _settings_or_raise(op_cls, nodes: Sequence[Node], make):
    try:
        return make()
    except _Setting as e:
        raise ShapeError(describe_error(op_cls((1, 1), ((0, 0), (0, 0)), (1, 1), 1), nodes, str(e))) from None


def _add_bias(y: Node, bias) -> Node:
    if bias is None:
        return y
    from .shape import reshape

    return y + reshape(as_node(bias), (-1, 1, 1))


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Node:
    """2-D cross-correlation as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : node (N, C_in, H, W)
    w : node (C_out, C_in / groups, kH, kW)
    bias : node (C_out,), optional
        Added per output channel (a broadcast ``add`` node, which the optimiser may fuse).
    stride, dilation : int or pair
    padding : int, pair, ``"valid"`` or ``"same"``
        ``"same"`` (stride 1 only) puts the extra zero of an even kernel at the bottom/right.
    groups : int
        Splits the channels into independent convolutions.
    """
    x, w = as_node(x), as_node(w)

    def make():
        s, d = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
        return Conv2D(s, _pads(padding, w.shape[2:], s, d), d, int(groups))

    return _add_bias(apply(_settings_or_raise(Conv2D, [x, w], make), x, w), bias)


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                     groups: int = 1) -> Node:
    """2-D transposed convolution as ``torch.nn.functional.conv_transpose2d``.

    The gradient of ``conv2d`` with respect to its input. ``w`` is ``(C_in, C_out / groups, kH,
    kW)``; the output is ``(H - 1) * stride - 2 * padding + dilation * (kH - 1) +
    output_padding + 1`` high (likewise wide).
    """
    x, w = as_node(x), as_node(w)

    def make():
        s, d = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
        p, op = _pair(padding, "padding", 0), _pair(output_padding, "output_padding", 0)
        if any(o >= max(a, b) for o, a, b in zip(op, s, d)):
            raise _Setting(f"output_padding={op} must be smaller than stride={s} or dilation={d}")
        return ConvTranspose2D(s, ((p[0], p[0] - op[0]), (p[1], p[1] - op[1])), d, int(groups))

    return _add_bias(apply(_settings_or_raise(ConvTranspose2D, [x, w], make), x, w), bias)


def conv1d(x, w, bias=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Node:
    """1-D cross-correlation on (N, C, L) as ``torch.nn.functional.conv1d``: a ``conv2d`` over
    a height-1 image (``w`` is ``(C_out, C_in / groups, k)``)."""
    from .shape import expand_dims, squeeze

    x, w = as_node(x), as_node(w)
    for t, what in ((x, "input"), (w, "weight")):
        if t.ndim != 3:
            raise ShapeError(describe_error(Conv2D((1, 1), ((0, 0), (0, 0)), (1, 1), 1), [x, w],
                                            f"conv1d {what} must be 3-D, got {format_shape(t.shape)}"))
    pad = padding if isinstance(padding, str) else (0, _one(padding))
    y = squeeze(conv2d(expand_dims(x, 2), expand_dims(w, 2), None, (1, _one(stride)), pad,
                       (1, _one(dilation)), groups), 2)
    if bias is None:
        return y
    from .shape import reshape

    return y + reshape(as_node(bias), (-1, 1))


def _one(v):
    """conv1d settings may be an int or a 1-tuple."""
    return v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v
