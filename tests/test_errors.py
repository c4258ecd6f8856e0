"""Errors point at the cause: op, operands (shape, dtype), the user's line; feeds are checked
before any work, so a bad batch never half-updates parameters."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops.base import apply
from graphbp.ops.elementwise import Elementwise, Exp

HERE = "test_errors.py"


def test_build_errors_name_op_operands_and_user_line():
    x = gb.input("x", (None, 4))
    w = gb.param("w", np.zeros((5, 2), np.float32))
    with pytest.raises(gb.ShapeError) as info:
        x @ w  # noqa: B018
    msg = str(info.value)
    assert msg.startswith("matmul:") and "x: float32(?, 4)" in msg and "w: float32(5, 2)" in msg
    assert f"{HERE}:" in msg and "test_build_errors_name_op_operands_and_user_line" in msg
    with pytest.raises(gb.ShapeError, match=r"add: operands do not broadcast[\s\S]*float32\(3,\)"):
        x + gb.param("b", np.zeros(3, np.float32))
    with pytest.raises(gb.DTypeError, match=r"where: condition must be bool[\s\S]*" + HERE):
        gb.where(x, x, x)
    with pytest.raises(gb.ShapeError, match=r"reshape[\s\S]*" + HERE):
        gb.reshape(gb.param("m", np.zeros((2, 3))), (4, 2))
    assert issubclass(gb.ShapeError, ValueError) and issubclass(gb.DTypeError, TypeError)


@dataclasses.dataclass(frozen=True)
class BadShapeRuleExp(Exp):
    """exp whose gradient rule builds a node of the wrong shape."""

    def vjp(self, node, g):
        return (gb.reshape(g, (7,)),)


def test_error_while_deriving_a_gradient_names_the_forward_op_first():
    x = gb.input("x", (2, 3), dtype="float64")
    y = apply(BadShapeRuleExp(), x)  # the user's line of the forward op
    line = y.origin.lineno
    with pytest.raises(gb.ShapeError) as info:
        gb.grad(gb.sum(y), x)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("while deriving the gradient of exp built at") and f"{HERE}:{line}" in lines[0]
    assert lines[1].startswith("reshape: cannot reshape")
    assert any("generated gradient node: reshape (vjp of exp" in ln for ln in lines)


@dataclasses.dataclass(frozen=True)
class Explode(Elementwise):
    name: ClassVar[str] = "explode"

    def infer(self, *types):
        return types[0]

    def compute(self, x):
        raise IndexError("kernel bug")


@dataclasses.dataclass(frozen=True)
class ExpWithExplodingRule(Exp):
    def vjp(self, node, g):
        return (apply(Explode(), g),)


def test_error_while_running_a_gradient_names_the_forward_op_and_updates_nothing():
    x = gb.input("x", (None, 3), dtype="float64")
    w = gb.param("w", np.ones(3))
    y = apply(ExpWithExplodingRule(), x * w)
    loss = gb.sum(y)
    g = gb.grad(loss, w)
    prog = gb.compile([x], [loss], updates=[(w, w - 0.1 * g)])
    with pytest.raises(gb.GraphError) as info:
        prog(np.ones((2, 3)))
    msg = str(info.value)
    assert "gradient of exp" in msg and HERE in msg and "explode" in msg and "kernel bug" in msg
    assert (w.value == 1).all()


@pytest.fixture()
def step():
    x = gb.input("x", (None, 3))
    t = gb.input("t", (None,), dtype="int64")
    W = gb.param("W", np.ones((3, 4), np.float32))
    loss = gb.mean(gb.softmax_cross_entropy(x @ W, t))
    opt = gb.optim.SGD(0.5, momentum=0.9)
    return gb.compile([x, t], [loss], updates=opt.updates(loss, [W])), W, opt


X = np.ones((5, 3), np.float32)
T = np.zeros(5, np.int64)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((X,), {}, "missing feed"),
        ((X, T, T), {}, "takes 2 inputs"),
        ((X, T), {"z": T}, "unexpected feed 'z'"),
        ((X,), {"x": X}, "fed twice"),
        ((X[:, :2], T), {}, r"expected shape \(\?, 3\), got \(5, 2\)"),
        ((X[0], T), {}, r"expected shape \(\?, 3\), got \(3,\)"),
        ((X.astype(np.float64), T), {}, "expected dtype float32, got float64"),
        ((X, T.astype(np.float32)), {}, "expected dtype int64, got float32"),
        ((X.tolist(), T), {}, "expected a NumPy array of float32.*got a list"),
        (("abc", T), {}, "got a str"),
        ((X.astype(object), T), {}, "not numeric"),
        ((X, T[:4]), {}, r"softmax_cross_entropy[\s\S]*feeds: x\(5, 3\), t\(4,\)"),
    ],
)
def test_bad_feeds_raise_feed_error_before_any_update(step, args, kwargs, message):
    prog, W, opt = step
    before, state = W.value.copy(), opt.state()
    with pytest.raises(gb.FeedError, match=message) as info:
        prog(*args, **kwargs)
    if "feeds:" not in message and "fed twice" not in message and "takes" not in message:
        assert "x" in str(info.value) or "t" in str(info.value)
    assert W.value.tobytes() == before.tobytes()
    assert all(opt.state()[k].tobytes() == v.tobytes() for k, v in state.items())


def test_lossless_casts_are_automatic_and_documented(step):
    prog, W, _ = step
    a = prog(X.astype(np.float16), T.astype(np.int32))  # float16 -> float32, int32 -> int64: exact
    assert np.isfinite(a[0])
    k = gb.input("k", (), dtype="int64")
    p = gb.compile([k], [k * 2])
    assert p(7)[0] == 14 and p(np.int8(3))[0] == 6
    with pytest.raises(gb.FeedError, match="not exactly representable"):
        p(7.5)
    with pytest.raises(gb.FeedError, match="not exactly representable"):
        p(True)


@dataclasses.dataclass(frozen=True)
class RankDroppingExp(Exp):
    """exp whose rule returns a cotangent with fewer dims than its operand."""

    def vjp(self, node, g):
        return (gb.sum(g, axis=0),)


def test_a_rule_returning_the_wrong_rank_is_reported_against_the_forward_op():
    x = gb.input("x", (2, 3), dtype="float64")
    y = apply(RankDroppingExp(), x)
    with pytest.raises(gb.ShapeError) as info:
        gb.grad(gb.sum(y), x)
    first, second = str(info.value).splitlines()[:2]
    assert first.startswith("while deriving the gradient of exp") and f"{HERE}:{y.origin.lineno}" in first
    assert "fewer dims than its operand" in second and "unbroadcast to input 0 of exp" in second


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_a_bad_dropout_rate_is_a_value_error_not_a_shape_error(rate):
    x = gb.input("x", (3,))
    with pytest.raises(gb.GraphError, match="rate must be in") as info:
        gb.dropout(x, rate, key=0)
    assert not isinstance(info.value, gb.ShapeError) and isinstance(info.value, ValueError)
    assert "test_errors.py" in str(info.value)  # the user's line
