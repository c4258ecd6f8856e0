"""NumPy kernels of the convolution ops (graphbp/ops/conv.py), written into caller-owned arrays.

Each kernel takes its output array and its scratch arrays (the padded image plane, the im2col
matrix, the product before cropping) explicitly, and ``*_workspace`` gives their shapes from
the operand shapes. ``op.compute`` allocates them per call; the executor's lowering
(runtime/lowering.py) asks for the shapes and passes buffers of the memory plan instead, so
a training step allocates nothing per call and the column matrix (9x the input for a 3x3
kernel) shares storage with values whose lifetimes do not overlap it (W6: peak RSS).

The input is viewed as patches with ``as_strided`` (no copy); the patches are copied once
into the column matrix and multiplied in one ``matmul``. The transposed convolution does the
matmul first and then adds ``kH * kW`` strided slices into the output (no ``np.add.at``). At
stride 1 both work on whole padded rows of the flattened image plane ("flat shifts"), because
NCHW image rows are short and NumPy's per-row loop overhead dominated (docs/performance.md
gives what it saved on W6).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

Pair = tuple[int, int]
Pads = tuple[Pair, Pair]
Shapes = tuple[tuple[int, ...], ...]

CHUNK_ELEMENTS = 1 << 19
"""Largest column matrix, in elements (2 MiB of float32): the batch is processed in chunks of
examples below it. The batched ``matmul`` loops over examples anyway, so chunking costs one
Python iteration per chunk and keeps the scratch in cache; W6's second layer would otherwise
hold an 8 MiB column matrix (9x its input)."""


def _chunk(n: int, per_example: int) -> int:
    return max(1, min(n, CHUNK_ELEMENTS // max(per_example, 1)))


def _chunks(n: int, b: int):
    """``(slice, count)`` over the batch in chunks of ``b`` examples."""
    for s in range(0, n, b):
        yield slice(s, min(n, s + b)), min(n, s + b) - s


def pad(x: np.ndarray, pads: Pads) -> np.ndarray:
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


def _out_hw(hw: Pair, kernel: Pair, stride: Pair, padding: Pads, dilation: Pair) -> Pair:
    return tuple((n + lo + hi - d * (k - 1) - 1) // s + 1  # type: ignore[return-value]
                 for n, k, s, d, (lo, hi) in zip(hw, kernel, stride, dilation, padding))


def _fill_padded(dst: np.ndarray, x: np.ndarray, padding: Pads) -> None:
    """``dst`` (the padded plane, maybe with spare rows) = zeros with ``x`` at its offset
    (a negative padding crops ``x``: the input gradient of a transposed convolution)."""
    x = pad(x, tuple((min(lo, 0), min(hi, 0)) for lo, hi in padding))  # type: ignore[arg-type]
    (top, _), (left, _) = ((max(lo, 0), max(hi, 0)) for lo, hi in padding)
    h, w = x.shape[2:]
    dst.fill(0)
    dst[:, :, top: top + h, left: left + w] = x


# ------------------------------------------------------------------------- conv2d
def conv2d_workspace(x: tuple[int, ...], w: tuple[int, ...], stride: Pair, padding: Pads, dilation: Pair,
                     groups: int) -> Shapes:
    """Scratch shapes of :func:`conv2d_into`: padded plane, column matrix (and at stride 1
    the product over whole padded rows, cropped into the output)."""
    n, c, h, wd = x
    cout, cg, kh, kw = w
    (top, bottom), (left, right) = padding
    hp, wp = h + top + bottom, wd + left + right
    ho, wo = _out_hw((h, wd), (kh, kw), stride, padding, dilation)
    k = cg * kh * kw
    if stride == (1, 1):
        b = _chunk(n, k * ho * wp)
        return (b, c, hp + 1, wp), (b, groups, k, ho * wp), (b, groups, cout // groups, ho * wp)
    b = _chunk(n, k * ho * wo)
    return (b, c, hp, wp), (b, groups, k, ho * wo)


def conv2d_into(x, w, bias, stride: Pair, padding: Pads, dilation: Pair, groups: int, out, *work):
    """``out = conv2d(x, w) (+ bias)`` using the scratch arrays of :func:`conv2d_workspace`
    (chunks of the batch as large as they are)."""
    for part, m in _chunks(x.shape[0], work[0].shape[0]):
        _conv2d_chunk(x[part], w, bias, stride, padding, dilation, groups, out[part], [a[:m] for a in work])
    return out


def _conv2d_chunk(x, w, bias, stride: Pair, padding: Pads, dilation: Pair, groups: int, out, work) -> None:
    n, c = x.shape[:2]
    cout, cg, kh, kw = w.shape
    ho, wo = out.shape[2:]
    (dh, dw), (sh, sw) = dilation, stride
    wg = w.reshape(groups, cout // groups, cg * kh * kw)
    plane, cols = work[0], work[1]
    _fill_padded(plane, x, padding)
    wp = plane.shape[3]
    if stride == (1, 1):
        # Each kernel offset's patch is one contiguous run of the flattened padded plane (a
        # shift by i*dh*Wp + j*dw); the spare row lets the last shift read past the image, and
        # columns Wo..Wp of each output row are junk dropped below.
        s_n, s_c, s_e = plane.strides[0], plane.strides[1], plane.strides[3]
        view = as_strided(plane, (n, groups, cg, kh, kw, ho * wp),
                          (s_n, s_c * cg, s_c, s_e * dh * wp, s_e * dw, s_e), writeable=False)
        np.copyto(cols.reshape(view.shape), view)
        prod = np.matmul(wg, cols, out=work[2])
        y = prod.reshape(n, cout, ho, wp)[..., :wo]
        if bias is None:
            np.copyto(out, y)
        else:
            np.add(y, bias, out=out)
        return
    s_n, s_c, s_h, s_w = plane.strides
    view = as_strided(plane, (n, groups, cg, kh, kw, ho, wo),
                      (s_n, s_c * cg, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)
    np.copyto(cols.reshape(view.shape), view)
    np.matmul(wg, cols, out=out.reshape(n, groups, cout // groups, ho * wo))
    if bias is not None:
        np.add(out, bias, out=out)


# ------------------------------------------------------------------------- conv_transpose2d
def _full_hw(x: tuple[int, ...], w: tuple[int, ...], stride: Pair, dilation: Pair) -> Pair:
    hi, wi = x[2:]
    kh, kw = w[2:]
    return (hi - 1) * stride[0] + dilation[0] * (kh - 1) + 1, (wi - 1) * stride[1] + dilation[1] * (kw - 1) + 1


def conv_transpose2d_workspace(x: tuple[int, ...], w: tuple[int, ...], stride: Pair, crop: Pads, dilation: Pair,
                               groups: int) -> Shapes:
    """Scratch shapes of :func:`conv_transpose2d_into`: (at stride 1) the input widened to
    the output's rows, the column products, the full output plane; else products and plane."""
    n, cin, hi, wi = x
    _, cog, kh, kw = w
    full_h, full_w = _full_hw(x, w, stride, dilation)
    k = cog * kh * kw
    if stride == (1, 1):
        b = _chunk(n, k * hi * full_w)
        return (b, cin, hi, full_w), (b, groups, k, hi * full_w), (b, groups * cog, (full_h + 1) * full_w)
    b = _chunk(n, k * hi * wi)
    return (b, groups, k, hi * wi), (b, groups * cog, full_h, full_w)


def conv_transpose2d_into(x, w, stride: Pair, crop: Pads, dilation: Pair, groups: int, out, *work):
    """``out = conv_transpose2d(x, w)`` using the scratch arrays of its workspace."""
    b = work[0].shape[0]
    for part, m in _chunks(x.shape[0], b):
        _conv_transpose2d_chunk(x[part], w, stride, crop, dilation, groups, out[part], [a[:m] for a in work])
    return out


def _conv_transpose2d_chunk(x, w, stride: Pair, crop: Pads, dilation: Pair, groups: int, out, work) -> None:
    n, cin, hi, wi = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    full_h, full_w = _full_hw(x.shape, w.shape, stride, dilation)
    cout = groups * cog
    wg = w.reshape(groups, cin // groups, cog * kh * kw).transpose(0, 2, 1)
    if stride == (1, 1):
        # The input rows are widened to the output width with zero columns, so each kernel
        # offset's contribution is one contiguous run over whole rows of the flattened output
        # plane (a shift by i*dh*full_w + j*dw): the zero columns land on the next row's start
        # and add nothing. NCHW rows are short (14 floats in W6); whole planes keep loops long.
        wide, cols, plane = work
        wide[..., wi:] = 0
        wide[..., :wi] = x
        np.matmul(wg, wide.reshape(n, groups, cin // groups, hi * full_w), out=cols)
        taps = cols.reshape(n, cout, kh, kw, hi * full_w)
        run = hi * full_w
        plane.fill(0)
        for i in range(kh):
            for j in range(kw):
                shift = i * dh * full_w + j * dw
                plane[:, :, shift: shift + run] += taps[:, :, i, j]
        full = plane[:, :, : full_h * full_w].reshape(n, cout, full_h, full_w)
    else:
        cols, full = work
        np.matmul(wg, x.reshape(n, groups, cin // groups, hi * wi), out=cols)
        taps = cols.reshape(n, cout, kh, kw, hi, wi)
        full.fill(0)
        for i in range(kh):
            for j in range(kw):
                full[:, :, i * dh: i * dh + sh * (hi - 1) + 1: sh, j * dw: j * dw + sw * (wi - 1) + 1: sw] += taps[:, :, i, j]
    # ``crop`` rows are cut from the full output; a negative amount is output_padding (zeros)
    np.copyto(out, pad(full, tuple((-lo, -hi_) for lo, hi_ in crop)))  # type: ignore[arg-type]


# ------------------------------------------------------------------------- conv2d_weight_grad
def conv2d_weight_grad_workspace(x: tuple[int, ...], g: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pads,
                                 dilation: Pair, groups: int) -> Shapes:
    """Scratch shapes of :func:`conv2d_weight_grad_into`: padded input, column matrix, and
    the per-example products summed over the batch."""
    n, c, h, wd = x
    cout = g[1]
    (top, bottom), (left, right) = padding
    ho, wo = _out_hw((h, wd), kernel, stride, padding, dilation)
    k = c // groups * kernel[0] * kernel[1]
    b = _chunk(n, k * ho * wo)
    return ((b, c, h + top + bottom, wd + left + right), (b, groups, k, ho * wo), (b, groups, cout // groups, k),
            (groups, cout // groups, k))


def conv2d_weight_grad_into(x, g, kernel: Pair, stride: Pair, padding: Pads, dilation: Pair, groups: int, out,
                            *work):
    """``out = conv2d_weight_grad(x, g)``: the strided im2col of ``x`` times the cotangent.

    The strided im2col, not the flat one: widening the cotangent to whole padded rows cost
    more than the longer copy runs saved (on W6's layers). Per example
    (N, G, Cout/G, L) @ (N, G, L, K), summed over the batch: one batched matmul on the
    layouts the forward already has (copying both into (G, *, N*L) costs more)."""
    acc = out.reshape(work[3].shape)
    for part, m in _chunks(x.shape[0], work[0].shape[0]):
        _weight_grad_chunk(x[part], g[part], kernel, stride, padding, dilation, groups,
                           acc if part.start == 0 else work[3], [a[:m] for a in work[:3]])
        if part.start:
            acc += work[3]
    return out


def _weight_grad_chunk(x, g, kernel: Pair, stride: Pair, padding: Pads, dilation: Pair, groups: int, out,
                       work) -> None:
    plane, cols, prod = work
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    cg, cout = c // groups, g.shape[1]
    hw = cols.shape[3]
    ho, wo = g.shape[2:]
    _fill_padded(plane, x, padding)
    s_n, s_c, s_h, s_w = plane.strides
    view = as_strided(plane, (n, groups, cg, kh, kw, ho, wo),
                      (s_n, s_c * cg, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw), writeable=False)
    np.copyto(cols.reshape(view.shape), view)
    gg = g.reshape(n, groups, cout // groups, hw)
    np.matmul(gg, cols.transpose(0, 1, 3, 2), out=prod)
    np.add.reduce(prod, axis=0, out=out)


# ------------------------------------------------------------------------- allocating forms (op.compute)
def _alloc(shapes: Shapes, dtype) -> list[np.ndarray]:
    return [np.empty(s, dtype) for s in shapes]


def conv2d_kernel(x, w, stride: Pair, padding: Pads, dilation: Pair, groups: int, bias=None) -> np.ndarray:
    dtype = np.result_type(x.dtype, w.dtype)
    ho, wo = _out_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    out = np.empty((x.shape[0], w.shape[0], ho, wo), dtype)
    work = _alloc(conv2d_workspace(x.shape, w.shape, stride, padding, dilation, groups), dtype)
    return conv2d_into(x, w, bias, stride, padding, dilation, groups, out, *work)


def conv_transpose2d_kernel(x, w, stride: Pair, crop: Pads, dilation: Pair, groups: int) -> np.ndarray:
    dtype = np.result_type(x.dtype, w.dtype)
    full_h, full_w = _full_hw(x.shape, w.shape, stride, dilation)
    (top, bottom), (left, right) = crop
    out = np.empty((x.shape[0], w.shape[1] * groups, full_h - top - bottom, full_w - left - right), dtype)
    work = _alloc(conv_transpose2d_workspace(x.shape, w.shape, stride, crop, dilation, groups), dtype)
    return conv_transpose2d_into(x, w, stride, crop, dilation, groups, out, *work)


def conv2d_weight_grad_kernel(x, g, kernel: Pair, stride: Pair, padding: Pads, dilation: Pair,
                              groups: int) -> np.ndarray:
    dtype = np.result_type(x.dtype, g.dtype)
    out = np.empty((g.shape[1], x.shape[1] // groups, *kernel), dtype)
    work = _alloc(conv2d_weight_grad_workspace(x.shape, g.shape, kernel, stride, padding, dilation, groups), dtype)
    return conv2d_weight_grad_into(x, g, kernel, stride, padding, dilation, groups, out, *work)
