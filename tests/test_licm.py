"""Loop-invariant code motion out of ``scan`` bodies (passes/licm.py, passes/residuals.py).

Every program here is compared with the same graph compiled with ``licm`` off and with the
reference interpreter ``gb.evaluate`` (values, gradients, and a Hessian-vector product), and
the moved work is checked where it must be: the input projection as one matmul outside the
forward loop, the weight gradients as one matmul after the reverse loop, the reverse loop
reading the forward loop's gate values instead of recomputing them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphbp as gb
from graphbp.graph.types import TensorType
from graphbp.ops.linalg import MatMul
from graphbp.ops.loop import Scan

RNG = np.random.default_rng(3)
T, B, V, E, H = 5, 3, 7, 4, 6


def _charlm(cell: str = "lstm", reverse: bool = False, logits_inside: bool = False):
    """A small float64 char LM: take -> cell in a scan -> logits -> mean softmax-CE."""
    def p(name, shape):
        return gb.param(name, 0.5 * RNG.normal(size=shape))

    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    w = {"emb": p("emb", (V, E)), "w_ih": p("w_ih", (gates * H, E)), "w_hh": p("w_hh", (gates * H, H)),
         "b_ih": p("b_ih", (gates * H,)), "b_hh": p("b_hh", (gates * H,)), "w_out": p("w_out", (V, H)),
         "b_out": p("b_out", (V,))}
    tok = gb.input("tokens", (None, B), "int64")
    tgt = gb.input("targets", (None, B), "int64")
    x = gb.take(w["emb"], tok, axis=0)
    zero = gb.constant(np.zeros((B, H)))
    cells = {"lstm": gb.nn.lstm_cell, "gru": gb.nn.gru_cell, "rnn": gb.nn.rnn_cell}

    def step(state, x_t):
        new = cells[cell](x_t, state, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"])
        h = new[0] if cell == "lstm" else new
        return new, (h @ w["w_out"].T + w["b_out"] if logits_inside else h)

    init = (zero, zero) if cell == "lstm" else zero
    _, ys = gb.scan(step, init, x, reverse=reverse)
    logits = ys if logits_inside else ys @ w["w_out"].T + w["b_out"]
    loss = gb.mean(gb.softmax_cross_entropy(logits, tgt))
    return [tok, tgt], loss, list(w.values())


def _feeds(steps=T):
    return RNG.integers(0, V, (steps, B)), RNG.integers(0, V, (steps, B))


def _outs(loss, params, second: bool):
    grads = gb.grad(loss, params)
    outs = [loss, *grads]
    if second:  # a Hessian-vector product: grad of <grad, v>
        vs = [gb.constant(RNG.normal(size=q.shape)) for q in params]
        outs += gb.grad(gb.sum(gb.stack([gb.sum(g * v) for g, v in zip(grads, vs)])), params)
    return outs


def _check(inputs, outs, feeds):
    hoisted = gb.compile(inputs, outs)
    plain = gb.compile(inputs, outs, passes={"licm": False})
    ref = gb.evaluate(outs, dict(zip(inputs, feeds)))
    for a, b, c in zip(hoisted(*feeds), plain(*feeds), ref):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, c, rtol=1e-10, atol=1e-12)
    return hoisted


def _scans(prog):
    return [n for n in prog.order if isinstance(n.op, Scan)]


def _body_ops(scan):
    return [n.op.name for n in scan.op.body.nodes()]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_values_and_gradients_equal_the_unhoisted_program_and_evaluate(cell):
    inputs, loss, params = _charlm(cell)
    _check(inputs, _outs(loss, params, second=False), _feeds())


@pytest.mark.parametrize("reverse,logits_inside", [(False, True), (True, False)])
def test_second_order_through_the_hoisted_loops(reverse, logits_inside):
    inputs, loss, params = _charlm("lstm", reverse=reverse, logits_inside=logits_inside)
    prog = _check(inputs, _outs(loss, params, second=True), _feeds(4))
    assert {"hoist", "sink", "reduce"} <= {e.rule for e in prog.rewrite_log if e.pass_name == "licm"}


def test_lengths_zero_and_one_through_one_program():
    inputs, loss, params = _charlm("lstm")
    outs = _outs(loss, params, second=False)
    prog = gb.compile(inputs, outs)
    for steps in (1, 0):
        feeds = _feeds(steps)
        with warnings.catch_warnings():  # the mean over no positions divides by zero
            warnings.simplefilter("ignore", RuntimeWarning)
            got = prog(*feeds)
        if steps:
            for a, c in zip(got, gb.evaluate(outs, dict(zip(inputs, feeds)))):
                np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)
        else:  # no positions: the mean is nan, every weight gradient is zero
            assert all(np.all(g == 0) for g in got[1:])


def test_the_input_projection_and_weight_gradients_leave_the_loops():
    inputs, loss, params = _charlm("lstm")
    emb, w_ih, w_hh = params[:3]
    prog = gb.compile(inputs, _outs(loss, params, second=False))
    fwd = [s for s in _scans(prog) if not s.op.reverse]
    rev = [s for s in _scans(prog) if s.op.reverse]
    assert len(fwd) == len(rev) == 1
    # forward: one matmul per step left (h @ W_hh^T, its bias fused in by fuse_matmul);
    # x @ W_ih^T runs once on (T, B, E)
    assert sum(_body_ops(fwd[0]).count(op) for op in ("matmul", "matmul_bias_act")) == 1
    outside = [n for n in prog.order if isinstance(n.op, MatMul)]
    proj = [n for n in outside if n.ndim == 3 and n.inputs[0].op.name == "take"]
    assert len(proj) == 1 and proj[0].inputs[1].inputs == (w_ih,)
    # reverse: only dh = dz @ W_hh per step; no carry accumulates a weight gradient
    assert _body_ops(rev[0]).count("matmul") == 1
    assert rev[0].op.n_carry == 2
    # dW_hh: one matmul over all T*B rows, after the loop, stamped as w_hh's gradient, made
    # in the weights' own layout (dz^T h, not (h^T dz)^T: canonicalize's transpose_matmul)
    flat = [n for n in outside if n.ndim == 2 and n.shape in ((4 * H, H), (4 * H, E))]
    assert len(flat) == 2 and all(n.provenance for n in flat)
    # the gradients of the forward matmul and of the W^T it read, in one product
    assert {p.forward.op.name for n in flat for p in n.provenance} == {"matmul", "transpose"}


def test_the_reverse_loop_reads_the_forward_loops_gates():
    inputs, loss, params = _charlm("lstm")
    prog = gb.compile(inputs, _outs(loss, params, second=False))
    assert "reuse_residuals" in {e.rule for e in prog.rewrite_log}
    (fwd,) = [s for s in _scans(prog) if not s.op.reverse]
    # nothing recomputes the gates outside the loops: every sigmoid is in the forward body
    assert not [n for n in prog.order if n.op.name == "sigmoid"]
    assert _body_ops(fwd).count("sigmoid") == 2  # i and f as one (merge_slices), o
    assert fwd.op.n_ys > 1  # the gate activations are stacked ys now


def test_products_with_per_step_factors_are_regrouped_and_hoisted():
    """``((c * a_t) * b_t) * (1 - a_t)``: the factors that do not depend on the carry are
    multiplied once over all steps before the loop; one multiply per step is left."""
    xs = gb.input("xs", (None, 3, 4), "float64")
    ys_in = gb.input("ys", (None, 3, 4), "float64")

    def step(c, x):
        a, b = x
        return ((c * gb.sigmoid(a)) * b) * (1.0 - gb.sigmoid(a)), c

    cT, _ = gb.scan(step, gb.constant(np.ones((3, 4))), (xs, ys_in))
    feeds = (RNG.normal(size=(5, 3, 4)), RNG.normal(size=(5, 3, 4)))
    prog = _check([xs, ys_in], [cT, *gb.grad(gb.sum(cT * cT), [xs, ys_in])], feeds)
    fwd = [s for s in _scans(prog) if not s.op.reverse]
    assert len(fwd) == 1 and _body_ops(fwd[0]).count("multiply") == 1
    assert "sigmoid" not in _body_ops(fwd[0])


def test_lstm_reverse_step_multiplies_each_gate_cotangent_once():
    inputs, loss, params = _charlm("lstm")
    prog = gb.compile(inputs, _outs(loss, params, second=False))
    (rev,) = [s for s in _scans(prog) if s.op.reverse]
    # dc, di, df, dg, do and the carried dc * f: one multiply each, their gate factors
    # (sigmoid derivatives, tanh(c), c_prev) multiplied before the loop
    assert _body_ops(rev).count("multiply") == 6


def test_nothing_moves_when_everything_depends_on_the_carry():
    h0 = gb.input("h0", (3,), "float64")
    hT, ys = gb.scan(lambda h, _: (gb.tanh(h) * 2.0, h), h0, length=4)
    prog = gb.compile([h0], [hT, ys])
    assert not [e for e in prog.rewrite_log if e.pass_name == "licm"]


def test_an_accumulating_carry_becomes_a_sum_after_the_loop():
    x = gb.input("x", (None, 3, 2), "float64")
    W = gb.param("W", RNG.normal(size=(2, 4)))

    def step(c, x_t):
        h, acc = c
        h = gb.tanh(h + gb.sum(x_t @ W, axis=0))
        return (h, acc + gb.transpose(x_t) @ (x_t @ W)), None

    (hT, acc), _ = gb.scan(step, (gb.constant(np.zeros(4)), gb.constant(np.ones((2, 4)))), x)
    _check([x], [hT, acc, *gb.grad(gb.sum(hT) + gb.sum(acc * acc), [W, x])], (RNG.normal(size=(6, 3, 2)),))
    prog = _check([x], [hT, acc], (RNG.normal(size=(6, 3, 2)),))
    (fwd,) = _scans(prog)
    assert fwd.op.n_carry == 1 and "matmul" not in _body_ops(fwd)
    assert {"reduce", "hoist"} <= {e.rule for e in prog.rewrite_log}


def test_batched_forms():
    m = TensorType((3, 4), np.dtype("float64"))
    w = TensorType((4, 5), np.dtype("float64"))
    out = TensorType((3, 5), np.dtype("float64"))
    assert MatMul().batched((True, False), (m, w), out) == MatMul()
    assert MatMul().batched((True, True), (m, TensorType((4,), m.dtype)), TensorType((3,), m.dtype)) is None
    assert gb.ops.shape.Transpose((1, 0)).batched((True,), (m,), m) == gb.ops.shape.Transpose((0, 2, 1))
    add = gb.ops.elementwise.Add()
    row = TensorType((4,), m.dtype)
    assert add.batched((True, False), (m, row), m) == add  # an unstacked row broadcasts
    assert add.batched((False, True), (m, row), m) is None  # a stacked row would not


def test_the_gate_gradients_are_one_concatenate_and_explain_reports_each_step():
    inputs, loss, params = _charlm("lstm")
    outs = _outs(loss, params, second=False)
    prog = _check(inputs, outs, _feeds())
    (rev,) = [s for s in _scans(prog) if s.op.reverse]
    ops = _body_ops(rev)
    assert "embed_slice" not in ops and ops.count("concatenate") == 1
    assert "add_slices_concatenate" in {e.rule for e in prog.rewrite_log}
    text = prog.explain()
    assert "per step (forward): 15 body ops" in text and "per step (reverse)" in text
    assert "saved for the backward pass 7 (" in text  # h, c and the gate values the reverse loop reads (i, f as one)


def test_split_gradients_tiling_part_of_an_axis_stay_as_they_are():
    x = gb.input("x", (4, 6), "float64")
    a, b, c = gb.split(x, 3, axis=1)
    loss = gb.sum(gb.sin(a)) + gb.sum(gb.cos(c))  # b unused: its gradient is no piece
    g = gb.grad(loss, x)
    prog = gb.compile([x], [g])
    xv = RNG.normal(size=(4, 6))
    np.testing.assert_allclose(prog(xv)[0], gb.evaluate([g], {x: xv})[0])
    full = gb.grad(gb.sum(gb.sin(a)) + gb.sum(gb.cos(c)) + gb.sum(b * b), x)
    prog = gb.compile([x], [full])
    assert "concatenate" in [n.op.name for n in prog.order]
    np.testing.assert_allclose(prog(xv)[0], gb.evaluate([full], {x: xv})[0])


def test_a_sum_over_batched_products_is_one_matmul():
    x = gb.input("x", (5, 3, 4), "float64")
    W = gb.param("W", RNG.normal(size=(4, 2)))
    A = gb.param("A", RNG.normal(size=(5, 6, 3)))
    y = gb.tanh(x @ W)
    loss = gb.sum(y * y) + gb.sum(gb.sum(A @ x, axis=0) ** 2)
    outs = [loss, *gb.grad(loss, [W, A])]
    prog = _check([x], outs, (RNG.normal(size=(5, 3, 4)),))
    assert sum(e.rule == "sum_batched_matmul" for e in prog.rewrite_log) == 2
    assert not [n for n in prog.order if n.op.name == "sum" and n.inputs[0].op.name == "matmul"]
