"""``gb.scan`` against the same step unrolled with a Python loop.

Values and first/second-order gradients of the scan op vs finite differences live in the op
database (tests/opdb.py, entry ``scan``). Here: scan vs unrolled graphs (random bodies,
nested carries, reverse, lengths 0 and 1, ``xs=None``, an integer counter), a Hessian-vector
product through an RNN vs finite differences, bad input at the user's line, passes inside
the body, the reverse scan's provenance, rendering, save/load, and torch.nn.RNN.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphbp as gb
from graphbp.ops.loop import Scan

RNG = np.random.default_rng(0)


def _unroll(step, init, xs=None, length=None, reverse=False):
    """The reference: the same step function called once per time step on graph nodes."""
    steps = length if xs is None else (xs[0] if isinstance(xs, tuple) else xs).shape[0]
    carry, ys = init, [None] * steps
    for t in (reversed(range(steps)) if reverse else range(steps)):
        x_t = None if xs is None else (tuple(x[t] for x in xs) if isinstance(xs, tuple) else xs[t])
        carry, ys[t] = step(carry, x_t)
    return carry, ys


def _scans(node):
    return [n for n in gb.toposort([node]) if isinstance(n.op, Scan)]


def _check_same(inputs, scanned, unrolled, feeds, wrt, second=True):
    """Equal values, gradients and (when ``second``) a Hessian-vector product."""
    def all_outs(loss):
        outs = [loss, *gb.grad(loss, wrt)]
        if second:
            outs += gb.grad(gb.sum(gb.stack([gb.sum(g * g) for g in outs[1:]])), wrt)
        return outs

    a = gb.compile(inputs, all_outs(scanned), optimize=False)(*feeds)
    b = gb.compile(inputs, all_outs(unrolled), optimize=False)(*feeds)
    c = gb.compile(inputs, all_outs(scanned))(*feeds)  # optimised: passes ran in the bodies
    for u, v, w in zip(a, b, c):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(w, v, rtol=1e-10, atol=1e-12)


_UNARY = [gb.tanh, gb.sin, gb.sigmoid, lambda z: z * z, lambda z: -z]


@settings(max_examples=12, deadline=None, derandomize=True)
@given(f=st.sampled_from(range(len(_UNARY))), g=st.sampled_from(range(len(_UNARY))),
       steps=st.integers(1, 4), reverse=st.booleans(), mix=st.floats(-1.5, 1.5))
def test_random_bodies_match_the_unrolled_loop(f, g, steps, reverse, mix):
    x = gb.input("x", (steps, 3), "float64")
    h0 = gb.input("h0", (3,), "float64")
    W = gb.param("W", 0.4 * RNG.normal(size=(3, 3)))

    def step(h, x_t):
        h = _UNARY[f](W @ h + x_t * mix)
        return h, _UNARY[g](h) * x_t

    def loss(pair):
        hT, ys = pair
        ys = gb.stack(ys) if isinstance(ys, list) else ys
        return gb.sum(hT * hT) + gb.sum(ys)

    feeds = (RNG.normal(size=(steps, 3)), RNG.normal(size=3))
    _check_same([x, h0], loss(gb.scan(step, h0, x, reverse=reverse)),
                loss(_unroll(step, h0, x, reverse=reverse)), feeds, [x, h0, W])


def test_nested_carries_and_an_integer_counter():
    xa = gb.input("xa", (5, 2), "float64")
    xb = gb.input("xb", (5,), "float64")
    init = {"n": np.int64(0), "h": (gb.input("h", (2,), "float64"), [gb.constant(1.0)])}

    def step(c, x):
        a, b = x
        h, (s,) = c["h"]
        h = gb.tanh(h * b + a) * s
        return {"n": c["n"] + 1, "h": (h, [s * 0.9 + gb.sum(h)])}, {"y": h * gb.cast(c["n"], "float64")}

    (carry, ys), (carry_u, ys_u) = gb.scan(step, init, (xa, xb)), _unroll(step, init, (xa, xb))
    assert isinstance(carry, dict) and isinstance(carry["h"][1], list) and set(ys) == {"y"}
    assert carry["n"].dtype == np.int64
    feeds = (RNG.normal(size=(5, 2)), RNG.normal(size=5), RNG.normal(size=2))
    n, = gb.compile([xa, xb, init["h"][0]], [carry["n"]])(*feeds)
    assert int(n) == 5

    def loss(c, y):
        y = y["y"] if isinstance(y, dict) else gb.stack([u["y"] for u in y])
        return gb.sum(c["h"][0]) * c["h"][1][0] + gb.sum(y * y)
    _check_same([xa, xb, init["h"][0]], loss(carry, ys), loss(carry_u, ys_u), feeds, [xa, xb, init["h"][0]])


def test_xs_none_with_length_and_length_one():
    a = gb.input("a", (3,), "float64")
    W = gb.param("W", 0.5 * RNG.normal(size=(3, 3)))

    def step(h, _):
        return gb.tanh(W @ h), None

    for length in (1, 4):
        hT, ys = gb.scan(step, a, length=length)
        assert ys is None
        hU, _ = _unroll(step, a, length=length)
        _check_same([a], gb.sum(hT * hT), gb.sum(hU * hU), (RNG.normal(size=3),), [a, W])


def test_carries_that_swap_places_each_step():
    """Outputs that are the body's own inputs: each carry buffer is read before any is written."""
    x = gb.input("x", (2,), "float64")
    (a, b), ys = gb.scan(lambda c, _: ((c[1], c[0]), c[0]), (x, x * 2.0), length=3)
    (f, g), fib = gb.scan(lambda c, _: ((c[1], c[0] + c[1]), c[0]), (x, x), length=5)
    for opt in (False, True):
        out = gb.compile([x], [a, b, ys, f, g, fib], optimize=opt)(np.ones(2))
        assert [o[..., 0].tolist() for o in out] == [2.0, 1.0, [1, 2, 1], 8.0, 13.0, [1, 1, 2, 3, 5]]


def test_length_zero_returns_init_and_empty_ys():
    x = gb.input("x", (None, 3), "float64")
    h0 = gb.input("h0", (3,), "float64")
    hT, ys = gb.scan(lambda h, x_t: (h + x_t, h * 2.0), h0, x)
    g = gb.grad(gb.sum(hT) + gb.sum(ys), h0)
    f = gb.compile([x, h0], [hT, ys, g])
    h = RNG.normal(size=3)
    hv, yv, gv = f(np.zeros((0, 3)), h)
    assert np.array_equal(hv, h) and yv.shape == (0, 3) and np.array_equal(gv, np.ones(3))
    hv, yv, gv = f(np.ones((2, 3)), h)  # the same program: the length comes from the feeds
    np.testing.assert_allclose(hv, h + 2) and np.testing.assert_allclose(gv, np.ones(3) + 4)
    (n,), _ = gb.scan(lambda c, _: ((c[0] + 1,), None), (np.int64(7),), length=0)
    assert int(gb.compile([], [n])()[0]) == 7


def test_hessian_vector_product_through_an_rnn_matches_finite_differences():
    x = gb.input("x", (6, 2, 3), "float64")
    Wx, Wh = gb.param("Wx", 0.5 * RNG.normal(size=(3, 4))), gb.param("Wh", 0.5 * RNG.normal(size=(4, 4)))
    hT, hs = gb.scan(lambda h, x_t: (gb.tanh(x_t @ Wx + h @ Wh),) * 2, gb.constant(np.zeros((2, 4))), x)
    loss = gb.sum(hs * hs) + gb.sum(hT)
    gWh = gb.grad(loss, Wh)
    v = RNG.normal(size=(4, 4))
    hvp = gb.grad(gb.sum(gWh * v), Wh)
    xv = RNG.normal(size=(6, 2, 3))
    h = gb.compile([x], [hvp])(xv)[0]
    grad_at = gb.compile([x], [gWh])
    W0, eps = Wh.value.copy(), 1e-6
    Wh.value = W0 + eps * v
    up = grad_at(xv)[0].copy()
    Wh.value = W0 - eps * v
    down = grad_at(xv)[0].copy()
    Wh.value = W0
    np.testing.assert_allclose(h, (up - down) / (2 * eps), rtol=1e-6, atol=1e-7)


def test_the_reverse_scan_points_at_the_forward_scan():
    x = gb.input("x", (None, 3), "float64")
    W = gb.param("W", RNG.normal(size=(3, 3)))
    hT, _ = gb.scan(lambda h, x_t: (gb.tanh(W @ h + x_t), None), gb.constant(np.zeros(3)), x)
    gW = gb.grad(gb.sum(hT), W)
    fwd, back = _scans(gW)
    assert not fwd.provenance and back.op.reverse and not fwd.op.reverse
    assert back.provenance and back.provenance[0].forward is fwd
    assert W in back.inputs  # the weights are a loop invariant of the reverse scan too
    assert back.inputs[-len(back.op.body.inputs):]  # and its body is closed
    assert sum(isinstance(n.op, Scan) for n in gb.toposort([gb.grad(gb.sum(gW * gW), W)])) >= 3


@pytest.mark.parametrize("step, kind, words", [
    (lambda h, x: (h[:2], x), gb.ShapeError, ["float64(2,)", "float64(3,)", "carry 0"]),
    (lambda h, x: (gb.cast(h, "float32"), x), gb.DTypeError, ["float32(3,)", "float64(3,)", "carry 0"]),
    (lambda h, x: ((h, h), x), gb.ShapeError, ["(a node, a node)", "a node"]),
])
def test_a_carry_of_another_shape_or_dtype_names_both_at_the_users_line(step, kind, words):
    x = gb.input("x", (4, 3), "float64")
    with pytest.raises(kind) as err:
        gb.scan(step, gb.constant(np.zeros(3)), x)
    msg = str(err.value)
    for w in words:
        assert w in msg
    assert "test_scan.py" in msg


def test_xs_of_different_lengths_and_bad_lengths():
    a, b = gb.input("a", (4, 3), "float64"), gb.input("b", (5, 3), "float64")
    with pytest.raises(gb.ShapeError, match="different lengths") as err:
        gb.scan(lambda c, x: (c, x[0] + x[1]), gb.constant(np.zeros(3)), (a, b))
    assert "test_scan.py" in str(err.value)
    with pytest.raises(gb.GraphError, match="length"):
        gb.scan(lambda c, x: (c, c), gb.constant(np.zeros(3)))
    with pytest.raises(gb.ShapeError, match="leading"):
        gb.scan(lambda c, x: (c, x), gb.constant(np.zeros(3)), gb.constant(0.0))
    u = gb.input("u", (None, 3), "float64")  # lengths known only at run time: the feeds are checked
    hT, _ = gb.scan(lambda c, x: (c + x[0] * x[1], None), gb.constant(np.zeros(3)), (u, gb.input("v", (None, 3), "float64")))
    f = gb.compile([u] + [n for n in gb.toposort([hT]) if n.op.leaf_kind == "input" and n is not u], [hT])
    with pytest.raises((gb.FeedError, gb.ShapeError)):
        f(np.ones((2, 3)), np.ones((3, 3)))


def test_rules_run_inside_the_body_and_invariant_work_is_hoisted():
    x = gb.input("x", (None, 3), "float64")
    W = gb.param("W", RNG.normal(size=(3, 3)))
    hT, ys = gb.scan(lambda h, x_t: (gb.tanh(W.T @ h + x_t * 1.0), gb.exp(h) + gb.exp(h)), gb.constant(np.zeros(3)), x)
    (node,) = _scans(hT)
    assert any(i.op.name == "transpose" and i.inputs == (W,) for i in node.inputs)  # W.T: once, outside
    f = gb.compile([x], [hT, ys])
    assert {"mul_one", "cse"} <= {e.rule for e in f.rewrite_log}
    (opt,) = [n for n in f.order if isinstance(n.op, Scan)]
    assert [n.op.name for n in opt.op.body.nodes()].count("exp") == 1
    assert len(opt.type) == 2  # the stacked carries nobody differentiates are pruned
    gW = gb.grad(gb.sum(ys), W)
    fg = gb.compile([x], [hT, gW])
    fwd = [n for n in fg.order if isinstance(n.op, Scan) and not n.op.reverse]
    assert len(fwd) == 1 and 2 in fwd[0].op.emitted()  # one forward loop, its residuals kept
    np.testing.assert_allclose(fg(RNG.normal(size=(5, 3)))[1].shape, (3, 3))
    xv = RNG.normal(size=(5, 3))
    for u, v in zip(f(xv), gb.compile([x], [hT, ys], optimize=False)(xv)):
        np.testing.assert_allclose(u, v, rtol=1e-12)


def test_save_load_round_trip_and_rendering(tmp_path):
    x = gb.input("x", (None, 3), "float64")
    W = gb.param("W", 0.5 * RNG.normal(size=(3, 3)))
    hT, ys = gb.scan(lambda h, x_t: (gb.tanh(W @ h + x_t), h * x_t), gb.constant(np.zeros(3)), x, reverse=True)
    loss = gb.sum(hT) + gb.sum(ys * ys)
    gW = gb.grad(loss, W)
    prog = gb.compile([x], [loss, gW], updates={W: W - 0.1 * gW})
    gb.save(tmp_path / "scan.gbp", prog)
    loaded = gb.load(tmp_path / "scan.gbp")
    xv = RNG.normal(size=(4, 3))
    for _ in range(2):
        for u, v in zip(prog(xv), loaded(xv)):
            assert u.tobytes() == v.tobytes()
    gb.save(tmp_path / "g.gbp", [hT, ys])
    (back,) = _scans(gb.load(tmp_path / "g.gbp").outputs[0])
    assert back.op == _scans(hT)[0].op  # the body compares equal by structure after the trip
    for view in ("forward", "joint"):
        src = gb.to_dot(prog, view).source
        assert src == gb.to_dot(prog, view).source
        assert "scan · body" in src and "subgraph cluster_" in src
    assert "scan · body:" in prog.explain()


def test_matches_torch_rnn_with_copied_weights():
    torch = pytest.importorskip("torch")
    T, B, n_in, n_h = 7, 3, 4, 5
    rnn = torch.nn.RNN(n_in, n_h, nonlinearity="tanh", dtype=torch.float64)
    xv = RNG.normal(size=(T, B, n_in))
    h0v = RNG.normal(size=(B, n_h))
    xt = torch.tensor(xv, requires_grad=True)
    h0t = torch.tensor(h0v[None], requires_grad=True)
    out_t, hT_t = rnn(xt, h0t)
    (out_t.square().sum() + hT_t.sum()).backward()
    p = {k: gb.param(k, v.detach().numpy().copy()) for k, v in rnn.named_parameters()}
    x, h0 = gb.input("x", (None, B, n_in), "float64"), gb.input("h0", (B, n_h), "float64")

    def cell(h, x_t):  # PyTorch: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)
        h = gb.tanh(x_t @ p["weight_ih_l0"].T + p["bias_ih_l0"] + h @ p["weight_hh_l0"].T + p["bias_hh_l0"])
        return h, h

    hT, out = gb.scan(cell, h0, x)
    loss = gb.sum(out * out) + gb.sum(hT)
    names = list(p)
    grads = gb.grad(loss, [x, h0] + [p[k] for k in names])
    got = gb.compile([x, h0], [out, hT, *grads])(xv, h0v)
    np.testing.assert_allclose(got[0], out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[1], hT_t.detach().numpy()[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[2], xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[3], h0t.grad.numpy()[0], rtol=1e-10, atol=1e-12)
    for k, g in zip(names, got[4:]):
        np.testing.assert_allclose(g, dict(rnn.named_parameters())[k].grad.numpy(), rtol=1e-10, atol=1e-12)
