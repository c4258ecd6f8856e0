"""Compile work grows linearly with depth (W5 of docs/performance.md), counted, not timed.

A quadratic step (a per-node walk of the whole graph, an interval search over every buffer)
shows as a call count that quadruples when the depth doubles; a pass that walks the graph
again instead of reusing the order it was handed shows as one more ``toposort``.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

import graphbp as gb
from graphbp.graph import rewrite, traverse
from graphbp.passes import core
from graphbp.runtime import liveness


def _deep_mlp(layers: int):
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 16))
    t = gb.input("t", (None, 16))
    h = x
    params = []
    for i in range(layers):
        W = gb.param(f"W{i}", (rng.normal(size=(16, 16)) * 0.1).astype(np.float32))
        b = gb.param(f"b{i}", np.zeros(16, np.float32))
        params += [W, b]
        h = h @ W + b
        if i < layers - 1:
            h = gb.tanh(h)
    loss = gb.mean(gb.square(h - t))
    grads = gb.grad(loss, params)
    return [x, t], loss, {p: p - 0.1 * g for p, g in zip(params, grads)}


def _profile(fn) -> tuple[int, Counter]:
    """Python function calls ``fn()`` makes, in total and per code object."""
    per: Counter = Counter()

    def prof(frame, event, arg):
        if event == "call":
            per[frame.f_code] += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return sum(per.values()), per


def _compile_and_first_call(layers: int):
    inputs, loss, updates = _deep_mlp(layers)
    feed = np.zeros((4, 16), np.float32)
    compiled = []
    compile_calls, compile_per = _profile(lambda: compiled.append(gb.compile(inputs, [loss], updates=updates)))
    call_calls, call_per = _profile(lambda: compiled[0](feed, feed))
    return compile_calls, compile_per, call_calls, call_per


def test_compile_walks_the_whole_graph_a_fixed_number_of_times():
    """Passes hand their topological order on (a pass that changes nothing keeps it), so
    gb.compile walks the graph: once at the start, once after canonicalize's merges, once
    after fuse_matmul's rewrite; and the first call finds each value's storage once."""
    walks = traverse.toposort.__code__
    roots = liveness.storage_roots.__code__
    for layers in (8, 32):
        _, compile_per, _, call_per = _compile_and_first_call(layers)
        assert compile_per[walks] == 3, f"{layers} layers: gb.compile walked the graph {compile_per[walks]} times"
        assert call_per[roots] == 1


def test_passes_that_change_nothing_do_not_rebuild_and_rules_are_tried_about_once_per_node():
    """A deep MLP: collect_terms and accumulate find nothing to rewrite and return without a
    rewrite walk (fuse_matmul's is the one); stabilize tracks no op of the graph and runs no
    sweep; canonicalize's second sweep retries only the nodes whose rules asked for use
    counts, not every node the first sweep rebuilt."""
    for layers in (8, 32):
        inputs, loss, updates = _deep_mlp(layers)
        computed = sum(1 for n in traverse.toposort([loss, *updates.values()]) if n.inputs)
        _, compile_per, _, _ = _compile_and_first_call(layers)
        assert compile_per[rewrite.rewrite.__code__] == 1
        tries = compile_per[core._try_rules.__code__]
        assert tries < 1.05 * computed, f"{layers} layers: rules tried {tries} times on {computed} nodes"


def test_compile_and_first_call_work_is_linear_in_depth():
    small = _compile_and_first_call(32)
    big = _compile_and_first_call(64)
    for name, k in (("gb.compile", 0), ("the first call", 2)):
        ratio = big[k] / small[k]
        assert ratio < 2.1, f"{name}: work grew {ratio:.2f}x when the depth doubled"


def test_first_call_makes_few_python_calls_per_step():
    """The first call (shape check, memory plan, code generation) costs a few Python calls per
    planned step: nodes lowered alike share one lowering, each generated line is one format
    of its lowering's template, and the plan walks its steps a fixed number of times (about
    30 calls per step; 64 when every step built and rendered its own call records)."""
    inputs, loss, updates = _deep_mlp(64)
    program = gb.compile(inputs, [loss], updates=updates)
    feed = np.zeros((4, 16), np.float32)
    calls, _ = _profile(lambda: program(feed, feed))
    steps = program.memory_plan().n_values
    assert calls < 36 * steps, f"the first call made {calls / steps:.1f} Python calls per step"
