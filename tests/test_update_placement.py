"""Parameter updates written as soon as they are final (runtime/plan.place_updates): each
weight gradient dies at its update instead of living to the end of the step, the values
are those of the reference interpreter, and a parameter still read (an output, a view)
is updated only after its last reader."""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb


def _chain(layers=12, width=64, batch=4, seed=0):
    rng = np.random.default_rng(seed)
    x, t = gb.input("x", (None, width), dtype="float64"), gb.input("t", (None, width), dtype="float64")
    ws = [gb.param(f"W{k}", rng.normal(size=(width, width)) / np.sqrt(width)) for k in range(layers)]
    h = x
    for w in ws:
        h = gb.tanh(h @ w)
    loss = gb.mean((h - t) ** 2)
    feeds = [rng.normal(size=(batch, width)), rng.normal(size=(batch, width))]
    return [x, t], loss, ws, feeds


@pytest.mark.parametrize("kw", [{}, {"remat": "min_cut"}, {"remat": "min_cut", "memory_budget": 1_000_000}],
                         ids=["none", "min_cut", "budget"])
def test_sgd_step_matches_the_reference_and_frees_gradients_early(kw):
    inputs, loss, ws, feeds = _chain()
    lr = 0.1
    grads = gb.grad(loss, ws)
    ref = gb.evaluate([loss, *grads], dict(zip(inputs, feeds)))
    expected = [w.value - lr * g for w, g in zip(ws, ref[1:])]
    step = gb.compile(inputs, [loss], updates={w: w - lr * g for w, g in zip(ws, grads)}, **kw)
    out = step(*feeds)[0]
    np.testing.assert_allclose(out, ref[0], rtol=1e-12)
    for w, e in zip(ws, expected):
        np.testing.assert_allclose(w.value, e, rtol=1e-12, atol=1e-14)
    grad_bytes = ws[0].value.nbytes
    # all 12 gradients alive at once would be 12 * 32 KiB; written early, a few at most are
    assert step.memory_plan().backward_peak < 4 * grad_bytes


def test_optimizer_updates_also_move_early_and_agree():
    inputs, loss, ws, feeds = _chain(layers=6)
    start = [w.value.copy() for w in ws]
    ref_step = gb.compile(inputs, [loss], updates=gb.optim.SGD(0.05).updates(loss, ws),
                          check_numerics=True)  # checked programs write updates at the end
    ref_step(*feeds)
    ref = [w.value.copy() for w in ws]
    for w, v in zip(ws, start):
        w.value[...] = v
    step = gb.compile(inputs, [loss], updates=gb.optim.SGD(0.05).updates(loss, ws))
    step(*feeds)
    for w, r in zip(ws, ref):
        np.testing.assert_allclose(w.value, r, rtol=1e-12, atol=1e-14)
    assert step.memory_plan().backward_peak < 4 * ws[0].value.nbytes


def test_a_parameter_returned_or_viewed_is_updated_after_its_readers():
    inputs, loss, ws, feeds = _chain(layers=3, width=8)
    before = [w.value.copy() for w in ws]
    grads = gb.grad(loss, ws)
    step = gb.compile(inputs, [loss, ws[2], ws[1].T], updates={w: w - 0.5 * g for w, g in zip(ws, grads)})
    ref = gb.evaluate([loss, *grads], dict(zip(inputs, feeds)))
    _, w2, w1t = step(*feeds)
    np.testing.assert_array_equal(w2, before[2])  # the value before the step
    np.testing.assert_array_equal(w1t, before[1].T)
    for w, b, g in zip(ws, before, ref[1:]):
        np.testing.assert_allclose(w.value, b - 0.5 * g, rtol=1e-12, atol=1e-14)
