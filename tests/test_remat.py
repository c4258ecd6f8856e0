"""Rematerialisation (``remat=``, ``memory_budget=``, ``gb.checkpoint``): recomputing changes
no value or gradient, never saves more, respects a budget or refuses it with the smallest
budget that fits, and recomputes checkpoint regions (graphbp/runtime/remat.py)."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
from hypothesis import given, settings

import graphbp as gb

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from test_passes_examples import EXAMPLES, _feeds, _load  # noqa: E402
from test_random_graphs import SHAPE, _build, graphs  # noqa: E402


def _assert_same(got, ref, tol):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


def _chain(layers=12, width=16, ckpt=False, seed=0):
    """A tanh MLP (W8 in small) with its MSE loss and weight gradients."""
    rng = np.random.default_rng(seed)
    x, t = gb.input("x", (None, width), dtype="float64"), gb.input("t", (None, width), dtype="float64")
    ws = [gb.param(f"W{k}", rng.normal(size=(width, width)) / np.sqrt(width)) for k in range(layers)]
    h = x
    for w in ws:
        if ckpt:
            with gb.checkpoint():
                h = gb.tanh(h @ w)
        else:
            h = gb.tanh(h @ w)
    loss = gb.mean((h - t) ** 2)
    feeds = [rng.normal(size=(5, width)), rng.normal(size=(5, width))]
    return [x, t], loss, ws, feeds


@settings(max_examples=40, deadline=None)
@given(graphs())
def test_random_graphs_min_cut_and_budgets_agree_with_the_reference(graph):
    steps, outs, seed = graph
    xs, loss, rng = _build(steps, outs, seed)
    grads = gb.grad(loss, xs)
    args = [rng.uniform(-1, 1, size=SHAPE) for _ in xs]
    ref = gb.evaluate([loss, *grads], dict(zip(xs, args)))
    none = gb.compile(xs, [loss, *grads], remat="none")
    cut = gb.compile(xs, [loss, *grads], remat="min_cut")
    assert cut.remat.saved_after <= none.remat.saved_after
    _assert_same(cut(*args), ref, 1e-9)
    budget = none.remat.saved_after // 4
    try:
        small = gb.compile(xs, [loss, *grads], remat="min_cut", memory_budget=budget)
    except gb.GraphError as e:
        assert "Pass memory_budget>=" in str(e)
    else:
        assert small.remat.kept <= budget or small.remat.kept == cut.remat.kept <= budget
        _assert_same(small(*args), ref, 1e-9)


@settings(max_examples=15, deadline=None)
@given(graphs())
def test_random_graphs_second_order_with_min_cut(graph):
    steps, outs, seed = graph
    xs, loss, rng = _build(steps, outs, seed)
    g = gb.grad(loss, xs)
    gg = gb.grad(gb.sum(g[0] * g[0]), xs)
    args = [rng.uniform(-1, 1, size=SHAPE) for _ in xs]
    ref = gb.evaluate([loss, *gg], dict(zip(xs, args)))
    _assert_same(gb.compile(xs, [loss, *gg], remat="min_cut")(*args), ref, 1e-8)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_agree_under_min_cut_and_budgets(path):
    mod = _load(path)
    prog = mod.build()
    feeds = _feeds(prog.inputs, np.random.default_rng(0))
    ref = gb.evaluate(prog.user_outputs, dict(zip(prog.inputs, feeds)))
    none = gb.compile(prog.inputs, prog.user_outputs)
    tol = 2e-5 if any(o.dtype == np.float32 for o in ref) else 1e-10
    _assert_same(none(*feeds), ref, tol)
    cut = gb.compile(prog.inputs, prog.user_outputs, remat="min_cut")
    assert cut.remat.saved_after <= none.remat.saved_after
    _assert_same(cut(*feeds), ref, tol)
    for frac in (4, 10):
        try:
            small = gb.compile(prog.inputs, prog.user_outputs, remat="min_cut",
                               memory_budget=none.remat.saved_after // frac)
        except gb.GraphError as e:
            assert "smallest plan found" in str(e)
            continue
        _assert_same(small(*feeds), ref, tol)


def test_chain_budget_recomputes_segments_and_keeps_values():
    inputs, loss, ws, feeds = _chain(layers=16)
    outs = [loss, *gb.grad(loss, ws)]
    ref = gb.evaluate(outs, dict(zip(inputs, feeds)))
    none = gb.compile(inputs, outs)
    budget = none.remat.saved_after // 2
    prog = gb.compile(inputs, outs, remat="min_cut", memory_budget=budget)
    assert prog.remat.kept <= budget < none.remat.kept
    assert prog.remat.segments >= 2 and prog.remat.flops > 0
    _assert_same(prog(*feeds), ref, 1e-10)
    assert all(c.provenance[0].rule == "remat" for c in prog.remat.recomputed)
    plan = prog.memory_plan()
    assert plan.saved < plan.saved_before and plan.recomputed == len(prog.remat.recomputed)
    assert "recomputed" in str(plan)
    assert "recomputed in backward" in prog.explain()


def test_impossible_budget_names_the_smallest_that_fits():
    inputs, loss, ws, _ = _chain(layers=16)
    outs = [loss, *gb.grad(loss, ws)]
    with pytest.raises(gb.GraphError, match=r"Pass memory_budget>=(\d+)") as info:
        gb.compile(inputs, outs, remat="min_cut", memory_budget=1)
    smallest = int(info.value.args[0].rsplit(">=", 1)[1].rstrip("."))
    prog = gb.compile(inputs, outs, remat="min_cut", memory_budget=smallest)
    assert prog.remat.kept <= smallest
    with pytest.raises(gb.GraphError, match="needs remat='min_cut'"):
        gb.compile(inputs, outs, memory_budget=smallest)
    with pytest.raises(gb.GraphError, match="remat= takes"):
        gb.compile(inputs, outs, remat="everything")


def test_min_cut_saves_the_activation_not_the_matmul_and_recomputes_cheap_tails():
    x = gb.input("x", (None, 16))  # a 16-wide contraction: too many FLOPs per element to recompute
    w = gb.param("W", np.eye(16, dtype=np.float32))
    y = gb.exp(gb.tanh(x @ w)) * 3.0  # two cheap ops after the tanh: recomputed from it
    loss = gb.sum(y * y)
    (gw,) = gb.grad(loss, [w])
    none = gb.compile([x], [loss, gw])
    cut = gb.compile([x], [loss, gw], remat="min_cut")
    assert cut.remat.saved_after < none.remat.saved_after
    assert {n.op.name for n in cut.partition.saved} <= {"tanh", "exp", "multiply"}
    assert not any(n.op.name == "matmul" for n in cut.remat.recomputed)
    feed = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    _assert_same(cut(feed), none(feed), 1e-6)


def test_checkpoint_regions_are_recomputed_and_only_their_inputs_kept():
    inputs, loss, ws, feeds = _chain(layers=6, ckpt=True)
    outs = [loss, *gb.grad(loss, ws)]
    ref = gb.evaluate(outs, dict(zip(inputs, feeds)))
    prog = gb.compile(inputs, outs)  # remat="none" still honours checkpoint regions
    inside = [n for n in prog.partition.forward if gb.graph.context.CHECKPOINT_SCOPE in n.scope]
    assert inside and not set(inside) & set(prog.partition.saved)
    assert {c.provenance[0].forward for c in prog.remat.recomputed} >= {n for n in inside if n.op.name == "tanh"}
    _assert_same(prog(*feeds), ref, 1e-10)
    plain_inputs, plain_loss, plain_ws, _ = _chain(layers=6)
    plain = gb.compile(plain_inputs, [plain_loss, *gb.grad(plain_loss, plain_ws)])
    assert prog.remat.saved_after < plain.remat.saved_after
    assert gb.Provenance(ws[0], "remat").describe().startswith("recomputed")
    with pytest.raises(ValueError, match="leading '@'"):
        with gb.scope("@checkpoint"):
            pass


def test_training_step_with_budget_matches_none():
    inputs, loss, ws, feeds = _chain(layers=10)
    start = [w.value.copy() for w in ws]
    results = []
    for kw in ({}, {"remat": "min_cut"}, {"remat": "min_cut", "memory_budget": 10_000}):
        for w, v in zip(ws, start):
            w.value[...] = v
        try:
            step = gb.compile(inputs, [loss], updates=gb.optim.SGD(0.1).updates(loss, ws), **kw)
        except gb.GraphError:
            continue
        out = step(*feeds)[0]
        plan = step.memory_plan()  # also when a forward value only the backward read is dropped
        assert plan.saved_before is None or plan.saved <= plan.saved_before
        results.append((out, [w.value.copy() for w in ws]))
    assert len(results) >= 2
    for out, params in results[1:]:
        _assert_same([out, *params], [results[0][0], *results[0][1]], 1e-12)


def test_a_forward_value_only_the_backward_read_is_not_computed_twice():
    """Found by hypothesis: a forward value whose only readers were backward nodes is
    recomputed there, so the forward schedule drops it (and the plan still has every type)."""
    steps = [("elu_shift", (0,)), ("var_keep", (0,)), ("elu_shift", (0,)), ("multiply", (0, 4)),
             ("add", (0, 0)), ("add", (0, 0))]
    xs, loss, rng = _build(steps, [6], 0)
    grads = gb.grad(loss, xs)
    args = [rng.uniform(-1, 1, size=SHAPE) for _ in xs]
    prog = gb.compile(xs, [loss, *grads], remat="min_cut")
    copied = {c.provenance[0].forward for c in prog.remat.recomputed}
    assert copied and set(prog.partition.forward) <= set(prog.order)
    _assert_same(prog(*args), gb.evaluate([loss, *grads], dict(zip(xs, args))), 1e-9)


def _rnn_loss(ckpt: bool, seed: int = 0):
    """A tanh RNN over 5 steps whose step has a two-op region, checkpointed or not."""
    rng = np.random.default_rng(seed)
    xs = gb.input("xs", (5, 3, 4), dtype="float64")
    w = gb.param("W", rng.normal(size=(4, 4)) * 0.3)

    def region(h, x):
        a = gb.tanh(h @ w + x)
        return gb.tanh(a * a + 1.0)

    def step(h, x):
        if ckpt:
            with gb.checkpoint():
                b = region(h, x)
        else:
            b = region(h, x)
        return b, b

    _, ys = gb.scan(step, gb.constant(np.zeros((3, 4))), xs)
    loss = gb.sum(ys * ys)
    return xs, w, loss, rng.normal(size=(5, 3, 4))


def test_checkpoint_inside_a_scan_body_keeps_only_the_carries():
    """Inside a scan body a checkpoint region is recomputed from the stacked carries: the
    forward scan emits no per-step value of the region for the reverse scan to read."""
    stacked = {}
    for ckpt in (False, True):
        xs, w, loss, feed = _rnn_loss(ckpt)
        outs = [loss, *gb.grad(loss, [w])]
        prog = gb.compile([xs], outs)
        (scan,) = [n for n in prog.partition.forward if n.op.name == "scan"]
        stacked[ckpt] = len(scan.op.emitted())
        _assert_same(prog(feed), gb.evaluate(outs, {xs: feed}), 1e-10)
        hvp = gb.grad(gb.sum(outs[1] * outs[1]), [w])
        _assert_same(gb.compile([xs], hvp)(feed), gb.evaluate(hvp, {xs: feed}), 1e-10)
    assert stacked[True] < stacked[False]  # without the region: ys and stacked carries only
