"""Hypothesis builds random graphs from the op table and checks their gradients.

A graph is a random program over three float64 inputs of shape (3, 4): each step applies
a smooth op (unary, binary with broadcasting, reduction with keepdims, softmax, matmul
against a transpose, slicing and concatenation) to earlier values, so fan-out, broadcasting
and reductions mix in ways no single-op test reaches. The scalar loss is a random linear
functional of a few values; its gradient with respect to every input is checked along a
random direction against central finite differences.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import graphbp as gb

SHAPE = (3, 4)

# Smooth, bounded-derivative ops on (3, 4) values (inputs stay in a moderate range).
UNARY = {
    "tanh": gb.tanh, "sigmoid": gb.sigmoid, "softplus": gb.softplus, "sin": gb.sin,
    "gelu": gb.gelu, "gelu_erf": lambda x: gb.gelu(x, approximate="none"), "erf": gb.erf,
    "square": gb.square, "exp_tanh": lambda x: gb.exp(gb.tanh(x)), "negative": gb.negative,
    "softmax": lambda x: gb.softmax(x, axis=-1), "log_softmax0": lambda x: gb.log_softmax(x, axis=0),
    "sum_keep": lambda x: gb.sum(x, axis=1, keepdims=True),
    "mean_keep0": lambda x: gb.mean(x, axis=0, keepdims=True),
    "lse_keep": lambda x: gb.logsumexp(x, axis=-1, keepdims=True),
    "var_keep": lambda x: gb.var(x, axis=1, keepdims=True),
    "gram": lambda x: gb.tanh(x @ x.T) @ x * 0.5,
    "flip": lambda x: x[::-1, :],
    "roll_cat": lambda x: gb.concatenate([x[:, 1:], x[:, :1]], axis=1),
    "reshape": lambda x: gb.reshape(gb.transpose(gb.reshape(x, (4, 3))), SHAPE),
    "take": lambda x: gb.take(x, np.array([2, 0, 0]), axis=0),
    "elu_shift": lambda x: gb.elu(x + 3.0),
}
BINARY = {
    "add": gb.add, "subtract": gb.subtract, "multiply": gb.multiply,
    "divide_safe": lambda a, b: a / (1.5 + gb.tanh(b)),
    "where": lambda a, b: gb.where(gb.constant(np.eye(3, 4) > 0), a, b),
    # targets are constants: by design no gradient flows into them
    "bce": lambda a, b: gb.sigmoid_binary_cross_entropy(a - b, gb.constant(np.linspace(0, 1, 12).reshape(SHAPE))),
}


@st.composite
def graphs(draw):
    n_steps = draw(st.integers(1, 6))
    steps = []
    for k in range(n_steps):
        available = 3 + k
        if draw(st.booleans()):
            name = draw(st.sampled_from(sorted(UNARY)))
            steps.append((name, (draw(st.integers(0, available - 1)),)))
        else:
            name = draw(st.sampled_from(sorted(BINARY)))
            steps.append((name, (draw(st.integers(0, available - 1)), draw(st.integers(0, available - 1)))))
    n_out = draw(st.integers(1, min(3, 3 + n_steps)))
    outs = draw(st.lists(st.integers(0, 2 + n_steps), min_size=n_out, max_size=n_out))
    seed = draw(st.integers(0, 2**16))
    return steps, outs, seed


def _build(steps, outs, seed):
    rng = np.random.default_rng(seed)
    xs = [gb.input(f"x{i}", SHAPE, dtype="float64") for i in range(3)]
    values = list(xs)
    for name, args in steps:
        fn = UNARY.get(name) or BINARY[name]
        out = fn(*(values[a] for a in args))
        values.append(gb.broadcast_to(out, SHAPE) if out.shape != SHAPE else out)
    loss = gb.sum(gb.stack([gb.sum(values[o] * gb.constant(rng.normal(size=SHAPE))) for o in outs]))
    return xs, loss, rng


@given(graphs())
def test_random_graph_gradients_match_finite_differences(graph):
    steps, outs, seed = graph
    xs, loss, rng = _build(steps, outs, seed)
    grads = gb.grad(loss, xs)
    f = gb.compile(xs, [loss, *grads], optimize=False)
    f_loss = gb.compile(xs, [loss], optimize=False)
    args = [rng.uniform(-1, 1, size=SHAPE) for _ in xs]
    vals = f(*args)
    dirs = [rng.normal(size=SHAPE) for _ in xs]
    analytic = float(sum(np.sum(g * d) for g, d in zip(vals[1:], dirs)))
    eps = 1e-6
    plus = f_loss(*(a + eps * d for a, d in zip(args, dirs)))[0]
    minus = f_loss(*(a - eps * d for a, d in zip(args, dirs)))[0]
    numeric = float((plus - minus) / (2 * eps))
    assert np.isfinite(analytic)
    assert abs(analytic - numeric) <= 1e-5 * (1 + abs(numeric)), (steps, outs, analytic, numeric)


@given(graphs())
def test_random_graph_programs_agree_with_the_reference_interpreter(graph):
    """Neither the rewrite passes nor lowering, the memory plan and code generation may
    change values or gradients of any op combination: both programs, optimised and not,
    against one ``op.compute`` per node (``gb.evaluate``)."""
    steps, outs, seed = graph
    xs, loss, rng = _build(steps, outs, seed)
    grads = gb.grad(loss, xs)
    args = [rng.uniform(-1, 1, size=SHAPE) for _ in xs]
    ref = gb.evaluate([loss, *grads], dict(zip(xs, args)))
    for optimize in (False, True):
        got = gb.compile(xs, [loss, *grads], optimize=optimize)(*args)
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)


@given(graphs())
def test_random_graph_blocked_and_merged_loops_agree_with_the_reference(graph):
    """Cache blocking forced onto these small arrays (blocks of 2 rows), so chains, the
    merged forward/backward loop and the steps moved around it all run on random graphs."""
    steps, outs, seed = graph
    xs, loss, rng = _build(steps, outs, seed)
    grads = gb.grad(loss, xs)
    args = [rng.uniform(-1, 1, size=SHAPE) for _ in xs]
    ref = gb.evaluate([loss, *grads], dict(zip(xs, args)))
    forced = gb.RuntimeOptions(block_min_bytes=1, block_elements=8, merged_block_elements=8)
    prog = gb.compile(xs, [loss, *grads], runtime=forced)
    got = prog(*args)
    again = prog(*args)
    for r, g, h in zip(ref, got, again):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(g, h)
