"""One dtype policy, in the spirit of JAX's weak types (issue 10, item 7).

Python scalars and lists adopt the dtype of the tensor they meet; explicit NumPy arrays
promote by NumPy's rules, with a warning when that turns a float32 graph into float64;
values entering a typed slot (feeds, parameter assignment, parameter updates) are cast
only when the cast is lossless.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphbp as gb


def _x():
    return gb.input("x", (4,))  # float32


@pytest.mark.parametrize("weak", [[1, 2, 3, 4], [0.5, 1.5, 2.5, 3.5], (1, 2.0, 3, 4), 2, 2.5, True])
def test_python_scalars_and_lists_adopt_the_tensor_dtype(weak):
    x = _x()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for y in (x + weak, weak * x, gb.maximum(x, weak), gb.where(x > 0, x, weak), gb.clip(x, weak, 9)):
            assert y.dtype == np.float32, y


def test_lists_in_sequences_adopt_the_first_tensors_dtype():
    x = _x()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gb.concatenate([x, [1.0, 2.0]]).dtype == np.float32
        assert gb.stack([x, [1, 2, 3, 4]]).dtype == np.float32


def test_weak_floats_meeting_integers_become_float_as_in_numpy():
    k = gb.input("k", (3,), dtype="int32")
    assert (k + [1, 2, 3]).dtype == np.int32
    assert (k * [0.5, 1, 2]).dtype == np.float64


def test_an_explicit_float64_array_promotes_with_a_warning_at_the_users_line():
    x = _x()
    with pytest.warns(gb.DTypePromotionWarning, match="float64") as record:
        y = x + np.arange(4.0)
    assert y.dtype == np.float64
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (x + np.arange(4, dtype=np.float32)).dtype == np.float32  # same dtype: silent
        d = gb.input("d", (4,), dtype="float64")
        assert (d + np.arange(4.0)).dtype == np.float64  # a float64 graph: nothing to warn about


def test_parameter_assignment_follows_the_feed_rule():
    W = gb.param("W", np.zeros(3, np.float32))
    W.value = np.array([1, 2, 3], np.float16)  # lossless: cast
    assert W.value.dtype == np.float32 and list(W.value) == [1, 2, 3]
    with pytest.raises(gb.DTypeError, match=r"astype\(np.float32\)"):
        W.value = np.array([1.0, 2.0, 3.0])  # float64 into float32 loses precision: refused
    x = gb.input("x", (3,))
    with pytest.raises(gb.FeedError, match=r"astype\(np.float32\)"):
        gb.compile([x], [x * 2])(np.zeros(3))


def test_a_parameter_update_must_cast_losslessly():
    W = gb.param("W", np.zeros(3, np.float32))
    with pytest.raises(gb.DTypeError, match="W"):
        gb.compile([], [], updates=[(W, gb.cast(W, "float64") + 1)])
