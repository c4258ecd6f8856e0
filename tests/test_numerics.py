"""check_numerics=True: stop at the first non-finite value, name its op, update nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphbp as gb
from graphbp.runtime import numerics

HERE = "test_numerics.py"


def _step(check: bool):
    x = gb.input("x", (None, 3), dtype="float64")
    w = gb.param("w", np.ones(3))
    h = gb.log(x * w)  # NaN for negative x
    r = gb.sqrt(gb.square(h))  # finite forward at h == 0, but d sqrt / d u = inf there
    loss = gb.sum(r)
    g = gb.grad(loss, w)
    return gb.compile([x], [loss], updates=[(w, w - 0.1 * g)], check_numerics=check), w, h, r


def test_forward_nan_names_the_op_and_user_line_and_updates_nothing():
    prog, w, h, _ = _step(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(gb.NumericsError) as info:
            prog(np.array([[1.0, -1.0, 2.0]]))
    msg = str(info.value)
    assert "first non-finite value produced by log" in msg
    assert f"{HERE}:{h.origin.lineno}" in msg and "1 nan" in msg and "(0, 1)" in msg
    assert "parameters were not updated" in msg
    assert (w.value == 1).all()


def test_backward_inf_names_gradient_node_and_forward_rule():
    prog, w, _, r = _step(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(gb.NumericsError) as info:
            prog(np.array([[1.0, 2.0, 3.0]]))  # log(1) = 0 -> sqrt'(0) = inf
    lines = str(info.value).splitlines()
    assert "backward schedule, at gradient node" in lines[0] and "vjp of sqrt" in lines[0]
    assert "gradient rule of forward op sqrt" in lines[1] and f"{HERE}:{r.origin.lineno}" in lines[1]
    assert (w.value == 1).all()


def test_off_by_default_and_clean_inputs_pass():
    prog, w, _, _ = _step(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = prog(np.array([[1.0, -1.0, 2.0]]))[0]
    assert np.isnan(loss)
    checked, w2, _, _ = _step(True)
    assert np.isfinite(checked(np.full((2, 3), 2.0))[0]) and (w2.value != 1).all()


def test_non_finite_feeds_and_parameters_are_named():
    prog, w, _, _ = _step(True)
    with pytest.raises(gb.NumericsError, match="input 'x' was fed float64\\(1, 3\\) with 1 \\+inf"):
        prog(np.array([[1.0, np.inf, 2.0]]))
    w.value[1] = np.nan
    with pytest.raises(gb.NumericsError, match="parameter 'w' holds"):
        prog(np.ones((1, 3)))


def test_fast_path_agrees_with_elementwise_check():
    big = np.full(10, np.finfo(np.float32).max, np.float32)  # the sum overflows, values are finite
    assert numerics.is_finite(big)
    assert not numerics.is_finite(np.array([1.0, np.nan]))
    assert not numerics.is_finite(np.array([np.inf, -np.inf]))
    assert numerics.is_finite(np.array([1, 2], np.int64))
