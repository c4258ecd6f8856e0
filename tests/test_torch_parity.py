"""Differential tests of the image ops against PyTorch (the ``parity`` extra; skipped without it).

Values and gradients of conv2d, conv_transpose2d, both pools and batch norm (train and eval,
running statistics after several steps) on random shapes and settings, in float64.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import graphbp as gb

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _compare(build, reference, *arrays, rtol=1e-10):
    """Value and every input gradient of ``sum(build(...) * G)`` against PyTorch's."""
    rng = np.random.default_rng(len(arrays))
    ins = [gb.input(f"a{i}", a.shape, dtype="float64") for i, a in enumerate(arrays)]
    y = build(*ins)
    cot = rng.normal(size=y.shape)
    grads = gb.grad(gb.sum(y * gb.constant(cot)), ins)
    got = gb.compile(ins, [y, *grads])(*arrays)
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    ty = reference(*ts)
    (ty * torch.tensor(cot)).sum().backward()
    expect = [ty.detach().numpy()] + [t.grad.numpy() for t in ts]
    for g, e in zip(got, expect):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol)


def _settings(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        groups = int(rng.choice([1, 2]))
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        yield rng, groups, k, tuple(int(v) for v in rng.integers(1, 3, 2)), tuple(int(v) for v in rng.integers(1, 3, 2))


@pytest.mark.parametrize("seed", range(6))
def test_conv2d_matches_torch(seed):
    for rng, groups, k, stride, dilation in _settings(seed, 3):
        x = rng.normal(size=(int(rng.integers(1, 4)), 2 * groups, *rng.integers(6, 10, 2)))
        w = rng.normal(size=(2 * groups, 2, *k))
        padding = "same" if stride == (1, 1) and rng.random() < 0.5 else tuple(int(v) for v in rng.integers(0, 3, 2))
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        _compare(partial(gb.conv2d, **kw), partial(F.conv2d, **kw), x, w)


@pytest.mark.parametrize("seed", range(6))
def test_conv_transpose2d_matches_torch(seed):
    for rng, groups, k, stride, dilation in _settings(100 + seed, 3):
        x = rng.normal(size=(int(rng.integers(1, 4)), 2 * groups, *rng.integers(3, 6, 2)))
        w = rng.normal(size=(2 * groups, 3, *k))
        padding = tuple(int(min(v, (kk - 1) * d // 2)) for v, kk, d in zip(rng.integers(0, 2, 2), k, dilation))
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        kw = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups)
        _compare(partial(gb.conv_transpose2d, **kw), partial(F.conv_transpose2d, **kw), x, w)


@pytest.mark.parametrize("seed", range(4))
def test_pools_match_torch(seed):
    rng = np.random.default_rng(200 + seed)
    for _ in range(4):
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        padding = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        x = rng.permutation(2 * 3 * 8 * 7).reshape(2, 3, 8, 7) * 0.1 + rng.normal(0, 0.01, (2, 3, 8, 7))
        for ours, theirs in ((gb.max_pool2d, F.max_pool2d), (gb.avg_pool2d, F.avg_pool2d)):
            kw = dict(kernel_size=k, stride=stride, padding=padding)
            _compare(partial(ours, **kw), partial(theirs, **kw), x)


def test_batch_norm_train_and_eval_match_torch_after_several_steps():
    rng = np.random.default_rng(7)
    bn = torch.nn.BatchNorm2d(3, momentum=0.2, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(rng.uniform(0.5, 2, 3)))
        bn.bias.copy_(torch.tensor(rng.normal(size=3)))
    x = gb.input("x", (None, 3, 4, 5), dtype="float64")
    gamma = gb.param("gamma", bn.weight.detach().numpy().copy())
    beta = gb.param("beta", bn.bias.detach().numpy().copy())
    rm = gb.param("rm", np.zeros(3), trainable=False)
    rv = gb.param("rv", np.ones(3), trainable=False)
    out, updates = gb.batch_norm_train(x, gamma, beta, rm, rv, momentum=0.2)
    cot = rng.normal(size=(4, 3, 4, 5))
    grads = gb.grad(gb.sum(out * gb.constant(cot)), [x, gamma, beta])
    step = gb.compile([x], [out, *grads], updates=updates)
    bn.train()
    for _ in range(4):
        X = rng.normal(1.5, 2.0, size=(4, 3, 4, 5))
        got = step(X)
        tx = torch.tensor(X, requires_grad=True)
        bn.weight.grad = bn.bias.grad = None
        ty = bn(tx)
        (ty * torch.tensor(cot)).sum().backward()
        for g, e in zip(got, [ty.detach(), tx.grad, bn.weight.grad, bn.bias.grad]):
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(rm.op.value, bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv.op.value, bn.running_var.numpy(), rtol=1e-12)
    bn.eval()
    X = rng.normal(size=(2, 3, 4, 5))
    (ye,) = gb.compile([x], [gb.batch_norm(x, gamma, beta, rm, rv)])(X)
    np.testing.assert_allclose(ye, bn(torch.tensor(X)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_layer_norm_matches_torch():
    rng = np.random.default_rng(9)
    g, b = rng.uniform(0.5, 2, 6), rng.normal(size=6)
    _compare(lambda x, gm, bt: gb.layer_norm(x, gm, bt),
             lambda x, gm, bt: F.layer_norm(x, (6,), gm, bt), rng.normal(size=(3, 4, 6)), g, b, rtol=1e-9)
