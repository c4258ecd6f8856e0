"""A parameter the loss does not depend on is reported (issue 10, item 6)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphbp as gb


def _model():
    x = gb.input("x", (None, 3))
    W = gb.param("W", np.ones((3, 2), np.float32))
    stray = gb.param("stray", np.ones((2,), np.float32))  # never used by the loss
    return x, W, stray, gb.mean(x @ W)


def test_grad_warns_once_naming_the_parameter_and_the_users_line():
    x, W, stray, loss = _model()
    with pytest.warns(gb.UnusedParameterWarning, match="'stray'") as record:
        gb.grad(loss, [W, stray])
    assert len(record) == 1
    w = record[0]
    assert w.filename == __file__  # points at the call above, not at graphbp
    assert "test_unused_params.py" in str(w.message)  # and names where the param was made


def test_unused_can_raise_or_be_allowed():
    x, W, stray, loss = _model()
    with pytest.raises(gb.GraphError, match="'stray'"):
        gb.grad(loss, [W, stray], unused="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (g,) = gb.grad(loss, [stray], unused="ignore")
    assert g.shape == (2,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gb.grad(loss, [W])  # used parameters never warn


def test_optimiser_updates_warn_and_pass_the_option_through():
    x, W, stray, loss = _model()
    opt = gb.optim.SGD(0.1)
    with pytest.warns(gb.UnusedParameterWarning, match="'stray'"):
        opt.updates(loss, [W, stray])
    with pytest.raises(gb.GraphError, match="'stray'"):
        gb.optim.SGD(0.1).updates(loss, [W, stray], unused="raise")
