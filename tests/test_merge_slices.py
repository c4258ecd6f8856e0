"""The ``merge_slices`` pass: one elementwise op over touching slices of an array, run once.

Must fire on an LSTM's ``sigmoid`` over the i and f gates (in a graph and inside a scan
body), on touching slices covering a whole axis; must not fire on slices with a gap, that
overlap, of two arrays, along different axes or with a step, or under different ops.
Differential checks: values, gradients and a Hessian-vector product against the same
program compiled with the pass off.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops.activations import Sigmoid
from graphbp.ops.elementwise import Tanh
from graphbp.ops.indexing import GetItem
from graphbp.ops.loop import Scan
from graphbp.passes.slices import merge_slices, stack_view_ys

RNG = np.random.default_rng(5)
H = 3


def _count(roots, cls) -> int:
    """Nodes of op class ``cls`` in the graph and in every scan body."""
    total, stack = 0, list(gb.toposort(list(roots)))
    while stack:
        n = stack.pop()
        total += isinstance(n.op, cls)
        if isinstance(n.op, Scan):
            stack.extend(n.op.body.nodes())
    return total


def _gates(z):
    i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
    return gb.sigmoid(f) * gb.sigmoid(i) + gb.sigmoid(o) * gb.tanh(g)


def _same_with_and_without(x, loss, wrt, feeds):
    """Values, gradients and a Hessian-vector product with the pass on and off."""
    grads = gb.grad(loss, wrt)
    v = [gb.constant(RNG.standard_normal(w.shape)) for w in wrt]
    hvp = gb.grad(sum((gb.sum(g * d) for g, d in zip(grads, v)), gb.constant(0.0)), wrt)
    outs = [loss, *grads, *hvp]
    on = gb.compile([x], outs)(*feeds)
    off = gb.compile([x], outs, passes={"merge_slices": False})(*feeds)
    for a, b in zip(on, off):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_fires_on_the_input_and_forget_gates():
    x = gb.input("x", (2, 4 * H), "float64")
    y = _gates(x)
    res = merge_slices([y])
    assert [e.rule for e in res.log] == ["merge_slices"]
    assert _count([y], Sigmoid) == 3 and _count(res.roots, Sigmoid) == 2
    merged = res.log[0].after
    assert merged.shape == (2, 2 * H) and merged.inputs[0].op.index == ((None, None, None), (0, 2 * H, None))
    feed = RNG.standard_normal((2, 4 * H))
    np.testing.assert_allclose(gb.evaluate(res.roots[0], {x: feed}), gb.evaluate(y, {x: feed}), rtol=1e-15)


def test_values_gradients_and_second_order_match_the_unmerged_program():
    x = gb.input("x", (2, 4), "float64")
    w = gb.param("w", RNG.standard_normal((4, 4 * H)))
    _same_with_and_without(x, gb.sum(_gates(gb.tanh(x @ w)) ** 2), [w], [RNG.standard_normal((2, 4))])


def test_slices_covering_the_whole_axis_read_the_array_itself():
    x = gb.input("x", (2 * H, 2), "float64")
    y = gb.exp(x[:H]) + gb.exp(x[H:]) * 2.0
    res = merge_slices([y])
    assert _count(res.roots, gb.ops.elementwise.Exp) == 1
    assert res.log[0].after.inputs[0] is x
    feed = RNG.standard_normal((2 * H, 2))
    np.testing.assert_allclose(gb.evaluate(res.roots[0], {x: feed}), gb.evaluate(y, {x: feed}), rtol=1e-15)


@pytest.mark.parametrize("build", [
    lambda x, x2: gb.sigmoid(x[:, 0:H]) + gb.sigmoid(x[:, 2 * H:3 * H]),  # a gap between them
    lambda x, x2: gb.sigmoid(x[:, 0:H]) + gb.tanh(x[:, H:2 * H]),  # different ops
    lambda x, x2: gb.sigmoid(x[:, 0:H]) + gb.sigmoid(x2[:, H:2 * H]),  # slices of different arrays
    lambda x, x2: gb.sigmoid(x[:, 0:H + 1]) + gb.sigmoid(x[:, H:2 * H + 1]),  # overlapping
    lambda x, x2: gb.sigmoid(x[0:1, 0:H]) + gb.sigmoid(x[1:2, 0:H]) * gb.sigmoid(x[:, H:2 * H]),  # two axes
    lambda x, x2: gb.sigmoid(x[:, 0:2 * H:2]) + gb.sigmoid(x[:, 2 * H:4 * H:2]),  # strided
    lambda x, x2: gb.sigmoid(x[:, 0]) + gb.sigmoid(x[:, 1]),  # integer indices drop the axis
], ids=["gap", "different-ops", "different-arrays", "overlap", "different-axes", "step", "ints"])
def test_does_not_fire(build):
    x = gb.input("x", (2, 4 * H), "float64")
    x2 = gb.input("x2", (2, 4 * H), "float64")
    res = merge_slices([build(x, x2)])
    assert res.log == []


def test_fires_inside_a_scan_body_and_the_lstm_still_matches():
    B, E = 2, 3
    x = gb.input("x", (5, B, E), "float64")
    w_ih, w_hh = gb.param("w_ih", RNG.standard_normal((4 * H, E))), gb.param("w_hh", RNG.standard_normal((4 * H, H)))

    def step(state, x_t):
        h, c = gb.nn.lstm_cell(x_t, state, w_ih, w_hh)
        return (h, c), h

    zeros = gb.constant(np.zeros((B, H)))
    _, hs = gb.scan(step, (zeros, zeros), x)
    loss = gb.sum(hs * hs)
    prog = gb.compile([x], [loss, *gb.grad(loss, [w_ih, w_hh])])
    assert any(e.rule == "merge_slices" for e in prog.rewrite_log)
    body = next(n for n in prog.order if isinstance(n.op, Scan) and not n.op.reverse).op.body
    assert sum(isinstance(n.op, Sigmoid) for n in body.nodes()) == 2
    assert sum(isinstance(n.op, Tanh) for n in body.nodes()) == 2
    assert any(isinstance(n.op, GetItem) and n.inputs[0].op == Sigmoid() for n in body.nodes())
    _same_with_and_without(x, loss, [w_ih, w_hh], [RNG.standard_normal((5, B, E))])


def _scan_of(prog):
    return next(n for n in prog.order if isinstance(n.op, Scan) and not n.op.reverse)


def test_a_scan_stacks_the_base_of_its_view_ys_once():
    x = gb.input("x", (4, 2, 2 * H), "float64")

    def step(c, x_t):
        z = gb.tanh(x_t + c)
        return c * 0.5 + gb.sum(z), (z[:, :H], z[:, H:], x_t[:, :H])  # two views of z; a view of a feed

    _, (a, b, xv) = gb.scan(step, gb.constant(np.zeros((2, 2 * H))), x)
    outs = [a * 2.0, b, xv]
    res = stack_view_ys(list(outs))
    assert [e.rule for e in res.log] == ["stack_view_ys"]
    scan = next(n for n in gb.toposort(res.roots) if isinstance(n.op, Scan))
    ys = scan.op.body.outputs[scan.op.n_carry:]
    assert len(ys) == 2 and isinstance(ys[0].op, Tanh)  # z once; the feed's view stays a view
    feed = RNG.standard_normal((4, 2, 2 * H))
    for got, want in zip(gb.evaluate(res.roots, {x: feed}), gb.evaluate(outs, {x: feed})):
        np.testing.assert_array_equal(got, want)
    compiled = gb.compile([x], outs)(feed)
    for got, want in zip(compiled, gb.evaluate(outs, {x: feed})):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_ys_viewing_a_carry_or_a_feed_are_not_restacked():
    x = gb.input("x", (4, 2, 2 * H), "float64")

    def step(c, x_t):
        new = gb.tanh(x_t + c)
        return new, (new[:, :H], x_t[:, H:])

    _, ys = gb.scan(step, gb.constant(np.zeros((2, 2 * H))), x)
    assert stack_view_ys(list(ys)).log == []
