"""Lowerings for small graphs (W1): each faster form against the reference interpreter, where
it must be used and where it must not, and what check_numerics still catches."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphbp as gb


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(f"uint{8 * a.dtype.itemsize}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_where_with_a_zero_else_keeps_the_exact_bits_of_the_taken_branch(dtype):
    """``where(c, a, 0)`` is one integer multiply of a's bits by the mask: inf, nan and -0.0
    pass unchanged where ``c`` holds and become +0.0 elsewhere (a float multiply by the mask
    would give nan for inf * 0)."""
    c = gb.input("c", (None,), dtype="bool")
    a = gb.input("a", (None,), dtype=dtype)
    prog = gb.compile([c, a], [gb.where(c, a, 0.0) * 1.0])
    A = np.array([np.inf, -np.inf, np.nan, -0.0, 1.5, np.inf, np.nan, -0.0, -2.0], dtype)
    C = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    (got,) = prog(C, A)
    want = gb.evaluate(prog.outputs[0], {c: C, a: A})
    np.testing.assert_array_equal(_bits(got), _bits(np.asarray(want, dtype)))
    np.testing.assert_array_equal(_bits(got[5:]), 0)
    src = prog.source()
    assert f"multiply(a.view(uint{8 * np.dtype(dtype).itemsize}), c" in src and "bitwise_and" not in src


def test_other_wheres_keep_their_lowerings():
    c = gb.input("c", (None,), dtype="bool")
    a = gb.input("a", (None,), dtype="float64")
    b = gb.input("b", (None,), dtype="float64")
    i = gb.input("i", (None,), dtype="int64")
    outs = [gb.where(c, 0.0, b), gb.where(c, a, b), gb.where(c, i, 0)]
    prog = gb.compile([c, a, b, i], outs)
    C = np.array([True, False, True])
    A, B, II = np.array([1.0, np.inf, -0.0]), np.array([np.nan, 2.0, 3.0]), np.array([4, 5, 6])
    for got, want in zip(prog(C, A, B, II), gb.evaluate(outs, {c: C, a: A, b: B, i: II})):
        np.testing.assert_array_equal(got, want)
    src = prog.source()
    assert "bitwise_and(b.view(uint64)" in src  # where(c, 0, b): the all-ones mask of not c
    assert src.count("copyto(") == 4  # the general where and the integer one: two masked copies


def _softmax_program(n: int, k: int, dtype="float32"):
    x = gb.input("x", (None, k), dtype=dtype)
    t = gb.input("t", (None,), dtype="int64")
    W = gb.param("W", np.linspace(-1, 1, k).astype(dtype))
    logits = x + W  # (not a matmul: a -inf logit must reach the softmax as it is)
    loss = gb.mean(gb.softmax_cross_entropy(logits, t))
    g = gb.grad(loss, W)
    outs = [loss, g, gb.softmax(logits), gb.softmax_cross_entropy(logits, t)]
    # the lowered kernels of each op (share_softmax would join larger logits into one node)
    return gb.compile([x, t], outs, passes={"share_softmax": False}), outs, (x, t)


@pytest.mark.parametrize(("n", "k", "transposed"), [(128, 10, True), (64, 2, True), (1024, 64, True),
                                                    (16, 10, False), (128, 128, False), (100, 65, False)])
def test_short_rows_reduce_a_transposed_copy_and_sum_by_a_product(n, k, transposed):
    """The max-subtracted softmax and cross-entropy reduce a transposed copy of the logits
    over axis 0 when the rows are short and many (the maxima are the same in any order) and
    sum short rows as a product with a column of ones; masked (-inf) logits and nan rows
    come out as from the kernels."""
    prog, outs, (x, t) = _softmax_program(n, k)
    rng = np.random.default_rng(n + k)
    X = (rng.normal(size=(n, k)) * 30).astype(np.float32)
    X[0, 0] = -np.inf  # a masked logit: probability 0, finite loss unless it is the label
    X[1] = np.nan  # a bad row stays nan
    T = rng.integers(0, k, n)
    T[0] = 1
    with np.errstate(invalid="ignore"):
        got = prog(X, T)
        want = gb.evaluate(outs, {x: X, t: T})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=3e-6, atol=1e-6)
    assert np.isnan(got[2][1]).all() and got[2][0, 0] == 0 and np.isfinite(got[3][0])
    src = prog.source()
    assert bool(re.search(r"maximum_reduce\(\w+, 0, None, \w+\.T, True\)", src)) == transposed
    assert ("copyto(" in src) == transposed
    assert ("dot(" in src) == (k <= 64) and bool(re.search(r"add_reduce\(\w+, 1, None", src)) == (k > 64)


def test_check_numerics_still_names_the_op_of_a_nan_in_a_relu_network():
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 4), dtype="float32")
    t = gb.input("t", (None,), dtype="int64")
    W1 = gb.param("W1", rng.normal(size=(4, 8)).astype(np.float32))
    W2 = gb.param("W2", rng.normal(size=(8, 3)).astype(np.float32))
    loss = gb.mean(gb.softmax_cross_entropy(gb.relu(x @ W1) @ W2, t))
    gW1, gW2 = gb.grad(loss, [W1, W2])
    prog = gb.compile([x, t], [loss], updates={W1: W1 - 0.1 * gW1, W2: W2 - 0.1 * gW2}, check_numerics=True)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    T = rng.integers(0, 3, 64)
    prog(X, T)
    X[3, 1] = np.nan
    with pytest.raises(gb.NumericsError):
        prog(X, T)


class _Tagged(np.ndarray):
    """An ndarray subclass that overrides NumPy functions (as unit or tracing arrays do)."""

    def __array_function__(self, func, types, args, kwargs):
        raise AssertionError(f"{func.__name__} dispatched to the feed's override")


def test_generated_dots_and_copies_skip_the_array_function_dispatch():
    """Generated code calls ``dot`` and ``copyto`` without ``__array_function__`` dispatch
    (a Python-level call per use, as costly as a small ``dot``): a feed's override is not
    consulted and the values are those of the plain array."""
    x = gb.input("x", (None, 3), dtype="float64")
    W = gb.param("W", np.arange(6.0).reshape(3, 2))
    y = gb.sum(gb.relu(x @ W))
    prog = gb.compile([x], [y, gb.grad(y, W)])
    X = np.linspace(-1, 1, 12).reshape(4, 3)
    want = prog(X)
    got = prog(X.view(_Tagged))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert "dot(x, W," in prog.source()
