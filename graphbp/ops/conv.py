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

Kernels: the input is viewed as patches with ``as_strided`` (no copy), the patches are copied
once into a column matrix and multiplied in one ``matmul``. The transposed convolution does the
matmul first and then adds ``kH * kW`` strided slices into the output (no ``np.add.at``). At
stride 1 both work on whole padded rows of the flattened image plane ("flat shifts"), because
NCHW image rows are short and NumPy's per-row loop overhead dominated (measured on W6: 7% off
the forward, 18% off the transposed convolution of its second layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import ShapeError
from ..graph.cost import Poly, size_poly
from ..graph.node import Node
from ..graph.types import TensorType, format_shape
from .base import Op, apply, as_node, describe_error, dtype_error, shape_error

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]


# ------------------------------------------------------------------------- kernels
def _pad(x: np.ndarray, pads: Pads) -> np.ndarray:
    """Zero-pad the two spatial dims; a negative amount crops instead."""
    if not any(p for side in pads for p in side):
        return x
    crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(pads, x.shape[2:]))
    x = x[(slice(None), slice(None), *crop)]
    (top, bottom), (left, right) = ((max(lo, 0), max(hi, 0)) for lo, hi in pads)
    if not (top or bottom or left or right):
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + top + bottom, w + left + right), x.dtype)  # cheaper than np.pad
    out[:, :, top: top + h, left: left + w] = x
    return out


def _columns(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """The im2col matrix of the padded input: ``(N, groups, C/groups * kH * kW, Ho * Wo)``.

    ``as_strided`` gives the patches as a view; the one copy is ``ascontiguousarray``."""
    n, c, hp, wp = xp.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    cg = c // groups
    s_n, s_c, s_h, s_w = xp.strides
    view = as_strided(xp, (n, groups, cg, kh, kw, ho, wo),
                      (s_n, s_c * cg, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)
    return np.ascontiguousarray(view).reshape(n, groups, cg * kh * kw, ho * wo)


def _flat_columns(x: np.ndarray, pads: Pads, kernel: Pair, dilation: Pair, groups: int) -> tuple[np.ndarray, int]:
    """Stride-1 im2col over whole padded rows: ``(N, groups, K, Ho * Wp)`` and ``Wp``.

    Each kernel offset's patch is one contiguous run of the flattened padded plane (a shift by
    ``i * dh * Wp + j * dw``), so the copy runs over ``Ho * Wp`` floats at a time instead of one
    ``Wo``-float image row. Columns ``Wo..Wp`` of each output row are junk the caller drops."""
    xp = _pad(x, pads)
    n, c, hp, wp = xp.shape
    (kh, kw), (dh, dw) = kernel, dilation
    plane = np.zeros((n, c, (hp + 1) * wp), x.dtype)  # + 1 row: the last shift reads past the plane
    plane[:, :, : hp * wp] = xp.reshape(n, c, hp * wp)
    ho, cg = hp - dh * (kh - 1), c // groups
    s_n, s_c, s_e = plane.strides
    view = as_strided(plane, (n, groups, cg, kh, kw, ho * wp),
                      (s_n, s_c * cg, s_c, s_e * dh * wp, s_e * dw, s_e), writeable=False)
    return np.ascontiguousarray(view).reshape(n, groups, cg * kh * kw, ho * wp), wp


def conv2d_kernel(x, w, stride: Pair, padding: Pads, dilation: Pair, groups: int) -> np.ndarray:
    cout, cg, kh, kw = w.shape
    hp, wp = (n + lo + hi for n, (lo, hi) in zip(x.shape[2:], padding))
    ho, wo = ((p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip((hp, wp), (kh, kw), stride, dilation))
    wg = w.reshape(groups, cout // groups, cg * kh * kw)
    if stride == (1, 1):
        cols, wp = _flat_columns(x, padding, (kh, kw), dilation, groups)
        return np.matmul(wg, cols).reshape(x.shape[0], cout, ho, wp)[..., :wo]
    cols = _columns(_pad(x, padding), (kh, kw), stride, dilation, groups)
    return np.matmul(wg, cols).reshape(x.shape[0], cout, ho, wo)


def conv_transpose2d_kernel(x, w, stride: Pair, crop: Pads, dilation: Pair, groups: int) -> np.ndarray:
    n, cin, hi, wi = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    full_h, full_w = (hi - 1) * sh + dh * (kh - 1) + 1, (wi - 1) * sw + dw * (kw - 1) + 1
    wg = w.reshape(groups, cin // groups, cog * kh * kw).transpose(0, 2, 1)
    if stride == (1, 1):
        full = _scatter_rows(x, wg, (kh, kw), dilation, full_w, full_h)
    else:
        cols = np.matmul(wg, x.reshape(n, groups, cin // groups, hi * wi)).reshape(n, groups * cog, kh, kw, hi, wi)
        full = np.zeros((n, groups * cog, full_h, full_w), cols.dtype)
        for i in range(kh):
            for j in range(kw):
                full[:, :, i * dh: i * dh + sh * (hi - 1) + 1: sh, j * dw: j * dw + sw * (wi - 1) + 1: sw] += cols[:, :, i, j]
    (top, bottom), (left, right) = crop
    out_h, out_w = full_h - top - bottom, full_w - left - right
    if top + out_h > full_h or left + out_w > full_w:  # output_padding: zero rows/columns no tap reaches
        grown = np.zeros((*full.shape[:2], max(full_h, top + out_h), max(full_w, left + out_w)), full.dtype)
        grown[:, :, :full_h, :full_w] = full
        full = grown
    return full[:, :, top: top + out_h, left: left + out_w]


def _scatter_rows(x, wg, kernel: Pair, dilation: Pair, full_w: int, full_h: int) -> np.ndarray:
    """Stride-1 transposed convolution without short inner loops.

    The input rows are widened to the output width with zero columns, so each kernel offset's
    contribution is one contiguous run over whole rows of the flattened output plane (a shift
    by ``i * dh * full_w + j * dw``): the zero columns land on the next row's start and add
    nothing. NCHW rows are short (14 floats in W6); whole planes keep NumPy's inner loops long.
    """
    n, cin, hi, wi = x.shape
    groups, k, _ = wg.shape
    (kh, kw), (dh, dw) = kernel, dilation
    wide = np.zeros((n, cin, hi, full_w), x.dtype)
    wide[..., :wi] = x
    cols = np.matmul(wg, wide.reshape(n, groups, cin // groups, hi * full_w))
    cols = cols.reshape(n, groups * (k // (kh * kw)), kh, kw, hi * full_w)
    run = hi * full_w
    plane = np.zeros((n, cols.shape[1], (full_h + 1) * full_w), cols.dtype)  # + 1 row: the last shift's tail
    for i in range(kh):
        for j in range(kw):
            shift = i * dh * full_w + j * dw
            plane[:, :, shift: shift + run] += cols[:, :, i, j]
    return plane[:, :, : full_h * full_w].reshape(n, cols.shape[1], full_h, full_w)


def conv2d_weight_grad_kernel(x, g, kernel: Pair, stride: Pair, padding: Pads, dilation: Pair,
                              groups: int) -> np.ndarray:
    # The strided im2col, not the flat one: widening the cotangent to whole padded rows cost
    # more than the longer copy runs saved (measured on W6's layers).
    cols = _columns(_pad(x, padding), kernel, stride, dilation, groups)  # (N, G, K, L)
    n, _, k, hw = cols.shape
    cout = g.shape[1]
    gg = g.reshape(n, groups, cout // groups, hw)
    # Per example (N, G, Cout/G, L) @ (N, G, L, K), summed over the batch: one batched matmul
    # on the layouts the forward already has (copying both into (G, *, N*L) costs more).
    dw = np.matmul(gg, cols.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw.reshape(cout, x.shape[1] // groups, *kernel)


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


def _conv_out(op, x: TensorType, kernel: Pair) -> tuple[int, int]:
    """Output height and width of a convolution of ``x`` (checked)."""
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
