"""A 100,000-op chain builds, differentiates, compiles, runs and saves without recursion."""

from __future__ import annotations

import sys

import numpy as np

import graphbp as gb

DEPTH = 100_000


def test_hundred_thousand_op_chain(tmp_path):
    limit = sys.getrecursionlimit()
    x = gb.input("x", (2,), dtype="float64")
    c = gb.constant(np.array([1.0, -1.0]))
    h = x
    for _ in range(DEPTH):
        h = h + c  # same-shape add: its rule is one node, keeps the test fast
    loss = gb.sum(h)
    g = gb.grad(loss, x)
    # optimize=False: the rewrite passes are measured separately (see docs/reliability.md)
    prog = gb.compile([x], [loss, g], optimize=False)
    out, gx = prog(np.zeros(2))
    assert out == 0.0 and gx.tolist() == [1.0, 1.0]
    path = tmp_path / "deep.gbp"
    gb.save(path, [loss])
    loaded = gb.load(path)
    assert loaded.compile(optimize=False)(np.zeros(2))[0] == 0.0
    assert sys.getrecursionlimit() == limit  # nothing raised the limit to get through
