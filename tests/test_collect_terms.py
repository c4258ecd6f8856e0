"""collect_terms (passes/polynomial.py): like terms merged, sums factored, powers as squares,
and the rewrite only where it takes fewer full-size operations; the lowerings and buffer
rule that let primitive chains (sigmoid, softplus) run in one blocked loop."""

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops import elementwise as ew
from graphbp.passes import verify
from graphbp.passes.polynomial import collect_terms, cost, write
from graphbp.runtime.options import RuntimeOptions

K = float(np.sqrt(2 / np.pi))


def _count(roots, cls):
    from graphbp.graph.traverse import toposort
    return sum(isinstance(n.op, cls) for n in toposort(roots))


def _fired(res):
    return [e for e in res.log if e.rule == "collect_terms"]


def _grad_of(f, *shapes):
    """Inputs and the gradient ``f``'s VJP builds (nodes with gradient provenance)."""
    xs = [gb.input(f"x{i}", s, dtype="float64") for i, s in enumerate(shapes)]
    g = gb.input("g", shapes[0], dtype="float64")
    return xs, g, gb.vjp([f(*xs)], xs[:1], [g])[0]


def test_like_terms_merge_and_factor():
    (x,), g, gx = _grad_of(lambda v: v * v * v + v, (None,))  # g (v v + v v + v v) + g
    res = collect_terms([gx])
    verify(res.roots)
    assert _fired(res)
    assert _count(res.roots, ew.Square) == 1 and _count(res.roots, ew.Multiply) <= 3
    xv, gv = np.linspace(-2, 2, 11), np.linspace(1, 3, 11)
    got = gb.evaluate(res.roots, {x: xv, g: gv})[0]
    np.testing.assert_allclose(got, gv * (1 + 3 * xv * xv), rtol=1e-14)


def test_scalar_distributes_into_a_sum():
    x = gb.input("x", (None,), dtype="float64")
    g = gb.input("g", (None,), dtype="float64")
    (gx,) = gb.vjp([0.5 * x * x * x], [x], [g])  # 1.5 g x^2 as g (1.5 x^2): square, multiply twice
    before = _count([gx], ew.Multiply)
    res = collect_terms([gx])
    assert _fired(res)
    assert _count(res.roots, ew.Square) == 1 and _count(res.roots, ew.Multiply) < before
    xv, gv = np.linspace(-3, 3, 13), np.linspace(1, 2, 13)
    np.testing.assert_allclose(gb.evaluate(res.roots, {x: xv, g: gv})[0], 1.5 * gv * xv**2, rtol=1e-14)


def test_forward_chain_fires_but_an_update_on_gradients_does_not():
    x = gb.input("x", (None,), dtype="float64")
    w = gb.param("w", np.ones(3))
    fwd = 0.5 * (x + 0.25 * x * x * x)  # x (0.5 + 0.125 x^2): 4 operations where there were 5
    assert _fired(collect_terms([fwd]))
    (g,) = gb.grad(gb.sum(w * w), [w])
    update = w - 0.1 * (g + 0.01 * w) - 0.1 * (g + 0.01 * w)  # terms to merge, but an update
    res = collect_terms([update])
    assert not [e for e in _fired(res) if e.before[0] is update]


@pytest.mark.parametrize("build", [
    lambda x, w: x * w + x,  # g w + g = g (w + 1): two operations either way
    lambda x, w: x * (1 - w * w),  # g (1 - w^2): three either way
    lambda x, w: gb.tanh(x) * w,  # g w (1 - t^2): the tanh derivative, four either way
    lambda x, w: gb.exp(x) * w,
])
def test_does_not_fire_without_a_saving(build):
    (x, w), g, gx = _grad_of(build, (None,), (None,))
    res = collect_terms([gx])
    assert not _fired(res)


def test_shared_sum_is_an_atom_and_broadcasting_operands_stop_the_read():
    x = gb.input("x", (4, 3), dtype="float64")
    b = gb.input("b", (3,), dtype="float64")
    s = x + x * x  # read by both outputs and by the gradient: stays one node
    loss = gb.sum(s * 2.0 * s) + gb.sum(s * b * b)  # b broadcasts: not a term factor
    gx, gb_ = gb.grad(loss, [x, b])
    res = collect_terms([loss, gx, gb_])
    verify(res.roots)
    assert _fired(res)
    xv, bv = np.random.default_rng(0).standard_normal((4, 3)), np.arange(3.0)
    ref = gb.evaluate([loss, gx, gb_], {x: xv, b: bv})
    for got, want in zip(gb.evaluate(res.roots, {x: xv, b: bv}), ref):
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_cancelling_terms_drop_out():
    (x, w), g, gx = _grad_of(lambda x, w: x * w * 2.0 - w * x * 2.0 + x * x * w, (None,), (None,))
    res = collect_terms([gx])  # g w 2 - g w 2 + 2 g x w = 2 g x w
    assert _fired(res) and _count(res.roots, ew.Subtract) == 0
    xv, wv, gv = np.array([1.0, -3.0]), np.array([2.0, 0.5]), np.array([1.5, 2.0])
    np.testing.assert_allclose(gb.evaluate(res.roots, {x: xv, w: wv, g: gv})[0], 2 * gv * xv * wv, rtol=1e-15)


def test_write_picks_the_cheaper_factoring():
    # terms: u^3 (c), u (1) -> u (1 + c u^2): square, multiply, add, multiply
    poly = {(((0, 3),), ()): 0.5, (((0, 1),), ()): 1.0}
    e = write(poly)
    assert cost(e) == 4


def _gelu_prim(u):
    return 0.5 * u * (1 + gb.tanh(K * (u + 0.044715 * u * u * u)))


@pytest.mark.parametrize("act", ["gelu", "silu", "softplus"])
def test_primitive_chains_match_unoptimised_and_reference(act):
    x = gb.input("x", (None,), dtype="float64")
    a, c = gb.param("a", np.float64(1.3)), gb.param("c", np.float64(0.7))
    u = x * a + 0.1
    f = {"gelu": _gelu_prim, "silu": lambda v: v * gb.sigmoid(v), "softplus": lambda v: gb.softplus(v) - 0.3 * v}[act]
    y = gb.sum(f(u) * c)
    (gx,) = gb.grad(y, [x])
    xv = np.random.default_rng(1).standard_normal(5000) * 3
    ref = gb.evaluate([y, gx], {x: xv})
    opts = RuntimeOptions(block_min_bytes=4096, block_elements=1000, merged_block_elements=700)  # uneven tail too
    prog = gb.compile([x], [y, gx], runtime=opts)
    plain = gb.compile([x], [y, gx], optimize=False)
    for got, ok, want in zip(prog(xv), plain(xv), ref):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(ok, want, rtol=1e-11, atol=1e-12)
    assert "for i in range(" in prog.source()
    if act == "gelu":
        assert any(e.rule == "collect_terms" for e in prog.rewrite_log)


def test_gelu_from_primitives_merges_forward_and_backward_loops():
    x = gb.input("x", (None,))
    y = gb.sum(_gelu_prim(x * 1.3 + 0.1) * 0.7)
    (gx,) = gb.grad(y, [x])
    prog = gb.compile([x], [y, gx], runtime=RuntimeOptions(block_min_bytes=4096, merged_block_elements=3000))
    xv = np.random.default_rng(2).standard_normal(20000).astype(np.float32)
    got = prog(xv)
    ref = gb.evaluate([y, gx], {x: xv})
    np.testing.assert_allclose(got[1], ref[1], rtol=2e-5, atol=1e-6)
    step = prog.source().split("def step")[1]
    assert "run as one loop" in step


def test_sigmoid_lowering_matches_kernel_in_the_tails():
    x = gb.input("x", (None,), dtype="float32")
    prog = gb.compile([x], [gb.sigmoid(x), gb.softplus(x)])
    xv = np.array([-200, -90, -30, -5, -1e-3, 0, 1e-3, 5, 30, 90, 200], np.float32)
    with np.errstate(all="raise"):  # exp's argument is clipped: no overflow, no underflow
        s, sp = prog(xv)
    ref_s, ref_sp = gb.evaluate([gb.sigmoid(x), gb.softplus(x)], {x: xv})
    np.testing.assert_allclose(s, ref_s, rtol=1e-6, atol=1e-37)  # the clip: ~3e-38, not 0
    np.testing.assert_allclose(sp, ref_sp, rtol=1e-6, atol=2e-38)
    assert "exp(" in prog.source() and "log1p(" in prog.source()


def test_one_element_values_are_not_pooled():
    """A scalar takes only a buffer of its own or its dying operand's (in place), never a
    pooled one, so the merged loop may hoist the small steps around it."""
    from graphbp.runtime.allocate import SMALL_BYTES

    x = gb.input("x", (None,))
    a = gb.param("a", np.float32(2.0))
    s1 = gb.sum(x) * a
    out = s1 + gb.sum(x * x) * a + gb.sum(x * s1)
    prog = gb.compile([x], [out, x * a])
    xv = np.arange(4, dtype=np.float32)
    np.testing.assert_allclose(prog(xv)[0], gb.evaluate([out], {x: xv})[0], rtol=1e-6)
    plan = prog._executor.get(()).planned
    for n, b in plan.buffer_of.items():
        if plan.types[n].nbytes() <= SMALL_BYTES:
            others = [m for m, c in plan.buffer_of.items() if c == b and m is not n]
            assert all(m in n.inputs or n in m.inputs for m in others)
            assert plan.buffer_sizes[b] <= SMALL_BYTES


# ------------------------------------------------ products kept elsewhere, numbers out, bodies
def _nodes(roots):
    from graphbp.graph.traverse import toposort
    return toposort(roots)


def _silu_program(dtype="float64"):
    x = gb.input("x", (None,), dtype=dtype)
    a, c = gb.param("a", np.asarray(1.3, dtype)), gb.param("c", np.asarray(0.7, dtype))
    u = x * a + 0.1
    y = gb.sum(u * gb.sigmoid(u) * c)
    (gx,) = gb.grad(y, [x])
    return x, y, gx


def test_derivative_reads_the_forward_product():
    """SiLU's derivative ``s + u s (1 - s)`` reads the forward's ``u s`` (one multiply fewer)."""
    x, y, gx = _silu_program()
    res = collect_terms([y, gx])
    verify(res.roots)
    fwd = [n for n in _nodes(res.roots) if isinstance(n.op, ew.Multiply) and not n.provenance
           and {type(i.op).__name__ for i in n.inputs} == {"Add", "Sigmoid"}]
    assert len(fwd) == 1
    readers = [n for n in _nodes(res.roots) if fwd[0] in n.inputs and n.provenance]
    assert readers, "the gradient does not read the forward product"
    before = sum(isinstance(n.op, (ew.Multiply, ew.Add, ew.Subtract)) for n in _nodes([y, gx]))
    after = sum(isinstance(n.op, (ew.Multiply, ew.Add, ew.Subtract)) for n in _nodes(res.roots))
    assert after < before
    xv = np.random.default_rng(3).standard_normal(3001) * 4
    ref = gb.evaluate([y, gx], {x: xv})
    for got, want in zip(gb.evaluate(res.roots, {x: xv}), ref):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    blocked = RuntimeOptions(block_min_bytes=4096, block_elements=1000, merged_block_elements=700)
    for got, plain, want in zip(gb.compile([x], [y, gx], runtime=blocked)(xv),
                                gb.compile([x], [y, gx], optimize=False)(xv), ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(plain, want, rtol=1e-12, atol=1e-14)


def test_gelu_forward_and_derivative_share_one_square():
    x = gb.input("x", (None,), dtype="float64")
    u = x * 1.3 + 0.1
    y = gb.sum(_gelu_prim(u) * 0.7)
    (gx,) = gb.grad(y, [x])
    res = collect_terms([y, gx])
    verify(res.roots)
    squares = [n for n in _nodes(res.roots) if isinstance(n.op, ew.Square) and not isinstance(n.inputs[0].op, gb.ops.Tanh)]
    assert len(squares) == 1
    users = [n for n in _nodes(res.roots) if squares[0] in n.inputs]
    assert any(n.provenance for n in users) and any(not n.provenance for n in users)
    xv = np.random.default_rng(4).standard_normal(2000) * 3
    for got, want in zip(gb.evaluate(res.roots, {x: xv}), gb.evaluate([y, gx], {x: xv})):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_a_number_leaves_the_sum_with_the_scalar_operands():
    # s (0.5 a + 0.25 b c) takes five; (0.25 s) (2 a + b c) or (0.5 s) (a + 0.5 b c) four
    poly = {(((0, 1),), (5,)): 0.5, (((1, 1), (2, 1)), (5,)): 0.25}
    e = write(poly)
    assert cost(e) == 4
    assert e[0] == "*" and e[1] in (("s", 0.25, (5,)), ("s", 0.5, (5,)))


def test_a_kept_product_is_not_rewritten_into_itself():
    """``f w`` with ``f`` kept for another reader: reading ``f`` back saves nothing."""
    x, v, w = (gb.input(k, (None,), dtype="float64") for k in "xvw")
    f = x * v
    fw = f * w
    assert not _fired(collect_terms([gb.sum(f), fw, fw * x]))
    res = collect_terms([gb.sum(f), fw, f * w * x])  # a second f w: read from the kept one
    assert len(_fired(res)) == 1
    assert _count(res.roots, ew.Multiply) == 3


def test_forward_values_never_read_gradient_products():
    """Roots with the gradient first: the gradient's rewrite is built before the forward's,
    yet no forward node reads a node with gradient provenance."""
    x = gb.input("x", (None,), dtype="float64")
    u = x * 1.3 + 0.1
    y = gb.sum(_gelu_prim(u) * 0.7)
    (gx,) = gb.grad(y, [x])
    res = collect_terms([gx, y])
    assert _fired(res)
    for n in _nodes(res.roots):
        if not n.provenance:
            assert not any(i.provenance for i in n.inputs), n
    xv = np.linspace(-3, 3, 101)
    for got, want in zip(gb.evaluate(res.roots, {x: xv}), gb.evaluate([gx, y], {x: xv})):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_collect_terms_steps_into_scan_bodies():
    x = gb.input("x", (None, 3), dtype="float64")
    h0 = gb.input("h0", (3,), dtype="float64")

    def step(h, x_t):  # like terms inside the body: 0.75 v^3, and its derivative's 3 terms
        v = h * 0.5 + x_t
        return v * v * v * 0.5 + v * v * v * 0.25 + v, v

    hT, ys = gb.scan(step, h0, x)
    loss = gb.sum(hT) + gb.sum(ys * ys)
    g = gb.grad(loss, [h0, x])
    res = collect_terms([loss, *g])
    verify(res.roots)
    assert _fired(res)
    feeds = {x: np.random.default_rng(5).standard_normal((4, 3)) * 0.5, h0: np.linspace(-0.5, 0.5, 3)}
    for got, want in zip(gb.evaluate(res.roots, feeds), gb.evaluate([loss, *g], feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    prog, plain = gb.compile([x, h0], [loss, *g]), gb.compile([x, h0], [loss, *g], optimize=False)
    assert any(e.rule == "collect_terms" for e in prog.rewrite_log)
    for got, want in zip(prog(feeds[x], feeds[h0]), plain(feeds[x], feeds[h0])):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_a_body_with_nothing_to_collect_is_kept():
    x = gb.input("x", (None, 3), dtype="float64")
    h0 = gb.input("h0", (3,), dtype="float64")
    hT, _ = gb.scan(lambda h, x_t: (gb.tanh(h + x_t), None), h0, x)
    res = collect_terms([hT])
    assert not _fired(res) and res.roots[0] is hT
