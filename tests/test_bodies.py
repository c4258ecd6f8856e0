"""Passes inside scan and cond bodies, and the reference interpreter stepping into them.

Every pass reaches bodies through one mechanism (``graph.rewrite.step_into``, used by the
rule engine and, through ``rewrite(bodies=...)``, by ``accumulate``, ``fuse_matmul``,
and ``nan_guard``). Each test builds a model whose pattern sits only inside a
body, checks the rewrite fired there, and that values and gradients equal the unoptimised
program and ``gb.evaluate``, which interprets bodies node by node (no body is compiled).
"""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb
from graphbp.graph.subgraph import Subgraph

RNG = np.random.default_rng(7)


def _body_nodes(nodes) -> list:
    """Every node inside a body reachable from ``nodes``, nested bodies included."""
    out = []
    stack = [b for n in gb.toposort(list(nodes)) for b in n.op.subgraphs()]
    while stack:
        body = stack.pop()
        for n in body.nodes():
            out.append(n)
            stack.extend(n.op.subgraphs())
    return out


def _body_ops(nodes) -> list[str]:
    return [n.op.name for n in _body_nodes(nodes)]


def _program_nodes(prog) -> list:
    return list(prog.outputs) + [v for _, v in prog.updates]


def _agree(inputs, outs, feeds, rtol=1e-10):
    """Optimised, unoptimised and the reference interpreter give the same arrays; returns
    the optimised program."""
    opt = gb.compile(inputs, outs)
    raw = gb.compile(inputs, outs, optimize=False)
    ref = gb.evaluate(outs, dict(zip(inputs, feeds)))
    for a, b, c in zip(opt(*feeds), raw(*feeds), ref):
        np.testing.assert_allclose(a, c, rtol=rtol, atol=1e-12)
        np.testing.assert_allclose(b, c, rtol=rtol, atol=1e-12)
    return opt


def _rules(prog, pass_name):
    return [e.rule for e in prog.rewrite_log if e.pass_name == pass_name]


# ------------------------------------------------------------------ fuse_matmul
def test_matmul_bias_act_fuses_inside_a_scan_body_and_a_cond_branch():
    x = gb.input("x", (5, 2, 4), "float64")
    p = gb.input("p", (), "bool")
    W = gb.param("W", RNG.normal(size=(4, 4)) * 0.5)
    b = gb.param("b", RNG.normal(size=(4,)))
    hT, hs = gb.scan(lambda h, x_t: (gb.tanh(h @ W + b) + x_t,) * 2, gb.constant(np.zeros((2, 4))), x)
    (y,) = gb.cond(p, lambda u: (gb.tanh(u @ W + b),), lambda u: (u * 2.0,), hT)
    loss = gb.sum(y * y) + gb.sum(hs)
    outs = [loss, *gb.grad(loss, [x, W, b])]
    for pred in (True, False):
        opt = _agree([x, p], outs, [RNG.normal(size=(5, 2, 4)), np.array(pred)])
    assert "matmul_bias_act" in _rules(opt, "fuse_matmul")
    fused = [n for n in _body_nodes(_program_nodes(opt)) if n.op.name == "matmul_bias_act"]
    assert sum(n.op.activation == "tanh" for n in fused) >= 2  # the step, the true branch (and its pullback)


# ------------------------------------------------------------------ accumulate
def test_add_chains_become_add_n_inside_a_scan_body_and_a_cond_branch():
    x = gb.input("x", (4, 3), "float64")
    p = gb.input("p", (), "bool")
    # h is read four times in the step: its cotangent in the reverse body sums four terms
    hT, _ = gb.scan(lambda h, x_t: (gb.sin(h) * h + gb.tanh(h) * x_t + h, None), gb.constant(np.ones(3)), x)
    (y,) = gb.cond(p, lambda u: (gb.sin(u) + gb.cos(u) + gb.tanh(u) + u * u,), lambda u: (-u,), hT)
    loss = gb.sum(y)
    outs = [loss, gb.grad(loss, x)]
    for pred in (True, False):
        opt = _agree([x, p], outs, [RNG.normal(size=(4, 3)), np.array(pred)])
    assert "flatten_add" in _rules(opt, "accumulate")
    assert _body_ops(_program_nodes(opt)).count("add_n") >= 2  # the cond branch and the reverse step
    assert "add_n" not in [n.op.name for n in opt.order]


# ------------------------------------------------------------------ nan_guard
def _masked_sqrt(u):
    return gb.where(u > 0.0, gb.sqrt(u), 0.0)


@pytest.mark.parametrize("where", ["scan", "cond"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # sqrt(-1) on purpose
def test_nan_guard_masks_a_singular_cotangent_inside_a_body(where):
    x = gb.input("x", (4, 3), "float64")
    v = np.array([[0.0, 1.0, 4.0], [-1.0, 0.0, 9.0], [2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    scale = np.ones((4, 1))
    if where == "scan":  # the step's sqrt reads the carry too: it stays in the loop
        _, ys = gb.scan(lambda c, x_t: (c + 1.0, _masked_sqrt(x_t * c)), gb.constant(np.ones(3)), x)
        loss = gb.sum(ys)
        feeds = [v]
        inputs = [x]
        scale = np.arange(1.0, 5.0)[:, None]  # the carry at each step
    else:
        p = gb.input("p", (), "bool")
        (y,) = gb.cond(p, lambda u: (_masked_sqrt(u),), lambda u: (u * 0.0,), x)
        loss = gb.sum(y)
        feeds = [v, np.array(True)]
        inputs = [x, p]
    gx = gb.grad(loss, x)
    want = np.where(v > 0, 0.5 * scale / np.sqrt(np.where(v > 0, v * scale, 1.0)), 0.0)
    raw = gb.compile(inputs, [gx], optimize=False)(*feeds)[0]
    assert np.isnan(raw).any()  # 0 * inf at the masked zeros without the guard
    assert np.isnan(gb.evaluate(gx, dict(zip(inputs, feeds)))).any()  # the interpreter runs no pass
    opt = gb.compile(inputs, [gx])
    np.testing.assert_allclose(opt(*feeds)[0], want, rtol=1e-12)
    assert "mask_cotangent" in _rules(opt, "nan_guard")
    assert any(h.node.op.name == "sqrt" for h in opt.hazards)
    assert "where" in _body_ops(_program_nodes(opt))


# ------------------------------------------------------------------ gelu's shared tanh
def test_gelu_value_and_derivative_share_tanh_inside_a_scan_body():
    """A step that takes a gradient itself (an inner descent loop) holds gelu and its
    derivative in one body: built from primitives, they share one tanh there."""
    x = gb.input("x", (4, 3), "float64")

    def step(h, x_t):
        value = gb.sum(gb.gelu(h * x_t, approximate="tanh"))
        return h - 0.1 * gb.grad(value, h) + 0.01 * value, value  # the carry reads both: both stay in the step

    hT, values = gb.scan(step, gb.constant(np.full(3, 0.5)), x)
    opt = _agree([x], [hT, values], [RNG.normal(size=(4, 3))])
    assert _body_ops(_program_nodes(opt)).count("tanh") == 1


# ------------------------------------------------------------------ the reference interpreter
def _no_compiled_bodies(monkeypatch):
    def refuse(self):
        raise AssertionError("gb.evaluate compiled a body")

    monkeypatch.setattr(Subgraph, "program", refuse)


def test_evaluate_interprets_nested_bodies_node_by_node(monkeypatch):
    """A scan whose step holds a cond, with first and second-order gradients: the optimised
    program agrees with ``gb.evaluate``, which never compiles a body."""
    x = gb.input("x", (None, 3), "float64")
    p = gb.input("p", (), "bool")
    W = gb.param("W", RNG.normal(size=(3, 3)) * 0.4)

    def step(h, x_t):
        (z,) = gb.cond(p, lambda u: (gb.tanh(u @ W),), lambda u: (gb.sin(u) * 0.5,), h + x_t)
        return z, z * z

    hT, ys = gb.scan(step, gb.constant(np.full(3, 0.1)), x)
    loss = gb.sum(hT) + gb.sum(ys)
    gx, gW = gb.grad(loss, [x, W])
    hvp = gb.grad(gb.sum(gW * gW), W)
    outs = [loss, hT, ys, gx, gW, hvp]
    for pred in (True, False):
        feeds = [RNG.normal(size=(5, 3)), np.array(pred)]
        got = gb.compile([x, p], outs)(*feeds)
        with monkeypatch.context() as m:
            _no_compiled_bodies(m)
            want = gb.evaluate(outs, dict(zip([x, p], feeds)))
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_evaluate_runs_a_reverse_scan_of_zero_and_one_steps(monkeypatch):
    x = gb.input("x", (None, 2), "float64")
    hT, ys = gb.scan(lambda h, x_t: (h * x_t + 1.0, h - x_t), gb.constant(np.ones(2)), x, reverse=True)
    _no_compiled_bodies(monkeypatch)
    for steps in (0, 1, 3):
        xv = RNG.normal(size=(steps, 2))
        h, want_ys = np.ones(2), np.empty((steps, 2))
        for t in reversed(range(steps)):
            want_ys[t] = h - xv[t]
            h = h * xv[t] + 1.0
        got_h, got_ys = gb.evaluate([hT, ys], {x: xv})
        np.testing.assert_allclose(got_h, h, rtol=1e-12)
        np.testing.assert_allclose(got_ys, want_ys, rtol=1e-12)
