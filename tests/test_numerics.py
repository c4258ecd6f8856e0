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


# --- issue 10, items 3 and 4 -------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the NaN is the subject
def test_operand_ranges_are_read_before_the_buffer_is_reused_in_place():
    x = gb.input("x", (2,))
    loss = gb.sum(gb.log(x * 3.0 + 1.0))
    with pytest.raises(gb.NumericsError) as info:
        gb.compile([x], [loss], check_numerics=True)(np.array([-1.0, 1.0], np.float32))
    msg = str(info.value)
    assert "in [-3, 3]" in msg and "nan, nan" not in msg  # log1p's operand x*3, read before it is overwritten


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the NaN is the subject
def test_an_op_made_by_a_rewrite_names_the_user_op_it_came_from():
    x = gb.input("x", (2,))
    loss = gb.sum(gb.log(x * 3.0 + 1.0))
    with pytest.raises(gb.NumericsError) as info:
        gb.compile([x], [loss], check_numerics=True)(np.array([-1.0, 1.0], np.float32))
    msg = str(info.value)
    assert "log1p" in msg and "made by the rewrite" in msg and "from your log" in msg


def _guarded_sqrt():
    z = gb.input("z", (2,), dtype="float64")
    y = gb.sum(gb.where(z > 0, gb.sqrt(z), 0.0))
    return z, y, gb.grad(y, z)


def test_values_a_where_guard_discards_do_not_trip_the_check():
    z, y, g = _guarded_sqrt()
    Z = np.array([4.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no RuntimeWarning pointing at generated code
        plain = gb.compile([z], [y, g])(Z)
        checked = gb.compile([z], [y, g], check_numerics=True)(Z)
        (only_grad,) = gb.compile([z], [g], check_numerics=True)(Z)
    np.testing.assert_array_equal(checked[1], [0.25, 0.0])
    np.testing.assert_array_equal(plain[1], checked[1])
    np.testing.assert_array_equal(only_grad, [0.25, 0.0])


def test_the_untaken_forward_branch_does_not_trip_the_check():
    z = gb.input("z", (2,), dtype="float64")
    y = gb.sum(gb.where(z > 0, gb.log(z), 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, grad = gb.compile([z], [y, gb.grad(y, z)], check_numerics=True)(np.array([4.0, -1.0]))
    assert out == np.log(4.0) and list(grad) == [0.25, 0.0]


def test_a_guarded_value_that_is_taken_still_trips_the_check_at_its_op():
    z = gb.input("z", (2,), dtype="float64")
    y = gb.sum(gb.where(z > -5, gb.log(z), 0.0))  # the guard keeps log(-1)
    with pytest.raises(gb.NumericsError) as info:
        gb.compile([z], [y], check_numerics=True)(np.array([4.0, -1.0]))
    assert "produced by log" in str(info.value) and "where" in str(info.value)


def test_multi_output_nodes_are_checked_output_by_output():
    """A scan, a cond and the loss-and-probabilities node of a softmax cross-entropy give
    several outputs of different shapes: each is checked, and a non-finite one is named."""
    x = gb.input("x", (4, 3), "float64")
    t = gb.input("t", (4,), "int64")
    w = gb.param("w", np.ones((3, 1024)))  # logits large enough to share their softmax
    hT, ys = gb.scan(lambda h, x_t: (gb.tanh(h + x_t), h * 2.0), gb.constant(np.zeros(3)), x)
    y2, z = gb.cond(gb.greater(gb.sum(x), 0.0), lambda a: (a * 2.0, gb.sum(a)), lambda a: (a, gb.sum(a)), x)
    loss = gb.mean(gb.softmax_cross_entropy(x @ w, t))
    (gw,) = gb.grad(loss, [w])
    prog = gb.compile([x, t], [hT, ys, y2, z, loss, gw], check_numerics=True)
    assert "softmax_cross_entropy_probs" in {n.op.name for n in prog.order}
    got = prog(np.ones((4, 3)), np.array([0, 1, 2, 0]))
    assert np.isfinite(got[4]) and got[5].shape == (3, 1024)
    assert [np.shape(v) for v in got[:4]] == [(3,), (4, 3), (4, 3), ()]
    bad = np.ones((4, 3))
    bad[1, 1] = np.inf
    with pytest.raises(gb.NumericsError):
        prog(bad, np.array([0, 1, 2, 0]))
