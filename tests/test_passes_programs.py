"""Optimised programs agree with unoptimised ones, fix what the unoptimised get wrong,
keep provenance through fusion, and compile fast."""

import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphbp as gb
from graphbp.ops import MatMulBiasAct, SoftmaxCrossEntropy
from graphbp.passes import PASS_NAMES, optimize, verify

from opdb import OPDB


def both(inputs, outputs, args, **kw):
    with np.errstate(all="ignore"):
        ref = gb.compile(inputs, outputs, optimize=False)(*args)
        opt = gb.compile(inputs, outputs, debug=True, **kw)(*args)
    return ref, opt


def assert_agree(ref, opt, rtol=1e-9, atol=1e-11):
    for r, o in zip(ref, opt):
        np.testing.assert_allclose(o, r, rtol=rtol, atol=atol, equal_nan=True)


# ------------------------------------------------------------------ stability
def test_unfused_softmax_cross_entropy_with_large_logits():
    x = gb.input("x", (None, 3), dtype="float64")
    t = gb.input("t", (None, 3), dtype="float64")
    w = gb.param("w", np.array([1000.0, -1000.0, 500.0]))
    z = x * w
    p = gb.exp(z) / gb.sum(gb.exp(z), axis=1, keepdims=True)
    loss = gb.mean(-gb.sum(t * gb.log(p), axis=1))
    g = gb.grad(loss, w)
    X = np.array([[1.0, 0.5, 0.2], [0.1, 1.0, 0.3]])
    T = np.eye(3)[[0, 2]]
    ref, opt = both([x, t], [loss, g], [X, T])
    assert not np.all(np.isfinite(ref[1])) or not np.isfinite(ref[0])
    Z = X * w.value
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    expected_loss = np.mean(-np.sum(T * np.log(np.maximum(P, 1e-300)), axis=1))
    expected_g = np.sum((P - T) * X, axis=0) / 2  # softmax minus one-hot, chain rule through z = x*w
    assert np.isfinite(opt[0]) and np.all(np.isfinite(opt[1]))
    np.testing.assert_allclose(opt[0], expected_loss, rtol=1e-9)
    np.testing.assert_allclose(opt[1], expected_g, rtol=1e-9, atol=1e-12)


def test_fused_cross_entropy_with_differentiable_targets():
    x = gb.input("x", (2, 3), dtype="float64")
    traw = gb.param("traw", np.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]]))
    ls = gb.log(gb.exp(x) / gb.sum(gb.exp(x), axis=1, keepdims=True))
    loss = gb.sum(-gb.sum(traw * ls, axis=1))
    gx, gt = gb.grad(loss, [x, traw])
    f = gb.compile([x], [loss, gx, gt])
    assert any(isinstance(n.op, SoftmaxCrossEntropy) for n in f.order)
    X = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])
    ref, opt = both([x], [loss, gx, gt], [X])
    assert_agree(ref, opt)


@pytest.mark.parametrize("singular", ["sqrt", "log", "divide", "power"])
def test_where_guarded_singular_op_gets_a_finite_gradient(singular):
    x = gb.input("x", (4,), dtype="float64")
    inner = {"sqrt": lambda v: gb.sqrt(v), "log": lambda v: gb.log(v),
             "divide": lambda v: 1.0 / v, "power": lambda v: v ** 0.5}[singular](x)
    y = gb.sum(gb.where(x > 0, inner, 0.0))
    g = gb.grad(y, x)
    X = np.array([0.0, 1.0, 4.0, -1.0])
    ref, opt = both([x], [y, g], [X])
    assert np.isnan(ref[1][0]) or np.isinf(ref[1][0])
    assert np.all(np.isfinite(opt[1]))
    assert opt[1][0] == 0 and opt[1][3] == 0
    np.testing.assert_allclose(opt[1][1:3], ref[1][1:3])
    prog = gb.compile([x], [y, g], debug=True)
    assert len(prog.hazards) == 1 and singular in str(prog.hazards[0]) or prog.hazards[0].node.op.name == singular


def test_hazard_is_not_masked_when_the_singular_value_is_also_used_unguarded():
    x = gb.input("x", (3,), dtype="float64")
    s = gb.sqrt(x)
    y = gb.sum(gb.where(x > 0, s, 0.0)) + gb.sum(s)  # the second use is not masked
    g = gb.grad(y, x)
    prog = gb.compile([x], [y, g], debug=True)
    assert prog.hazards == []
    with np.errstate(all="ignore"):
        assert np.isinf(prog(np.array([0.0, 1.0, 4.0]))[1][0])  # the true derivative is infinite


def test_hazard_behind_an_elementwise_chain_and_double_negation_branch():
    x = gb.input("x", (3,), dtype="float64")
    y = gb.sum(gb.where(x <= 0, 0.0, 3.0 * gb.log(x)))
    g = gb.grad(y, x)
    ref, opt = both([x], [y, g], [np.array([0.0, 1.0, 2.0])])
    np.testing.assert_allclose(opt[1], [0.0, 3.0, 1.5])


# ------------------------------------------------------------------ differential: op database
def _opdb_cases():
    out = []
    for info in OPDB:
        s = info.samples(np.random.default_rng(0))[0]
        out.append(pytest.param(info, s, id=info.name))
    return out


@pytest.mark.parametrize("info, s", _opdb_cases())
def test_opdb_optimised_agrees_with_unoptimised(info, s):
    inputs = [gb.input(f"a{i}", shape, dtype=a.dtype) for i, (a, shape) in enumerate(zip(s.args, s.shapes()))]
    out = info.build(*inputs, **s.kwargs)
    outs = [out]
    if info.grad and out.dtype == np.float64:
        wrt = [n for i, n in enumerate(inputs) if n.dtype == np.float64 and i not in info.nondiff]
        if wrt:
            w = gb.constant(np.random.default_rng(1).normal(size=[d or 1 for d in out.shape]))
            outs += gb.grad(gb.sum(out * w) if out.type.is_concrete else gb.sum(out), wrt)
    ref, opt = both(inputs, outs, list(s.args))
    assert_agree(ref, opt, rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ differential: random graphs
UNARY = [gb.tanh, gb.exp, lambda v: gb.log1p(gb.square(v)), gb.sin, gb.sigmoid, gb.negative,
         lambda v: v * 1.0, lambda v: v + 0.0, gb.relu, gb.gelu, lambda v: gb.transpose(gb.transpose(v))]
BINARY = [gb.add, gb.subtract, gb.multiply, gb.maximum, lambda a, b: a / (1.0 + gb.square(b))]


@st.composite
def programs(draw):
    steps = draw(st.lists(st.tuples(st.booleans(), st.integers(0, 10), st.integers(0, 10), st.integers(0, 10)),
                          min_size=1, max_size=12))
    return steps


def _build_random(steps, x, y):
    vals = [x, y, x * y]
    for is_unary, k, i, j in steps:
        a, b = vals[i % len(vals)], vals[j % len(vals)]
        vals.append(UNARY[k % len(UNARY)](a) if is_unary else BINARY[k % len(BINARY)](a, b))
    return gb.sum(vals[-1] * vals[-2]) + gb.sum(vals[-1])


@settings(max_examples=25, deadline=None)
@given(programs(), st.sampled_from([None, *PASS_NAMES]))
def test_random_graphs_agree_with_all_passes_and_each_pass_alone(steps, only):
    x = gb.input("x", (64, 8), dtype="float64")
    y = gb.input("y", (8,), dtype="float64")
    loss = _build_random(steps, x, y)
    gx, gy = gb.grad(loss, [x, y])
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 8)), rng.normal(size=8)
    switches = {p: True for p in PASS_NAMES} if only is None else {p: p == only for p in PASS_NAMES}
    res = optimize([loss, gx, gy], switches, debug=True)
    ref = gb.compile([x, y], [loss, gx, gy], optimize=False)(X, Y)
    with np.errstate(all="ignore"):
        opt = gb.compile([x, y], res.roots, optimize=False)(X, Y)
    assert_agree(ref, opt, rtol=1e-8, atol=1e-9)


# ------------------------------------------------------------------ fusion
def test_matmul_bias_tanh_fuses_and_keeps_gradients():
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 5), dtype="float64")
    W = gb.param("W", rng.normal(size=(5, 4)))
    b = gb.param("b", rng.normal(size=4))
    loss = gb.sum(gb.square(gb.tanh(x @ W + b)))
    gW, gB = gb.grad(loss, [W, b])
    prog = gb.compile([x], [loss, gW, gB], debug=True)
    assert any(isinstance(n.op, MatMulBiasAct) for n in prog.order)
    ref, opt = both([x], [loss, gW, gB], [rng.normal(size=(6, 5))])
    assert_agree(ref, opt)
    # and its own VJP (un-fusing) is right
    from graphbp.ops.base import apply
    op = next(n.op for n in prog.order if isinstance(n.op, MatMulBiasAct))
    fused = gb.sum(apply(op, x, W, b))
    plain = gb.sum(gb.tanh(x @ W + b))
    X = rng.normal(size=(3, 5))
    assert_agree(gb.compile([x], gb.grad(plain, [W, b]), optimize=False)(X),
                 gb.compile([x], gb.grad(fused, [W, b]), optimize=False)(X))


# ------------------------------------------------------------------ framework
def test_switches_log_timings_snapshots():
    x = gb.input("x", (3,), dtype="float64")
    y = gb.exp(x) + gb.exp(x)
    on = gb.compile([x], [y])
    off = gb.compile([x], [y], passes={"cse": False})
    assert any(e.rule == "cse" for e in on.rewrite_log)
    assert not any(e.rule == "cse" for e in off.rewrite_log)
    assert set(on.pass_timings) <= set(on.pass_snapshots) and "input" in on.pass_snapshots
    with pytest.raises(ValueError, match="unknown pass"):
        gb.compile([x], [y], passes={"nope": False})
    plain = gb.compile([x], [y], optimize=False)
    assert plain.rewrite_log == [] and plain.outputs[0] is y


def test_verify_rejects_a_corrupted_graph():
    x = gb.input("x", (3,), dtype="float64")
    y = gb.exp(x)
    y.type = gb.TensorType((4,), "float64")  # simulate a buggy rewrite
    with pytest.raises(gb.GraphError, match="re-inferred"):
        verify([y], "test")


def test_parameters_are_never_replaced_and_updates_still_apply():
    x = gb.input("x", (None, 2), dtype="float64")
    w = gb.param("w", np.array([1.0, 2.0]))
    loss = gb.sum(x * w * 1.0)
    g = gb.grad(loss, w)
    step = gb.compile([x], [loss], updates={w: w - 0.5 * g})
    step(np.ones((3, 2)))
    np.testing.assert_allclose(w.value, [1.0 - 1.5, 2.0 - 1.5])
    assert all(n is w for n in step.order if n.op.name == "param")


def _deep_mlp(layers: int):
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 32))
    t = gb.input("t", (None, 32))
    h = x
    params = []
    for i in range(layers):
        W = gb.param(f"W{i}", (rng.normal(size=(32, 32)) * 0.1).astype(np.float32))
        b = gb.param(f"b{i}", np.zeros(32, np.float32))
        params += [W, b]
        h = gb.tanh(h @ W + b)
    loss = gb.mean(gb.square(h - t))
    return [loss, *gb.grad(loss, params)]


def _python_calls(fn) -> int:
    """How many Python function calls ``fn()`` makes: a deterministic measure of work."""
    count = 0

    def prof(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def test_passes_do_linear_work_in_the_depth_of_an_mlp():
    """Doubling the depth at most doubles the passes' work (counted in function calls, not
    timed: a quadratic step, e.g. a per-node walk of the whole graph, would quadruple it)."""
    small, big = _deep_mlp(64), _deep_mlp(128)
    res = optimize(big)
    assert len(res.roots) == len(big)
    ratio = _python_calls(lambda: optimize(big)) / _python_calls(lambda: optimize(small))
    assert ratio < 2.2, f"passes' work grew {ratio:.2f}x when the depth doubled"
