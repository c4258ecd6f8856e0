"""The W4 speed-ups: gelu from primitives with one tanh, scalar-factor gathering, blocked kernels."""

import math

import numpy as np

import graphbp as gb
from graphbp.graph.traverse import toposort
from graphbp.ops import elementwise as ew
from graphbp.passes import canonicalize, verify
from graphbp.passes.core import run_rules


def _gelu_grad_ref(x):
    k = math.sqrt(2 / math.pi)
    th = np.tanh(k * (x + 0.044715 * x**3))
    return 0.5 * (1 + th) + 0.5 * x * (1 - th**2) * k * (1 + 3 * 0.044715 * x**2)


def test_gelu_gradient_from_primitives_matches_the_formula_with_one_tanh():
    """A gradient-only program: gelu's derivative comes from the primitives' VJPs and
    still evaluates ``tanh`` once (tanh's rule reads its output)."""
    x = gb.input("x", (None,), dtype="float64")
    (gx,) = gb.grad(gb.sum(gb.gelu(x)), [x])
    prog = gb.compile([x], [gx])
    assert sum(isinstance(n.op, ew.Tanh) for n in prog.order) == 1
    xv = np.linspace(-6, 6, 97)
    (got,) = prog(xv)
    np.testing.assert_allclose(got, _gelu_grad_ref(xv), rtol=1e-12, atol=1e-14)


def test_scalar_factors_gathered_into_one_multiply():
    x = gb.input("x", (None,), dtype="float64")
    a = gb.param("a", np.float64(1.5))
    c = gb.param("c", np.float64(-0.5))
    y = (gb.exp(x) * c) * a
    res = run_rules([y], canonicalize.RULES, "test")
    verify(res.roots)
    assert "scalar_factors" in [e.rule for e in res.log]
    root = res.roots[0]
    assert sum(1 for i in root.inputs if i.ndim == 0) == 1  # exp(x) * (c * a)
    xv = np.linspace(-2, 2, 9)
    np.testing.assert_allclose(gb.compile([x], [y])(xv)[0], np.exp(xv) * -0.5 * 1.5, rtol=1e-15)


def test_scalar_factors_keep_a_shared_product():
    x = gb.input("x", (3,), dtype="float64")
    a = gb.param("a", np.float64(2.0))
    p = x * a
    res = run_rules([p * a, p], canonicalize.RULES, "test")
    assert "scalar_factors" not in [e.rule for e in res.log]


def _w4_graph():
    """W4 (benchmarks/workloads.py): ``sum(gelu_tanh(x * a + b) * c)`` and its gradient."""
    x = gb.input("x", (None,))
    a, b, c = gb.param("a", np.float32(1.3)), gb.param("b", np.float32(0.1)), gb.param("c", np.float32(0.7))
    y = gb.sum(gb.gelu(x * a + b) * c)
    (gx,) = gb.grad(y, [x])
    return x, y, gx


def test_w4_gradient_blocked_matches_unoptimised():
    x, y, gx = _w4_graph()
    xv = np.random.default_rng(0).standard_normal(4321).astype(np.float32) * 3
    fast = gb.compile([x], [y, gx], runtime=gb.RuntimeOptions(block_min_bytes=1024, block_elements=1000))
    assert "_b_" in fast.source((4321,))  # the chain ran in blocks, slices bound once per block
    want = gb.compile([x], [y, gx], optimize=False)(xv)
    got = fast(xv)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    x64 = xv.astype(np.float64) * 1.3 + 0.1
    # float32: 1 + tanh cancels for u << 0, so the tail is good to ~1e-6 absolute (as unoptimised)
    np.testing.assert_allclose(got[1], 0.7 * 1.3 * _gelu_grad_ref(x64), rtol=1e-4, atol=5e-6)


def test_gelu_value_and_gradient_share_one_forward_tanh_after_optimisation():
    """What the removed ``share_gelu`` pass did for the fused op, the general passes do for
    the primitives: one ``tanh``, computed in the forward, read by value and derivative."""
    from graphbp.passes import optimize

    x = gb.input("x", (None,), dtype="float64")
    a = gb.param("a", np.float64(0.8))
    y = gb.sum(gb.gelu(x * a) * 2.0)
    (gx,) = gb.grad(y, [x])
    res = optimize([y, gx])
    nodes = toposort(res.roots)
    (t,) = [n for n in nodes if isinstance(n.op, ew.Tanh)]
    assert not t.provenance  # computed once, in the forward
    readers = [n for n in nodes if t in n.inputs]
    assert any(not n.provenance for n in readers) and any(n.provenance for n in readers)
    prog = gb.compile([x], [y, gx])
    assert sum(isinstance(n.op, ew.Tanh) for n in prog.order) == 1
    xv = np.linspace(-7, 7, 57)
    got = prog(xv)
    calls = [line.split("#")[0] for line in prog.source((57,)).splitlines()]
    assert sum(c.count("tanh(") for c in calls) == 1  # one NumPy tanh call per step
    want = gb.evaluate([y, gx], {x: xv})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-13)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12, atol=1e-14)


def _force_blocking(elements=8):
    return gb.RuntimeOptions(block_min_bytes=1, block_elements=elements, merged_block_elements=elements)


def test_forward_and_backward_regions_run_as_one_loop():
    """W4's shape: the step runs the blocked forward and backward chains in one loop, so the
    saved activations never reach memory; the separate forward()/backward() stay correct."""
    x, y, gx = _w4_graph()
    xv = np.random.default_rng(1).standard_normal(4321).astype(np.float32) * 3
    fast = gb.compile([x], [y, gx], runtime=_force_blocking(1000))
    src = fast.source((4321,))
    step_src = src[src.index("def step("):]
    assert step_src.count("for i in range(") == 1 and "= forward(" not in step_src
    want = gb.compile([x], [y, gx], optimize=False)(xv)
    for _ in range(2):  # buffers reused across calls
        got = fast(xv)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    # the unmerged functions of the same module compute the same thing
    ns = fast._executor.get(((4321,),)).generated.namespace
    split = ns["backward"](xv, *ns["forward"](xv))
    np.testing.assert_allclose(split[1], want[1], rtol=1e-5, atol=1e-6)


def test_merged_loop_keeps_values_a_later_forward_step_reads():
    """A forward reduction over an axis after the chain is moved past the loop; the chain
    value it reads is written to its buffer instead of living in scratch."""
    x = gb.input("x", (None, 4), dtype="float64")
    w = gb.param("w", np.linspace(0.5, 1.5, 4))
    u = gb.tanh(x * w) * 2.0
    y = gb.sum(gb.square(u))
    m = gb.max(u, axis=1)
    (gx, gw) = gb.grad(y, [x, w])
    xv = np.random.default_rng(2).standard_normal((37, 4))
    want = gb.compile([x], [y, m, gx, gw], optimize=False)(xv)
    got = gb.compile([x], [y, m, gx, gw], runtime=_force_blocking())(xv)
    for r, g in zip(want, got):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)
