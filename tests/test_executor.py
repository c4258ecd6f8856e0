"""The executor: generated code, preallocated buffers, in-place updates, re-planning."""

from __future__ import annotations

import threading
import traceback
import tracemalloc

import numpy as np
import pytest

import graphbp as gb
from graphbp.runtime.feeds import bind_feeds


def interpret(prog: gb.Program, *args):
    """The reference interpreter (``gb.evaluate``) on the program's (rewritten) outputs and
    update values: its outputs and the new parameter values, nothing updated."""
    feeds = dict(zip(prog.inputs, bind_feeds(prog.inputs, args, {})))
    values = gb.evaluate(list(prog.outputs) + [v for _, v in prog.updates], feeds)
    k = len(prog.outputs)
    return values[:k], values[k:]


def mlp(seed=0, sizes=(6, 8, 8, 3), act=gb.tanh, dtype="float64"):
    rng = np.random.default_rng(seed)
    x = gb.input("x", (None, sizes[0]), dtype=dtype)
    t = gb.input("t", (None, sizes[-1]), dtype=dtype)
    params, h = [], x
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        W = gb.param(f"W{i}", rng.normal(size=(a, b)).astype(dtype))
        bb = gb.param(f"b{i}", np.zeros(b, dtype))
        params += [W, bb]
        h = h @ W + bb
        if i < len(sizes) - 2:
            h = act(h)
    loss = gb.mean(gb.sum(gb.square(h - t), axis=1))
    return x, t, params, loss


def sgd_program(lr=0.1, runtime=None, **kw):
    x, t, params, loss = mlp(**kw)
    grads = gb.grad(loss, params)
    prog = gb.compile([x, t], [loss, *grads], updates={p: p - lr * g for p, g in zip(params, grads)},
                      runtime=runtime)
    return prog, params


def feeds(batch=5, seed=1, dtype="float64", n_in=6, n_out=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, n_in)).astype(dtype), rng.normal(size=(batch, n_out)).astype(dtype)


def test_generated_code_matches_the_interpreter_and_updates_in_place():
    prog, params = sgd_program()
    X, T = feeds()
    before = [p.value.copy() for p in params]
    ids = [id(p.value) for p in params]
    expected, new_values = interpret(prog, X, T)
    for p, b in zip(params, before):  # the interpreter applied no update; restore anyway
        p.value[...] = b
    got = prog(X, T)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    for p, v in zip(params, new_values):
        np.testing.assert_allclose(p.value, v, rtol=1e-12, atol=1e-12)
    assert [id(p.value) for p in params] == ids  # written into, never rebound


def test_outputs_do_not_alias_buffers_reused_by_the_next_call():
    prog, _ = sgd_program()
    X, T = feeds()
    first = prog(X, T)
    kept = [a.copy() for a in first]
    prog(X * 2, T)
    for a, k in zip(first, kept):
        np.testing.assert_array_equal(a, k)


def test_output_that_is_a_parameter_is_returned_before_its_update():
    w = gb.param("w", np.ones(3))
    x = gb.input("x", (3,), dtype="float64")
    prog = gb.compile([x], [w, gb.transpose(w)], updates={w: w + x})
    out_w, out_wt = prog(np.full(3, 2.0))
    np.testing.assert_array_equal(out_w, np.ones(3))
    np.testing.assert_array_equal(out_wt, np.ones(3))
    np.testing.assert_array_equal(w.value, np.full(3, 3.0))


def test_swapped_updates_read_the_old_values():
    a = gb.param("a", np.array([1.0, 2.0]))
    b = gb.param("b", np.array([3.0, 4.0]))
    x = gb.input("x", (2,), dtype="float64")
    prog = gb.compile([x], [gb.sum(x)], updates={a: b, b: a})
    prog(np.zeros(2))
    np.testing.assert_array_equal(a.value, [3.0, 4.0])
    np.testing.assert_array_equal(b.value, [1.0, 2.0])


def test_memory_plan_reuses_buffers_and_reports_peaks():
    x, t, params, loss = mlp(sizes=(16, 32, 32, 32, 32, 4))
    grads = gb.grad(loss, params)
    prog = gb.compile([x, t], [loss], updates={p: p - 0.1 * g for p, g in zip(params, grads)})
    prog(*feeds(batch=64, n_in=16, n_out=4))
    plan = prog.memory_plan()
    assert plan.signature == ((64, 16), (64, 4))
    assert 0 < plan.forward_peak <= plan.naive
    assert 0 < plan.backward_peak <= plan.naive
    assert plan.buffers < plan.naive  # values with disjoint lifetimes share buffers
    assert plan.n_inplace > 0
    assert plan.saved >= 64 * 32 * 8  # at least one activation is kept for backward
    assert "memory plan" in str(plan)


def test_replanning_on_new_shapes_and_plans_are_cached():
    prog, params = sgd_program(lr=0.0)
    for batch in (5, 7, 5):
        X, T = feeds(batch=batch)
        got = prog(X, T)
        np.testing.assert_allclose(got[0], interpret(prog, X, T)[0][0], rtol=1e-12)
        assert prog.memory_plan().signature[0] == (batch, 6)
    assert len(prog._executor.plans) == 2
    assert prog.memory_plan((7, 6), (7, 3)).signature == ((7, 6), (7, 3))
    with pytest.raises(gb.FeedError):
        prog(np.zeros((5, 6)), np.zeros((4, 3)))


def test_source_is_readable_and_deterministic():
    def build():
        prog, _ = sgd_program()
        prog(*feeds())
        return prog.source()

    a, b = build(), build()
    assert a == b
    assert "def forward(x, t):" in a and "def backward(" in a and "def step(x, t):" in a
    assert "dot(" in a and "add_reduce(" in a  # the cheap calls, not np.matmul / np.sum
    assert "in place" in a  # SGD updates written straight into the parameters
    assert "test_executor.py" in a  # each line names the user's line that built it
    compile(a, "<check>", "exec")


def test_source_for_given_shapes_without_calling():
    prog, _ = sgd_program()
    src = prog.source((4, 6), (4, 3))
    assert "float64(4, 8)" in src
    with pytest.raises(gb.FeedError):
        sgd_program()[0].source()


def test_traceback_points_at_the_generated_line():
    x = gb.input("x", (None, 3), dtype="float64")
    y = gb.input("y", (None, 3), dtype="float64")
    prog = gb.compile([x, y], [gb.divide(x, y)])
    old = np.seterr(divide="raise")
    try:
        with pytest.raises(Exception) as info:
            prog(np.ones((2, 3)), np.zeros((2, 3)))
    finally:
        np.seterr(**old)
    text = "".join(traceback.format_exception(info.value.__cause__ or info.value))
    assert "<graphbp program" in text and "divide(x, y" in text
    assert "divide" in str(info.value)


def test_steady_state_step_allocates_no_full_size_arrays():
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 256), dtype="float32")
    t = gb.input("t", (None, 256), dtype="float32")
    params, h = [], x
    for i in range(3):
        W = gb.param(f"W{i}", (rng.normal(size=(256, 256)) * 0.05).astype(np.float32))
        b = gb.param(f"b{i}", np.zeros(256, np.float32))
        params += [W, b]
        h = gb.tanh(h @ W + b)
    loss = gb.mean(gb.square(h - t))
    grads = gb.grad(loss, params)
    prog = gb.compile([x, t], [loss], updates={p: p - 0.01 * g for p, g in zip(params, grads)})
    X = rng.normal(size=(128, 256)).astype(np.float32)
    T = rng.normal(size=(128, 256)).astype(np.float32)
    prog(X, T)
    prog(X, T)
    param_bytes = sum(p.value.nbytes for p in params)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        prog(X, T)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 0.05 * param_bytes, (peak, param_bytes)


def test_concurrent_calls_do_not_corrupt_buffers():
    prog, _ = sgd_program(lr=0.0)
    inputs = [feeds(batch=6, seed=s) for s in range(4)]
    expected = [interpret(prog, *f)[0][0] for f in inputs]
    errors = []

    def worker(k):
        for _ in range(50):
            got = prog(*inputs[k])[0]
            if not np.allclose(got, expected[k], rtol=1e-12):
                errors.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


def test_check_numerics_path_names_the_op_and_leaves_params_untouched():
    w = gb.param("w", np.array([1.0, -1.0]))
    x = gb.input("x", (2,), dtype="float64")
    y = gb.sum(gb.log(x * w))
    g = gb.grad(y, w)
    prog = gb.compile([x], [y], updates={w: w - 0.1 * g}, check_numerics=True)
    with pytest.raises(gb.NumericsError) as info, np.errstate(invalid="ignore"):
        prog(np.array([1.0, 1.0]))
    assert "log" in str(info.value)
    np.testing.assert_array_equal(w.value, [1.0, -1.0])
    assert "check(" in prog.source()


@pytest.mark.parametrize("optimize", [True, False])
def test_views_broadcasts_and_reductions_agree_with_the_interpreter(optimize):
    rng = np.random.default_rng(3)
    x = gb.input("x", (None, 4, 3), dtype="float64")
    w = gb.param("w", rng.normal(size=(3,)))
    z = gb.transpose(x * w, (0, 2, 1))  # (n, 3, 4)
    r = gb.reshape(z, (-1, 12))
    y = gb.sum(gb.exp(r) ** 3, axis=1, keepdims=True) + gb.mean(gb.maximum(z, 0.1), axis=(1, 2))[:, None] \
        if hasattr(gb.Node, "__getitem__") else gb.sum(gb.exp(r) ** 3, axis=1)
    loss = gb.sum(gb.where(gb.greater(y, 1.0), y, 0.0) / 7.0)
    g = gb.grad(loss, w)
    prog = gb.compile([x], [loss, g, r], optimize=optimize)
    X = rng.normal(size=(5, 4, 3)) * 0.3
    want = interpret(prog, X)[0]
    for a, b in zip(prog(X), want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_long_elementwise_chains_on_large_arrays_run_in_cache_blocks():
    x = gb.input("x", (None,), dtype="float32")
    a = gb.param("a", np.float32(1.3))
    u = x * a + 0.1
    y = gb.sum(gb.tanh(u * u * u + u) * 0.7)
    g = gb.grad(y, x)
    prog = gb.compile([x], [y, g])
    X = np.random.default_rng(0).normal(size=1_300_001).astype(np.float32)  # not a multiple of the block
    got = prog(X)
    want = interpret(prog, X)[0]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])  # blocks compute exactly the same values
    assert "run in blocks" in prog.source()


def test_softmax_cross_entropy_lowering_agrees_with_the_kernels():
    rng = np.random.default_rng(2)
    x = gb.input("x", (None, 5), dtype="float32")
    t = gb.input("t", (None,), dtype="int64")
    W = gb.param("W", rng.normal(size=(5, 7)).astype(np.float32))
    logits = x @ W
    loss = gb.mean(gb.softmax_cross_entropy(logits, t))
    g = gb.grad(loss, W)
    prog = gb.compile([x, t], [loss, g, gb.softmax(logits), gb.one_hot(t, 7)])
    X = (rng.normal(size=(9, 5)) * 10).astype(np.float32)
    T = rng.integers(0, 7, 9)
    for a, b in zip(prog(X, T), interpret(prog, X, T)[0]):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6)
    assert "maximum_reduce(" in prog.source()


def test_very_long_schedules_run_as_module_level_chunks():
    prog, params = sgd_program(lr=0.0, runtime=gb.RuntimeOptions(huge_steps=10, chunk_lines=7))
    X, T = feeds()
    got = prog(X, T)
    for a, b in zip(got, interpret(prog, X, T)[0]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(prog(X, T)[0], got[0], rtol=1e-12)


def test_add_n_never_writes_over_an_operand_it_reads_again():
    """``(v + x) + v`` flattens to ``add_n(v, x, v)``; ``v`` dies there, but the second call
    still reads it, so the output may not take ``v``'s buffer (found by the blocked random
    graph test: it gave 12 for 10)."""
    x = gb.input("x", (3,), dtype="float64")
    v = x + x
    y = ((v + x) + v) * 2.0
    got = gb.compile([x], [y])(np.ones(3))[0]
    np.testing.assert_array_equal(got, np.full(3, 10.0))
