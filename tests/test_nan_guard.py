"""nan_guard: a singular op behind a ``where`` gets a finite gradient, whether or not the
program outputs the forward value, for every op that declares ``singular_inputs``, and when
the masked value reaches the ``where`` through re-views or the mask is broadcast."""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops import OP_CLASSES

# op name -> (builder of the singular value from x, the guard condition, sample x with a
# point where the derivative is infinite and the guard excludes it)
SINGULAR_CASES = {
    "sqrt": (gb.sqrt, lambda x: x > 0, [0.0, 1.0, 4.0, -1.0]),
    "log": (gb.log, lambda x: x > 0, [0.0, 1.0, 2.0, -1.0]),
    "log1p": (gb.log1p, lambda x: x > -1, [-1.0, 0.5, 2.0, -3.0]),
    "divide": (lambda x: 1.0 / x, lambda x: gb.not_equal(x, 0.0), [0.0, 1.0, -2.0, 4.0]),
    "power": (lambda x: x ** 0.5, lambda x: x > 0, [0.0, 1.0, 4.0, -1.0]),
    "reciprocal": (gb.reciprocal, lambda x: gb.not_equal(x, 0.0), [0.0, 1.0, -2.0, 4.0]),
}


def test_every_op_with_singular_inputs_has_a_case():
    declared = {cls.name for cls in OP_CLASSES if cls.singular_inputs}
    assert declared == set(SINGULAR_CASES)


def _expected(name, X):
    with np.errstate(all="ignore"):
        ref = {"sqrt": lambda v: 0.5 / np.sqrt(v), "log": lambda v: 1 / v, "log1p": lambda v: 1 / (1 + v),
               "divide": lambda v: -1 / v ** 2, "power": lambda v: 0.5 / np.sqrt(v),
               "reciprocal": lambda v: -1 / v ** 2}[name](X)
    return ref


@pytest.mark.parametrize("with_forward", [True, False], ids=["outputs-loss-and-grad", "outputs-grad-only"])
@pytest.mark.parametrize("name", sorted(SINGULAR_CASES))
def test_guarded_singular_op_gets_a_finite_gradient(name, with_forward):
    f, cond, xs = SINGULAR_CASES[name]
    x = gb.input("x", (4,), dtype="float64")
    c = cond(x)
    y = gb.sum(gb.where(c, f(x), 0.0))
    g = gb.grad(y, x)
    X = np.array(xs)
    outputs = [y, g] if with_forward else [g]
    prog = gb.compile([x], outputs, debug=True)
    with np.errstate(all="ignore"):  # the forward value itself divides by 0 before the where
        got = prog(X)[-1]
        raw = gb.compile([x], outputs, optimize=False)(X)[-1]
    assert not np.all(np.isfinite(raw))  # the unguarded gradient really is NaN/inf
    keep = np.asarray(gb.compile([x], [c], optimize=False)(X)[0])
    np.testing.assert_allclose(got[keep], _expected(name, X)[keep], rtol=1e-12)
    assert np.all(got[~keep] == 0)
    assert len(prog.hazards) == 1 and prog.hazards[0].node.op.name == name


@pytest.mark.parametrize("with_forward", [True, False])
def test_mask_through_a_reshape_and_a_transpose(with_forward):
    x = gb.input("x", (2, 3), dtype="float64")
    s = gb.transpose(gb.reshape(gb.sqrt(x), (3, 2)))  # sqrt's value reaches the where re-viewed
    c = gb.transpose(gb.reshape(x > 0, (3, 2)))
    y = gb.sum(gb.where(c, s, 0.0))
    g = gb.grad(y, x)
    X = np.array([[0.0, 1.0, 4.0], [-1.0, 9.0, 0.0]])
    prog = gb.compile([x], [y, g] if with_forward else [g], debug=True)
    with np.errstate(all="ignore"):  # sqrt of the negative entries, before the where
        got = prog(X)[-1]
        want = np.where(X > 0, 0.5 / np.sqrt(X), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert len(prog.hazards) == 1


def test_broadcast_mask_reaches_the_singular_op():
    x = gb.input("x", (2, 3), dtype="float64")
    rowmask = gb.input("m", (2, 1), dtype="bool")
    y = gb.sum(gb.where(gb.broadcast_to(rowmask, (2, 3)), gb.log(x), 0.0))
    g = gb.grad(y, x)
    X = np.array([[1.0, 2.0, 4.0], [0.0, -1.0, 0.0]])
    M = np.array([[True], [False]])
    prog = gb.compile([x, rowmask], [g], debug=True)
    with np.errstate(all="ignore"):  # the unselected cotangent divides 0 by 0 before the mask
        got = prog(X, M)[0]
    np.testing.assert_allclose(got, [[1.0, 0.5, 0.25], [0.0, 0.0, 0.0]])
    assert len(prog.hazards) == 1


def test_unknown_batch_dim_through_a_reshape():
    x = gb.input("x", (None, 4), dtype="float64")
    s = gb.reshape(gb.sqrt(x), (-1, 2, 2))
    c = gb.reshape(x > 0, (-1, 2, 2))
    g = gb.grad(gb.sum(gb.where(c, s, 0.0)), x)
    X = np.array([[0.0, 1.0, 4.0, -2.0], [9.0, 0.0, 16.0, 1.0]])
    with np.errstate(all="ignore"):
        got = gb.compile([x], [g], debug=True)(X)[0]
        np.testing.assert_allclose(got, np.where(X > 0, 0.5 / np.sqrt(X), 0.0), rtol=1e-12)
