"""Gradients of the fused losses with respect to their targets (issue 10, item 1).

Float targets (soft labels, distillation, label smoothing) are differentiable: the gradient
of ``sigmoid_binary_cross_entropy(z, t)`` with respect to ``t`` is ``-z`` and the one of
``softmax_cross_entropy(x, p)`` with respect to ``p`` is ``-log_softmax(x)``. Integer labels
are not differentiable: asking for their gradient is a DTypeError, as for any integer value.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb

Z = np.array([1.0, -2.0, 0.5])
T = np.array([0.2, 0.7, 1.0])


def test_bce_gradient_with_respect_to_float_targets_is_minus_logits():
    z = gb.input("z", (3,), dtype="float64")
    t = gb.input("t", (3,), dtype="float64")
    loss = gb.sum(gb.sigmoid_binary_cross_entropy(z, t))
    dz, dt = gb.compile([z, t], gb.grad(loss, [z, t]))(Z, T)
    np.testing.assert_allclose(dt, -Z, rtol=1e-12)
    np.testing.assert_allclose(dz, 1 / (1 + np.exp(-Z)) - T, rtol=1e-12)


def test_bce_target_gradient_is_summed_over_broadcast_axes():
    z = gb.input("z", (2, 3), dtype="float64")
    t = gb.input("t", (3,), dtype="float64")
    Zb = np.stack([Z, 2 * Z])
    (dt,) = gb.compile([z, t], gb.grad(gb.sum(gb.sigmoid_binary_cross_entropy(z, t)), [t]))(Zb, T)
    np.testing.assert_allclose(dt, -Zb.sum(0), rtol=1e-12)


def test_softmax_cross_entropy_gradient_with_respect_to_soft_labels_is_minus_log_softmax():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 5))
    P = rng.uniform(0.1, 1, (4, 5))
    P /= P.sum(-1, keepdims=True)
    x = gb.input("x", (None, 5), dtype="float64")
    p = gb.input("p", (None, 5), dtype="float64")
    (dp,) = gb.compile([x, p], gb.grad(gb.sum(gb.softmax_cross_entropy(x, p)), [p]))(X, P)
    lse = np.log(np.exp(X).sum(-1, keepdims=True))
    np.testing.assert_allclose(dp, -(X - lse), rtol=1e-12)


def test_integer_labels_are_not_differentiable():
    x = gb.input("x", (4, 5), dtype="float64")
    t = gb.input("t", (4,), dtype="int64")
    with pytest.raises(gb.DTypeError, match="float"):
        gb.grad(gb.sum(gb.softmax_cross_entropy(x, t)), [t])


def test_target_gradients_agree_with_torch():
    torch = pytest.importorskip("torch")
    zt = torch.tensor(Z, requires_grad=True)
    tt = torch.tensor(T, requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(zt, tt, reduction="sum").backward()
    z = gb.input("z", (3,), dtype="float64")
    t = gb.input("t", (3,), dtype="float64")
    (dt,) = gb.compile([z, t], gb.grad(gb.sum(gb.sigmoid_binary_cross_entropy(z, t)), [t]))(Z, T)
    np.testing.assert_allclose(dt, tt.grad.numpy(), rtol=1e-12)
    X = np.array([[1.0, -0.5, 2.0], [0.3, 0.1, -1.0]])
    P = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    xt = torch.tensor(X, requires_grad=True)
    pt = torch.tensor(P, requires_grad=True)
    torch.nn.functional.cross_entropy(xt, pt, reduction="sum").backward()
    x = gb.input("x", (2, 3), dtype="float64")
    p = gb.input("p", (2, 3), dtype="float64")
    (dp,) = gb.compile([x, p], gb.grad(gb.sum(gb.softmax_cross_entropy(x, p)), [p]))(X, P)
    np.testing.assert_allclose(dp, pt.grad.numpy(), rtol=1e-12)
