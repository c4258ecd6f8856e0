"""Convolution kernels writing into planned buffers (ops/conv_kernels.py, runtime/lowering.py):
values and gradients against a naive loop reference, with batches large enough to run in
several chunks; the compiled program gives the scratch arrays to the memory plan."""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops import conv_kernels


def _windows(xp, kh, kw, stride, dil, ho, wo):
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, :, i * dil: i * dil + stride * (ho - 1) + 1: stride,
                           j * dil: j * dil + stride * (wo - 1) + 1: stride]


def _reference(x, w, r, stride, pad, dil, groups):
    """conv2d, its input gradient and weight gradient for cotangent ``r``, by loops."""
    n, c, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    cog = cout // groups
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = r.shape[2:]
    y = np.zeros(r.shape)
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for i, j, win in _windows(xp, kh, kw, stride, dil, ho, wo):
        for g in range(groups):
            xs, os_ = slice(g * cg, (g + 1) * cg), slice(g * cog, (g + 1) * cog)
            y[:, os_] += np.einsum("ncab,oc->noab", win[:, xs], w[os_, :, i, j])
            dw[os_, :, i, j] += np.einsum("ncab,noab->oc", win[:, xs], r[:, os_])
            dxp[:, xs, i * dil: i * dil + stride * (ho - 1) + 1: stride,
                j * dil: j * dil + stride * (wo - 1) + 1: stride] += np.einsum("noab,oc->ncab", r[:, os_], w[os_, :, i, j])
    return y, dxp[:, :, pad: pad + h, pad: pad + wd], dw


SETTINGS = [  # x shape, w shape, stride, padding, dilation, groups: each runs in several chunks
    ((5, 16, 30, 30), (8, 16, 3, 3), 1, 1, 1, 1),
    ((5, 32, 64, 64), (4, 32, 3, 3), 2, 1, 1, 1),
    ((5, 64, 40, 40), (8, 16, 3, 3), 1, 2, 2, 4),
]


@pytest.mark.parametrize("xs,ws,stride,pad,dil,groups", SETTINGS)
def test_chunked_kernels_match_loops_compiled_and_interpreted(xs, ws, stride, pad, dil, groups):
    rng = np.random.default_rng(0)
    xv, wv = rng.normal(size=xs), rng.normal(size=ws)
    x = gb.input("x", (None, *xs[1:]), dtype="float64")
    w = gb.param("w", wv)
    y = gb.conv2d(x, w, stride=stride, padding=pad, dilation=dil, groups=groups)
    rv = rng.normal(size=(xs[0], *y.type.shape[1:]))
    r = gb.input("r", (None, *y.type.shape[1:]), dtype="float64")
    dx, dw = gb.grad(gb.sum(y * r), [x, w])
    shapes = conv_kernels.conv2d_workspace(xs, ws, (stride, stride), ((pad, pad), (pad, pad)), (dil, dil), groups)
    assert shapes[1][0] < xs[0]  # the column matrix holds fewer examples than the batch
    ref = _reference(xv, wv, rv, stride, pad, dil, groups)
    prog = gb.compile([x, r], [y, dx, dw])
    for got in (prog(xv, rv), gb.evaluate([y, dx, dw], {x: xv, r: rv})):
        for g_, e in zip(got, ref):
            np.testing.assert_allclose(g_, e, rtol=1e-10, atol=1e-10)


def test_w6_like_step_plans_its_column_buffers_and_agrees_with_the_reference():
    rng = np.random.default_rng(1)
    x = gb.input("x", (None, 4, 12, 12))
    t = gb.input("t", (None,), dtype="int64")
    w1 = gb.param("w1", (rng.normal(size=(8, 4, 3, 3)) * 0.2).astype(np.float32))
    b1 = gb.param("b1", np.zeros(8, np.float32))
    w2 = gb.param("w2", (rng.normal(size=(8 * 36, 5)) * 0.1).astype(np.float32))
    h = gb.max_pool2d(gb.relu(gb.conv2d(x, w1, b1, padding=1)), 2)
    loss = gb.mean(gb.softmax_cross_entropy(gb.flatten(h) @ w2, t))
    params = [w1, b1, w2]
    grads = gb.grad(loss, params)
    xv = rng.random((6, 4, 12, 12), dtype=np.float32)
    tv = rng.integers(0, 5, 6)
    ref = gb.evaluate([loss, *grads], {x: xv, t: tv})
    prog = gb.compile([x, t], [loss, *grads])
    for g_, e in zip(prog(xv, tv), ref):
        np.testing.assert_allclose(g_, e, rtol=1e-5, atol=1e-6)
    src = prog.source((6, 4, 12, 12), (6,))
    assert "conv2d_into(" in src and "conv_transpose2d_into(" not in src  # x needs no gradient
    assert "conv2d_weight_grad_into(" in src
    plan = prog.memory_plan((6, 4, 12, 12), (6,))
    cols = 6 * 36 * 12 * 14 * 4  # the forward's column matrix: a temp of the plan
    assert plan.buffers >= cols and plan.forward_peak >= cols
