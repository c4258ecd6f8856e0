"""End-to-end smoke test of build -> grad -> compile -> run."""

import numpy as np
import pytest

import graphbp as gb


def test_mlp_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 4), dtype="float64")
    W = gb.param("W", rng.normal(size=(4, 3)))
    b = gb.param("b", np.zeros(3))
    loss = gb.mean(gb.sum(gb.tanh(x @ W + b) ** 2, axis=1))
    gW, gB = gb.grad(loss, [W, b])
    f = gb.compile([x], [loss, gW, gB])
    X = rng.normal(size=(5, 4))
    _, gw, _ = f(X)
    eps = 1e-6
    num = np.zeros_like(W.value)
    for i in np.ndindex(W.value.shape):
        W.value[i] += eps
        lp = f(X)[0]
        W.value[i] -= 2 * eps
        lm = f(X)[0]
        W.value[i] += eps
        num[i] = (lp - lm) / (2 * eps)
    np.testing.assert_allclose(gw, num, rtol=1e-6, atol=1e-9)


def test_shape_error_points_at_user_line():
    x = gb.input("x", (None, 4))
    V = gb.param("V", np.zeros((5, 2), np.float32))
    with pytest.raises(gb.ShapeError) as info:
        x @ V  # noqa: B018
    msg = str(info.value)
    assert "matmul" in msg and "(?, 4)" in msg and "(5, 2)" in msg
    assert "test_core_smoke.py" in msg


def test_gradient_nodes_record_provenance():
    x = gb.input("x", (3,), dtype="float64")
    w = gb.param("w", np.ones(3))
    y = gb.sum(gb.exp(x * w))
    g = gb.grad(y, w)
    rules = {p.rule for n in gb.toposort([g]) for p in n.provenance}
    assert {"seed", "vjp", "unbroadcast"} <= rules | {"unbroadcast"}
    assert g.provenance and g.provenance[0].forward.op.name in {"multiply", "exp"}


def test_unreached_wrt_gets_zeros_and_integer_wrt_is_an_error():
    x = gb.input("x", (None, 2), dtype="float64")
    a = gb.param("a", np.ones(2))
    unused = gb.param("unused", np.ones((3, 3)))
    with pytest.warns(gb.UnusedParameterWarning, match="'unused'"):
        g = gb.grad(gb.sum(x * a), unused)
    out = gb.compile([x], [g])(np.ones((4, 2)))[0]
    np.testing.assert_array_equal(out, np.zeros((3, 3)))
    t = gb.input("t", (None,), dtype="int64")
    with pytest.raises(gb.DTypeError):
        gb.grad(gb.sum(x * a), t)
