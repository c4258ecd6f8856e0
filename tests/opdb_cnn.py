"""Op-database rows for the image ops (convolution, pooling, normalisation, flatten).

The references are direct loops over kernel offsets and windows, independent of the im2col
and strided-slice kernels they check. The samples cover the settings that break convolution
code: strides, paddings (``"same"`` with an even kernel), dilations, groups, batch 1, one
channel, a kernel as large as the padded input, a stride larger than the kernel, and an
unknown batch dim.
"""

from __future__ import annotations

import numpy as np

import graphbp as gb
from graphbp import ops as O
from graphbp.ops.base import apply

from opdb import OpInfo, Sample, _distinct, _n, _pos


# ------------------------------------------------------------------------- references
def _pairs(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _same(k, d):
    total = [di * (ki - 1) for ki, di in zip(k, d)]
    return [(t // 2, t - t // 2) for t in total]


def _pad_ref(x, pads, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), *pads), constant_values=value)


def conv2d_ref(x, w, stride=1, padding=0, dilation=1, groups=1):
    (sh, sw), (dh, dw) = _pairs(stride), _pairs(dilation)
    k = w.shape[2:]
    pads = _same(k, (dh, dw)) if padding == "same" else [(p, p) for p in _pairs(padding)]
    xp = _pad_ref(x, pads)
    ho = (xp.shape[2] - dh * (k[0] - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (k[1] - 1) - 1) // sw + 1
    cg, og = x.shape[1] // groups, w.shape[0] // groups
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for g in range(groups):
        for i in range(k[0]):
            for j in range(k[1]):
                patch = xp[:, g * cg:(g + 1) * cg, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                           j * dw: j * dw + sw * (wo - 1) + 1: sw]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    return out.astype(np.result_type(x, w))


def conv_transpose2d_ref(x, w, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    (sh, sw), (dh, dw), (ph, pw), (oph, opw) = map(_pairs, (stride, dilation, padding, output_padding))
    n, cin, hi, wi = x.shape
    cig, cog = cin // groups, w.shape[1]
    kh, kw = w.shape[2:]
    full = np.zeros((n, cog * groups, (hi - 1) * sh + dh * (kh - 1) + 1 + oph, (wi - 1) * sw + dw * (kw - 1) + 1 + opw))
    for g in range(groups):
        for a in range(hi):
            for b in range(wi):
                for i in range(kh):
                    for j in range(kw):
                        full[:, g * cog:(g + 1) * cog, a * sh + i * dh, b * sw + j * dw] += (
                            x[:, g * cig:(g + 1) * cig, a, b] @ w[g * cig:(g + 1) * cig, :, i, j])
    return full[:, :, ph: full.shape[2] - ph, pw: full.shape[3] - pw].astype(np.result_type(x, w))


def weight_grad_ref(x, g, kernel, stride=1, padding=0, dilation=1, groups=1):
    (sh, sw), (dh, dw) = _pairs(stride), _pairs(dilation)
    xp = _pad_ref(x, [(p, p) for p in _pairs(padding)])
    ho, wo = g.shape[2:]
    cg, og = x.shape[1] // groups, g.shape[1] // groups
    out = np.zeros((g.shape[1], cg, *kernel))
    for gr in range(groups):
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                patch = xp[:, gr * cg:(gr + 1) * cg, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                           j * dw: j * dw + sw * (wo - 1) + 1: sw]
                out[gr * og:(gr + 1) * og, :, i, j] = np.einsum("nchw,nohw->oc", patch, g[:, gr * og:(gr + 1) * og])
    return out


def _windows_ref(x, k, s, p, value):
    (kh, kw), (sh, sw), (ph, pw) = _pairs(k), _pairs(s if s is not None else k), _pairs(p)
    xp = _pad_ref(x, [(ph, ph), (pw, pw)], value)
    ho, wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    for a in range(ho):
        for b in range(wo):
            yield a, b, (slice(None), slice(None), slice(a * sh, a * sh + kh), slice(b * sw, b * sw + kw)), xp, (ho, wo)


def max_pool_ref(x, kernel_size, stride=None, padding=0):
    out = None
    for a, b, sl, xp, hw in _windows_ref(x, kernel_size, stride, padding, -np.inf):
        out = np.zeros((*x.shape[:2], *hw), x.dtype) if out is None else out
        out[:, :, a, b] = xp[sl].max(axis=(2, 3))
    return out


def avg_pool_ref(x, kernel_size, stride=None, padding=0):
    out = None
    for a, b, sl, xp, hw in _windows_ref(x, kernel_size, stride, padding, 0.0):
        out = np.zeros((*x.shape[:2], *hw), x.dtype) if out is None else out
        out[:, :, a, b] = xp[sl].mean(axis=(2, 3))
    return out


def _first_argmax(win):
    n, c = win.shape[:2]
    return np.unravel_index(win.reshape(n, c, -1).argmax(-1), win.shape[2:])


def max_pool_grad_ref(x, g, kernel_size, stride=None, padding=0):
    ph, pw = _pairs(padding)
    dxp = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
    n_idx, c_idx = np.indices(x.shape[:2])
    for a, b, sl, xp, _ in _windows_ref(x, kernel_size, stride, padding, -np.inf):
        i, j = _first_argmax(xp[sl])
        dxp[n_idx, c_idx, sl[2].start + i, sl[3].start + j] += g[:, :, a, b]
    return dxp[:, :, ph: dxp.shape[2] - ph, pw: dxp.shape[3] - pw]


def max_pool_gather_ref(x, v, kernel_size, stride=None, padding=0):
    ph, pw = _pairs(padding)
    vp = _pad_ref(v, [(ph, ph), (pw, pw)])
    n_idx, c_idx = np.indices(x.shape[:2])
    out = max_pool_ref(x, kernel_size, stride, padding).copy()
    for a, b, sl, xp, _ in _windows_ref(x, kernel_size, stride, padding, -np.inf):
        i, j = _first_argmax(xp[sl])
        out[:, :, a, b] = vp[n_idx, c_idx, sl[2].start + i, sl[3].start + j]
    return out


def avg_pool_grad_ref(g, kernel_size, stride=None, padding=0, in_hw=None):
    (kh, kw), (ph, pw) = _pairs(kernel_size), _pairs(padding)
    dxp = np.zeros((*g.shape[:2], in_hw[0] + 2 * ph, in_hw[1] + 2 * pw))
    for a, b, sl, _, _ in _windows_ref(np.zeros((*g.shape[:2], *in_hw)), kernel_size, stride, padding, 0.0):
        dxp[sl] += g[:, :, a: a + 1, b: b + 1] / (kh * kw)
    return dxp[:, :, ph: dxp.shape[2] - ph, pw: dxp.shape[3] - pw]


def batch_norm_ref(x, gamma, beta, mean=None, var=None, eps=1e-5):
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    if mean is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)


def layer_norm_ref(x, gamma, beta):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * gamma + beta


# ------------------------------------------------------------------------- samples
_CONV_SETTINGS = [  # x shape, w shape, kwargs, declared batch unknown
    ((2, 4, 6, 5), (6, 2, 3, 3), dict(stride=1, padding=1, groups=2), True),
    ((1, 1, 7, 7), (2, 1, 3, 3), dict(stride=2, padding=0), False),              # batch 1, 1 channel
    ((2, 3, 6, 6), (2, 3, 4, 2), dict(padding="same"), False),                  # even kernels
    ((2, 2, 7, 6), (3, 2, 2, 3), dict(dilation=2, padding="same"), True),
    ((1, 2, 3, 3), (2, 2, 5, 5), dict(padding=1), False),                       # kernel = padded input
    ((2, 2, 8, 7), (2, 2, 2, 2), dict(stride=3, padding=(1, 0)), False),        # stride > kernel
    ((1, 3, 9, 8), (4, 3, 3, 3), dict(stride=(2, 3), dilation=(2, 1), padding=(2, 1)), False),
]


def _conv_samples(rng):
    out = []
    for xs, ws, kw, unknown in _CONV_SETTINGS:
        decl = ((None, *xs[1:]), None) if unknown else None
        out.append(Sample((_n(rng, *xs), _n(rng, *ws)), kw, decl))
    out.append(Sample((_n(rng, 2, 2, 5, 5).astype(np.float32), _n(rng, 3, 2, 3, 3).astype(np.float32)), {}))
    return out


def _conv_t_samples(rng):
    return [
        Sample((_n(rng, 2, 4, 3, 4), _n(rng, 4, 3, 3, 3)), dict(stride=2, padding=1, output_padding=1, groups=2),
               ((None, 4, 3, 4), None)),
        Sample((_n(rng, 1, 1, 4, 4), _n(rng, 1, 2, 2, 2)), dict(stride=2)),
        Sample((_n(rng, 2, 2, 3, 3), _n(rng, 2, 1, 3, 2)), dict(stride=(3, 1), dilation=(1, 2), padding=(0, 1))),
        Sample((_n(rng, 2, 3, 2, 2), _n(rng, 3, 2, 2, 2)), dict(stride=4, output_padding=(3, 0))),
    ]


def _weight_grad_build(x, g, kernel, **kw):
    op = O.Conv2DWeightGrad(_pairs(kw.get("stride", 1)), tuple((p, p) for p in _pairs(kw.get("padding", 0))),
                            _pairs(kw.get("dilation", 1)), kw.get("groups", 1), kernel)
    return apply(op, x, g)


def _weight_grad_samples(rng):
    return [
        Sample((_n(rng, 2, 4, 6, 5), _n(rng, 2, 6, 6, 5)), dict(kernel=(3, 3), padding=1, groups=2)),
        Sample((_n(rng, 1, 1, 7, 7), _n(rng, 1, 2, 3, 3)), dict(kernel=(3, 3), stride=2)),
        Sample((_n(rng, 2, 2, 8, 7), _n(rng, 2, 3, 2, 2)), dict(kernel=(2, 2), stride=3, dilation=2)),
    ]


_POOL_SETTINGS = [
    ((2, 3, 6, 6), dict(kernel_size=2)),
    ((1, 1, 7, 5), dict(kernel_size=3, stride=2, padding=1)),                   # overlapping, padded
    ((2, 2, 5, 6), dict(kernel_size=(2, 3), stride=1)),
    ((2, 2, 7, 7), dict(kernel_size=2, stride=3)),                             # stride > kernel
    ((1, 2, 3, 3), dict(kernel_size=3)),                                       # kernel = input
]


def _pool_samples(gen):
    def samples(rng):
        out = [Sample((gen(rng, *xs),), kw) for xs, kw in _POOL_SETTINGS]
        out[0] = Sample(out[0].args, out[0].kwargs, ((None, 3, 6, 6),))
        out.append(Sample((gen(rng, 2, 2, 4, 4).astype(np.float32),), dict(kernel_size=2)))
        return out
    return samples


def _pool_grad_samples(rng):
    out = []
    for xs, kw in _POOL_SETTINGS:
        y = max_pool_ref(np.zeros(xs), **kw)
        out.append(Sample((_distinct(rng, *xs), _n(rng, *y.shape)), kw))
    return out


def _max_pool_grad_build(x, g, **kw):
    p = O.pool._pool_op(O.MaxPool2DGrad, x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0))
    return apply(p, x, gb.max_pool2d(x, **kw), g)


def _max_pool_gather_build(x, v, **kw):
    p = O.pool._pool_op(O.MaxPool2DGather, x, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0))
    return apply(p, x, v)


def _gather_samples(rng):
    return [Sample((_distinct(rng, *xs), _n(rng, *xs)), kw) for xs, kw in _POOL_SETTINGS]


def _avg_grad_build(g, in_hw, **kw):
    p = O.pool._pool_op(O.AvgPool2D, g, kw["kernel_size"], kw.get("stride"), kw.get("padding", 0))
    return apply(O.AvgPool2DGrad(p.kernel, p.stride, p.padding, in_hw), g)


def _avg_grad_samples(rng):
    out = []
    for xs, kw in _POOL_SETTINGS:
        y = avg_pool_ref(np.zeros(xs), **kw)
        out.append(Sample((_n(rng, *y.shape),), dict(kw, in_hw=xs[2:])))
    return out


def _bn_samples(rng):
    return [Sample((_n(rng, 3, 2, 3, 2) * 2 + 1, _pos(rng, 2), _n(rng, 2))),
            Sample((_n(rng, 5, 3), _pos(rng, 3), _n(rng, 3)), declared=((None, 3), None, None))]


def _bn_eval_samples(rng):
    return [Sample((_n(rng, 3, 2, 3, 2), _pos(rng, 2), _n(rng, 2), _n(rng, 2), _pos(rng, 2)))]


def _bn_train_build(x, gamma, beta):
    c = x.shape[1]
    rm, rv = gb.param("rm", np.zeros(c), trainable=False), gb.param("rv", np.ones(c), trainable=False)
    return gb.batch_norm_train(x, gamma, beta, rm, rv).output


def _ln_samples(rng):
    return [Sample((_n(rng, 2, 3, 4), _pos(rng, 4), _n(rng, 4)), declared=((None, 3, 4), None, None))]


def _flatten_samples(rng):
    return [Sample((_n(rng, 2, 3, 2, 2),)), Sample((_n(rng, 2, 3, 4),), dict(start_axis=2), ((None, 3, 4),))]


def _conv1d_samples(rng):
    return [Sample((_n(rng, 2, 4, 9), _n(rng, 4, 2, 4)), dict(padding="same", dilation=2, groups=2)),
            Sample((_n(rng, 1, 1, 8), _n(rng, 2, 1, 3)), dict(stride=3, padding=1))]


def _conv1d_ref(x, w, stride=1, padding=0, dilation=1, groups=1):
    pad = padding if padding == "same" else (0, padding)
    return conv2d_ref(x[:, :, None], w[:, :, None], (1, stride), pad, (1, dilation), groups)[:, :, 0]


_mp_kw = ("kernel_size", "stride", "padding")

CNN_ROWS: list[OpInfo] = [
    OpInfo("conv2d", (O.Conv2D,), gb.conv2d, conv2d_ref, _conv_samples, second_order=True, rtol=1e-10),
    OpInfo("conv_transpose2d", (O.ConvTranspose2D,), gb.conv_transpose2d, conv_transpose2d_ref, _conv_t_samples,
           second_order=True, rtol=1e-10),
    OpInfo("conv2d_weight_grad", (O.Conv2DWeightGrad,), _weight_grad_build, weight_grad_ref, _weight_grad_samples,
           second_order=True, rtol=1e-10),
    OpInfo("conv1d", (), gb.conv1d, _conv1d_ref, _conv1d_samples, rtol=1e-10),
    OpInfo("max_pool2d", (O.MaxPool2D,), gb.max_pool2d, max_pool_ref, _pool_samples(_distinct), second_order=True),
    OpInfo("max_pool2d_grad", (O.MaxPool2DGrad,), _max_pool_grad_build, max_pool_grad_ref, _pool_grad_samples,
           nondiff=(0,), second_order=True),
    OpInfo("max_pool2d_gather", (O.MaxPool2DGather,), _max_pool_gather_build, max_pool_gather_ref, _gather_samples,
           nondiff=(0,), second_order=True),
    OpInfo("avg_pool2d", (O.AvgPool2D,), gb.avg_pool2d, avg_pool_ref, _pool_samples(_n), second_order=True),
    OpInfo("avg_pool2d_grad", (O.AvgPool2DGrad,), _avg_grad_build, avg_pool_grad_ref, _avg_grad_samples),
    OpInfo("batch_norm_train", (), _bn_train_build, batch_norm_ref, _bn_samples, second_order=True, rtol=1e-9),
    OpInfo("batch_norm", (), gb.batch_norm, batch_norm_ref, _bn_eval_samples, rtol=1e-9),
    OpInfo("layer_norm", (), gb.layer_norm, layer_norm_ref, _ln_samples, second_order=True, rtol=1e-9),
    OpInfo("flatten", (), gb.flatten, lambda x, start_axis=1: x.reshape(*x.shape[:start_axis], -1),
           _flatten_samples),
]
