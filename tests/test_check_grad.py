"""gb.check_grad: passes on correct rules, and names the op whose rule is wrong."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops.base import apply
from graphbp.ops.elementwise import Multiply, Tanh

rng = np.random.default_rng(0)
X = rng.normal(size=(4, 3))


def test_correct_gradients_pass_for_function_tuple_and_program():
    r = gb.check_grad(lambda x: gb.sum(gb.tanh(x) * gb.exp(x) / (1 + x * x)), [X])
    assert r.ok and len(r.comparisons) == 1 and not r.culprits
    x = gb.input("x", (None, 3))  # float32 graph: checked in float64 on a copy
    W = gb.param("W", rng.normal(size=(3, 2)).astype(np.float32))
    t = gb.input("t", (None,), dtype="int64")
    loss = gb.mean(gb.softmax_cross_entropy(gb.relu(x @ W) + gb.sigmoid(x @ W), t))
    before = W.value.copy()
    r = gb.check_grad((loss, [W]), {"x": X.astype(np.float32), "t": np.array([0, 1, 1, 0])})
    assert r.ok and W.value.tobytes() == before.tobytes()  # the caller's values are untouched
    prog = gb.compile([x, t], [loss])
    assert gb.check_grad(prog, [X.astype(np.float32), np.array([1, 0, 0, 1])]).ok


def test_non_scalar_outputs_are_contracted_with_a_random_cotangent():
    assert gb.check_grad(lambda a, b: gb.matmul(a, b), [X, rng.normal(size=(3, 5))]).ok


@dataclasses.dataclass(frozen=True)
class WrongTanh(Tanh):
    def vjp(self, node, g):
        return (g * (1 - node),)  # should be 1 - node**2


@dataclasses.dataclass(frozen=True)
class WrongMultiply(Multiply):
    def vjp(self, node, g):
        x, y = node.inputs
        return g * y, g * y  # second cotangent should be g * x


def test_a_broken_rule_is_found_and_named_with_its_user_line():
    def f(x):
        h = gb.exp(x) * 0.5
        z = apply(WrongTanh(), h)  # the culprit
        return gb.sum(gb.sin(z) ** 2)

    with pytest.raises(gb.GradCheckError) as info:
        gb.check_grad(f, [X])
    result = info.value.result
    assert not result.ok and [type(c.node.op) for c in result.culprits] == [WrongTanh]
    culprit = result.culprits[0]
    assert culprit.node.origin.filename.endswith("test_check_grad.py") and culprit.input_index == 0
    msg = str(info.value)
    assert "the wrong rule is in tanh" in msg and f"test_check_grad.py:{culprit.node.origin.lineno}" in msg


def test_the_wrong_input_of_a_binary_rule_is_named():
    def f(a, b):
        return gb.sum(gb.tanh(apply(WrongMultiply(), a, b)))

    result = gb.check_grad(f, [X, rng.normal(size=(4, 3))], raise_on_failure=False)
    assert not result.ok
    assert [(type(c.node.op), c.input_index) for c in result.culprits] == [(WrongMultiply, 1)]
    assert "MISMATCH d/d x1" in result.report() and "ok d/d x0" in result.report()


def test_program_with_a_batch_dim_and_non_scalar_output():
    x = gb.input("x", (None, 3), dtype="float64")
    W = gb.param("W", rng.normal(size=(3, 2)))
    prog = gb.compile([x], [gb.softplus(x @ W)])
    result = gb.check_grad(prog, [X])
    assert result.ok and [c.what for c in result.comparisons] == ["d/d x", "d/d W"]


@dataclasses.dataclass(frozen=True)
class TargetBlindBCE(gb.ops.SigmoidBinaryCrossEntropy):
    """The pre-fix rule: no gradient into the (float) targets."""

    nondiff_inputs = (1,)

    def vjp(self, node, g):
        z, t = node.inputs
        return g * (gb.sigmoid(z) - t), None


def test_bisection_covers_inputs_a_rule_declares_non_differentiable():
    z = gb.input("z", (3,), dtype="float64")
    t = gb.input("t", (3,), dtype="float64")
    loss = gb.sum(apply(TargetBlindBCE(), z, t))
    with pytest.raises(gb.GradCheckError) as info:
        gb.check_grad((loss, [z, t]), [np.array([1.0, -2.0, 0.5]), np.array([0.2, 0.7, 1.0])])
    culprits = info.value.result.culprits
    assert [(type(c.node.op), c.input_index) for c in culprits] == [(TargetBlindBCE, 1)]
    assert "input 1" in str(info.value) and "non-differentiable" in str(info.value)


def test_fused_losses_pass_check_grad_with_respect_to_their_targets():
    z, t = np.array([1.0, -2.0, 0.5]), np.array([0.2, 0.7, 1.0])
    assert gb.check_grad(lambda z, t: gb.sum(gb.sigmoid_binary_cross_entropy(z, t)), [z, t]).ok
