"""The forward/backward partition as data, and the reference interpreter."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

import graphbp as gb
from graphbp.errors import FeedError
from graphbp.ops.base import Op, apply
from graphbp.runtime.schedule import Partition, partition


@dataclasses.dataclass(frozen=True)
class Tick(Op):
    """Identity with an effect (stands in for a collective or a random draw)."""

    name: ClassVar[str] = "tick"
    effectful: ClassVar[bool] = True
    tag: str = ""

    def infer(self, t):
        return t

    def compute(self, x):
        return np.array(x)

    def vjp(self, node, g):
        return (g,)


def _mlp():
    x = gb.input("x", (None, 3), dtype="float64")
    w = gb.param("w", np.linspace(-1, 1, 6).reshape(3, 2))
    h = gb.tanh(x @ w)
    loss = gb.mean(gb.square(h))
    (gw,) = gb.grad(loss, [w])
    return x, w, h, loss, gw


def test_program_keeps_its_partition_and_the_schedules_are_its_views():
    x, w, h, loss, gw = _mlp()
    prog = gb.compile([x], [loss, gw], optimize=False)
    part = prog.partition
    assert isinstance(part, Partition)
    assert list(part.forward) == prog.forward.nodes and list(part.backward) == prog.backward.nodes
    assert list(part.saved) == prog.backward.saved
    assert h in part.saved and all(n in part.forward for n in part.saved)
    assert not set(part.forward) & set(part.backward)


def test_shape_only_reads_are_not_saved():
    """A mean's gradient reads its operand's element count only: the operand's shape is
    kept (``shape_only``), not the tensor."""
    x = gb.input("x", (None, 4), dtype="float64")
    big = gb.exp(x) * 3.0
    loss = gb.mean(big)
    (gx,) = gb.grad(loss, [x])
    part = partition(gb.toposort([loss, gx]))
    assert big not in part.saved
    assert big in part.shape_only
    assert list(part.saved) == [n for n in part.saved if n is not big]


def test_from_lists_rejects_a_forward_node_reading_the_backward():
    x, w, h, loss, gw = _mlp()
    part = partition(gb.toposort([loss, gw]))
    moved = list(part.forward) + [gw]  # gw reads backward values
    with pytest.raises(ValueError, match="reads a value the backward schedule computes"):
        Partition.from_lists(moved, [n for n in part.backward if n is not gw])


def test_from_lists_recomputes_the_saved_set_when_nodes_move_across():
    """Moving the forward ``tanh`` (and what follows it) into the backward means the backward
    reads the matmul instead: the saved set follows the node lists."""
    x, w, h, loss, gw = _mlp()
    part = partition(gb.toposort([loss, gw]))
    xw = h.inputs[0]
    later = gb.toposort([loss])
    moving = [n for n in part.forward if n is h or (n in later and later.index(n) > later.index(h))]
    fwd = [n for n in part.forward if n not in moving]
    moved = Partition.from_lists(fwd, [*moving, *part.backward])
    assert h not in moved.saved and xw in moved.saved


def test_effects_keep_their_order_across_the_split():
    x, w, h, loss, gw = _mlp()
    first = apply(Tick("first"), gw)  # backward: reads the gradient
    second = apply(Tick("second"), x)  # reads only a feed, but comes after ``first``
    order = gb.toposort([first, second])
    assert order.index(first) < order.index(second)
    part = partition(order)
    assert second in part.backward
    run = list(part.forward) + list(part.backward)
    assert run.index(first) < run.index(second)
    # without an effect before it, a feed-only node stays forward
    t = gb.tanh(x)
    assert t in partition(gb.toposort([gw, t])).forward


def test_effectful_program_runs_effects_in_build_order():
    calls = []

    @dataclasses.dataclass(frozen=True)
    class Record(Tick):
        def compute(self, x):
            calls.append(self.tag)
            return np.array(x)

    x, w, h, loss, gw = _mlp()
    a = apply(Record("a"), gw)
    b = apply(Record("b"), x)
    prog = gb.compile([x], [a, b], optimize=True)
    prog(np.ones((2, 3)))
    assert calls == ["a", "b"]


def test_evaluate_runs_one_kernel_per_node_and_checks_feeds():
    x, w, h, loss, gw = _mlp()
    feed = np.arange(6.0).reshape(2, 3) / 6
    got_loss, got_gw = gb.evaluate([loss, gw], {x: feed})
    hh = np.tanh(feed @ w.op.value)
    np.testing.assert_allclose(got_loss, np.mean(hh**2))
    np.testing.assert_allclose(got_gw, feed.T @ (2 * hh * (1 - hh**2) / hh.size))
    np.testing.assert_array_equal(gb.evaluate(loss, {"x": feed}), got_loss)
    with pytest.raises(FeedError, match="no feed for input 'x'"):
        gb.evaluate(loss, {})
    with pytest.raises(FeedError, match="expected shape"):
        gb.evaluate(loss, {"x": np.ones((2, 5))})
    out = gb.evaluate(w, {})
    assert out is not w.op.value and np.array_equal(out, w.op.value)
