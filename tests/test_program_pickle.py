"""A compiled Program pickles through gb.save's format (issue 10, item 9)."""

from __future__ import annotations

import pickle

import numpy as np

import graphbp as gb


def test_a_program_pickles_and_runs_the_same_after_unpickling():
    x = gb.input("x", (None, 3))
    W = gb.param("W", np.arange(6, dtype=np.float32).reshape(3, 2) / 10)
    loss = gb.mean(gb.tanh(x @ W))
    prog = gb.compile([x], [loss], updates=[(W, W - 0.1 * gb.grad(loss, W))], check_numerics=True)
    clone = pickle.loads(pickle.dumps(prog))
    assert isinstance(clone, type(prog)) and clone.check_numerics and len(clone.updates) == 1
    X = np.ones((4, 3), np.float32)
    assert clone(X)[0].tobytes() == prog(X)[0].tobytes()
    (W2,) = [n for n in clone.order if isinstance(n.op, gb.ops.Param)]
    assert W2.value.tobytes() == W.value.tobytes() and W2.value is not W.value  # a copy, updated alike
