"""A scan body run as one generated loop, writing its per-step results into the loop's buffers.

``Program.runner_loop`` runs code generated with ``into=LoopLayout(...)``: every step of
the loop in one function, output ``k`` computed into (or copied into) the buffer the layout
binds for it. The scan kernel binds the rows of its stacked ``(T, ...)`` buffers, so a
step's ys and carries are never copied afterwards. Here: the generated form against the
ordinary one for every kind of output (fresh, duplicate, feed, view, 0-d), the forms that
cannot write into buffers, the loop's structure, and compiled scans (stacked carries kept
or not, forward and reverse, unread ys, 0-d rows) against the reference interpreter.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops.loop import Scan
from graphbp.runtime.loopgen import ArrayPool, LoopLayout

RNG = np.random.default_rng(3)


def _into_source(prog: gb.Program) -> str:
    ex = prog._executor
    (gen,) = ex.plans[ex.last_signature].loops.values()
    return gen.source


def _once(prog: gb.Program) -> LoopLayout:
    return LoopLayout.once(len(prog.inputs), len(prog.outputs))


def test_every_kind_of_output_lands_in_its_buffer():
    x = gb.input("x", (3, 4), "float32")
    s = gb.input("s", (), "float64")
    y = gb.tanh(x) * 2.0
    outs = [y, y, x, gb.transpose(y), s * s, gb.sum(y)]  # fresh, duplicate, feed, view, 0-d, reduction
    prog = gb.compile([x, s], outs, optimize=False)
    feeds = [RNG.standard_normal((3, 4)).astype(np.float32), np.array(1.5)]
    want = prog(*feeds)
    run = prog.runner_loop(_once(prog), *feeds)
    bufs = [np.full(w.shape, np.nan, w.dtype) for w in want]
    assert run(range(1), *feeds, *bufs) == ()
    for b, w in zip(bufs, want):
        np.testing.assert_array_equal(b, w)
    assert prog.runner_loop(_once(prog), *feeds) is run  # planned and checked once: a loop asks every call
    src = _into_source(prog)
    assert "empty(" not in src  # fresh outputs are computed in place, the rest copied
    assert src.count("copyto(") == 3 and "if out1 is not out0: copyto(" in src  # duplicate, feed, view


def test_programs_that_cannot_write_into_buffers_say_so():
    w = gb.param("w", np.ones(3, np.float32))
    x = gb.input("x", (3,), "float32")
    updating = gb.compile([x], [w * x], updates={w: w - 0.1 * x})
    assert updating.runner_loop(LoopLayout.once(1, 1), np.ones(3, np.float32)) is None
    checking = gb.compile([x], [gb.exp(x)], check_numerics=True)
    assert checking.runner_loop(LoopLayout.once(1, 1), np.ones(3, np.float32)) is None


def _lstm(steps: int, reverse: bool):
    B, E, H = 3, 4, 5
    x = gb.input("x", (steps, B, E), "float32")
    p = {k: gb.param(k, (RNG.standard_normal(s) * 0.5).astype(np.float32))
         for k, s in (("w_ih", (4 * H, E)), ("w_hh", (4 * H, H)), ("b", (4 * H,)))}

    def step(state, x_t):
        h, c = gb.nn.lstm_cell(x_t, state, p["w_ih"], p["w_hh"], p["b"])
        return (h, c), h * h

    zeros = gb.constant(np.zeros((B, H), np.float32))
    (h, c), ys = gb.scan(step, (zeros, zeros), x, reverse=reverse)
    loss = gb.sum(ys * ys) + gb.sum(h * c)
    return x, p, loss


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("steps", [1, 6])
def test_compiled_scans_match_the_reference_interpreter(reverse, steps):
    x, p, loss = _lstm(steps, reverse)
    params = list(p.values())
    grads = gb.grad(loss, params)
    feed = RNG.standard_normal(x.shape).astype(np.float32)
    want = gb.evaluate([loss, *grads], {x: feed})
    for optimize in (True, False):  # licm's residual ys and stacked carries, or the plain scans
        got = gb.compile([x], [loss, *grads], optimize=optimize)(feed)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


def test_the_lstm_bodies_allocate_nothing_per_step():
    x, p, loss = _lstm(4, False)
    prog = gb.compile([x], [loss, *gb.grad(loss, list(p.values()))])
    prog(RNG.standard_normal(x.shape).astype(np.float32))
    scans = [n for n in prog.order if isinstance(n.op, Scan)]
    assert len(scans) == 2  # the forward scan and its reverse
    for n in scans:
        src = _into_source(n.op.body.program())
        assert "empty(" not in src and "array(" not in src
        if n.op.reverse:  # the four gate gradients are computed into their places in dz
            assert "copyto(" not in src and src.count("= out2[:, ") == 4


def test_concatenated_parts_are_computed_in_place_unless_read_elsewhere():
    x = gb.input("x", (2, 3), "float32")
    a, b = gb.exp(x), x * 3.0
    twice = gb.tanh(x)
    cat = gb.concatenate([a, b, x[:1] * 1.5], axis=0)
    shared = gb.concatenate([twice, x + 1.0], axis=1)
    prog = gb.compile([x], [cat, shared, twice * 2.0], optimize=False)
    feed = RNG.standard_normal((2, 3)).astype(np.float32)
    want = prog(feed)
    bufs = [np.empty_like(w) for w in want]
    prog.runner_loop(_once(prog), feed)(range(1), feed, *bufs)
    for b_, w in zip(bufs, want):
        np.testing.assert_array_equal(b_, w)
    src = _into_source(prog)
    assert "= out0[0:2]; " in src and "= out0[2:4]; " in src and "= out0[4:5]; " in src  # in place
    assert "copyto(v" in src  # the second concatenate copies: tanh(x) is read twice


@pytest.mark.parametrize("reverse", [False, True])
def test_a_carry_that_is_also_a_ys_shares_its_buffer(reverse):
    x = gb.input("x", (5, 2, 3), "float64")
    w = gb.param("w", RNG.standard_normal((3, 3)))

    def step(h, x_t):
        h = gb.tanh(h @ w + x_t)
        return h, h

    h_T, hs = gb.scan(step, gb.constant(np.zeros((2, 3))), x, reverse=reverse)
    loss = gb.sum(hs * hs) + gb.sum(h_T)
    outs = [loss, h_T, hs, gb.grad(loss, w)]
    feed = RNG.standard_normal((5, 2, 3))
    got = gb.compile([x], outs)(feed)
    for g, want in zip(got, gb.evaluate(outs, {x: feed})):
        np.testing.assert_allclose(g, want, rtol=1e-12)
    assert not np.shares_memory(got[1], got[2])  # the final carry is the program's own array


def _generated_calls(prog: gb.Program, *feeds) -> list[str]:
    """Names of the generated functions one call of ``prog`` enters, in order."""
    calls: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith("<graphbp program"):
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        prog(*feeds)
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("reverse", [False, True])
def test_a_scan_runs_all_its_steps_in_one_generated_call(reverse):
    counts = []
    for steps in (3, 17):
        x, p, loss = _lstm(steps, reverse)
        prog = gb.compile([x], [loss, *gb.grad(loss, list(p.values()))])
        feed = RNG.standard_normal(x.shape).astype(np.float32)
        prog(feed)  # plans every program once
        calls = _generated_calls(prog, feed)
        assert calls.count("loop") == 2  # the forward scan and its reverse, each one call
        counts.append(len(calls))
    assert counts[0] == counts[1]  # nothing per step: the steps are iterations of the loops
    for n in prog.order:
        if isinstance(n.op, Scan):
            src = _into_source(n.op.body.program())
            assert src.count("for t in steps:") == 1 and "def step(" not in src
            if n.op.emitted() == (2,):  # the reverse scan keeps its dz only: each carry in two
                assert "# the new carries are fed to the next step" in src  # buffers, exchanged


def test_views_of_loop_invariants_are_taken_once_before_the_loop():
    x = gb.input("x", (6, 2, 3), "float64")
    w = gb.param("w", RNG.standard_normal((3, 3)))
    h_T, hs = gb.scan(lambda h, x_t: (gb.tanh(h @ w + x_t),) * 2, gb.constant(np.zeros((2, 3))), x)
    loss = gb.sum(hs * hs) + gb.sum(h_T)
    outs = [loss, gb.grad(loss, w)]
    feed = RNG.standard_normal((6, 2, 3))
    prog = gb.compile([x], outs, optimize=False)  # the reverse body keeps its w.T
    for g, want in zip(prog(feed), gb.evaluate(outs, {x: feed})):
        np.testing.assert_allclose(g, want, rtol=1e-12)
    (rev,) = [n for n in prog.order if isinstance(n.op, Scan) and n.op.reverse]
    head, loop = _into_source(rev.op.body.program()).split("    for t in steps:")
    assert " = w.T  # " in head and " = w.T" not in loop


@pytest.mark.parametrize("reverse", [False, True])
def test_zero_d_rows_and_scalar_carries(reverse):
    x = gb.input("x", (5,), "float32")  # each step's x_t is 0-d
    w = gb.param("w", np.float32(0.7))

    def step(carry, x_t):
        n, s = carry
        s = gb.tanh(s * w + x_t)
        return (n + 1, s), s * 2.0

    (n, s), ys = gb.scan(step, (gb.constant(np.int64(0)), gb.constant(np.float32(0.1))), x, reverse=reverse)
    loss = gb.sum(ys * ys) + s
    outs = [n, s, ys, loss, gb.grad(loss, w)]
    feed = RNG.standard_normal(5).astype(np.float32)
    got = gb.compile([x], outs)(feed)
    for g, want in zip(got, gb.evaluate(outs, {x: feed})):
        np.testing.assert_allclose(g, want, rtol=1e-5)
    assert int(got[0]) == 5


def test_the_pool_hands_an_array_out_again_only_when_nothing_holds_it():
    pool = ArrayPool(keep=2)
    a = pool.empty((4, 3), np.dtype(np.float32))
    assert pool.empty((4, 3), np.dtype(np.float32)) is not a  # ``a`` is held here
    view = a[1:]
    del a
    b = pool.empty((4, 3), np.dtype(np.float32))  # the second one, free again
    assert b.base is None and not np.shares_memory(b, view)
    del view, b
    c, d = pool.empty((4, 3), np.dtype(np.float32)), pool.empty((4, 3), np.dtype(np.float32))
    e = pool.empty((4, 3), np.dtype(np.float32))  # a third, not kept: two are
    assert c is not d and e is not c and e is not d and len(pool._arrays[((4, 3), np.dtype(np.float32))]) == 2


def test_a_training_step_reuses_its_scan_buffers_and_the_results_it_returns_are_its_own():
    x, p, loss = _lstm(5, False)
    prog = gb.compile([x], [loss, *gb.grad(loss, list(p.values()))])
    feed = RNG.standard_normal(x.shape).astype(np.float32)
    first = [g.copy() for g in prog(feed)]
    for _ in range(3):  # the same pages every call: the arrays of the last call were dropped
        got = prog(feed)
        for g, want in zip(got, first):
            np.testing.assert_array_equal(g, want)
    pools = [n.op.body.program()._executor.pool for n in prog.order if isinstance(n.op, Scan)]
    pooled = [id(a) for pool in pools for arrays in pool._arrays.values() for a in arrays]
    # as many arrays as one call uses: each call took the last call's again
    assert len(pools) == 2 and pooled and all(len(arrays) < pool.keep for pool in pools
                                              for arrays in pool._arrays.values())
    prog(feed)
    assert [id(a) for pool in pools for arrays in pool._arrays.values() for a in arrays] == pooled
    # a scan output the program returns is the user's: the next call does not write into it
    h_T, ys = gb.scan(lambda h, x_t: (gb.tanh(h + x_t),) * 2, gb.constant(np.zeros(3)), gb.input("u", (4, 3), "float64"))
    u = next(n for n in gb.toposort([ys]) if n.op.leaf_kind == "input")
    f = gb.compile([u], [ys, h_T])
    a = f(np.ones((4, 3)))
    kept = [v.copy() for v in a]
    f(np.full((4, 3), 2.0))
    for v, k in zip(a, kept):
        np.testing.assert_array_equal(v, k)
