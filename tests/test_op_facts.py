"""Facts ops declare (view, shape-only inputs, singular inputs, effects, FLOPs) and the
passes and renderers that read them: a new op is handled right with no table to edit."""

from __future__ import annotations

import dataclasses
import inspect
from typing import ClassVar

import numpy as np
import pytest

import graphbp as gb
from graphbp.errors import GraphError
from graphbp.graph.types import TensorType
from graphbp.ops import OP_CLASSES
from graphbp.ops.base import Op, apply
from graphbp.ops.elementwise import Elementwise
from graphbp.passes import PIPELINE, PassSpec, optimize
from graphbp.passes.pipeline import check_pipeline, effect_order
from graphbp.render.classify import is_shape_op, shape_only_input
from graphbp.render.costs import flops


def test_facts_are_well_formed_on_every_op_class():
    for cls in OP_CLASSES:
        for attr in ("shape_only_inputs", "singular_inputs"):
            value = getattr(cls, attr)
            assert isinstance(value, tuple) and all(isinstance(i, int) and i >= 0 for i in value), (cls, attr)
        assert isinstance(cls.view, bool) and isinstance(cls.effectful, bool), cls
        assert not (cls.view and cls.shape_only_inputs and 0 in cls.shape_only_inputs), cls


def test_views_and_shape_only_inputs_are_read_from_the_op():
    x = gb.input("x", (None, 6), dtype="float64")
    r = gb.reshape_like(gb.reshape(x, (-1,)), x)
    assert r.op.view and is_shape_op(r) and shape_only_input(r, 1) and not shape_only_input(r, 0)
    z = gb.zeros_like(x)
    assert shape_only_input(z, 0) and not is_shape_op(z)
    assert flops(r).is_zero and flops(gb.transpose(x)).is_zero


def test_flops_come_from_the_op_and_fused_ops_price_their_parts():
    a = gb.input("a", (8, 5), dtype="float64")
    w = gb.param("w", np.ones((5, 3)))
    b = gb.param("b", np.ones(3))
    mm = a @ w
    assert flops(mm).at(1) == 2 * 5 * 8 * 3
    assert flops(gb.sum(a)).at(1) == 40  # one per element read
    fused = apply(gb.ops.MatMulBiasAct("tanh", ("matmul", "add", "tanh")), a, w, b)
    assert flops(fused) == flops(mm) + flops(mm + b) + flops(gb.tanh(mm + b))
    batch = gb.input("batch", (None, 5), dtype="float64")
    assert flops(batch @ w).terms == ((1, 2 * 5 * 3),)  # per row of the unknown batch


@dataclasses.dataclass(frozen=True)
class _Draw(Elementwise):
    """A stand-in effectful op (think: a random draw that advances a generator)."""

    name: ClassVar[str] = "draw"
    effectful: ClassVar[bool] = True

    def compute(self, x):
        return x + 1.0

    def vjp(self, node, g):
        return (g,)


def _draw(x):
    return apply(_Draw(), x)


def test_effectful_nodes_are_never_folded_merged_or_dropped():
    c = gb.constant(np.array([1.0, 2.0]))
    x = gb.input("x", (2,), dtype="float64")
    folded = _draw(c)  # all-constant operands: would be folded if it were pure
    twice = _draw(x) + _draw(x)  # equal ops on equal operands: would be merged if pure
    times_one = _draw(x) * 1.0  # x * 1 -> x is fine, but the draw must stay
    res = optimize([folded, twice, times_one], debug=True)
    drawn = [n for n in gb.toposort(res.roots) if isinstance(n.op, _Draw)]
    assert len(drawn) == 4
    assert len(effect_order(res.roots)) == 4


def test_a_rule_that_would_absorb_an_effect_does_not_apply():
    x = gb.input("x", (2,), dtype="float64")
    y = gb.negative(gb.negative(_draw(x)))  # --d -> d keeps d: allowed
    res = optimize([y], debug=True)
    assert isinstance(res.roots[0].op, _Draw)
    z = gb.log(gb.add(1.0, _draw(x)))  # log(1 + d) -> log1p(d): d is still read
    res = optimize([z], debug=True)
    assert any(isinstance(n.op, _Draw) for n in gb.toposort(res.roots))


def test_effect_order_is_kept_by_every_pass():
    x = gb.input("x", (3,), dtype="float64")
    first = _draw(x * 1.0)
    second = _draw(first * 2.0 + 0.0)
    loss = gb.sum(second * second)
    g = gb.grad(loss, x)
    before = effect_order([loss, g])
    res = optimize([loss, g], debug=True)  # debug checks the order after every pass
    assert effect_order(res.roots) == before


def test_pipeline_states_its_dependencies_and_they_hold():
    check_pipeline(PIPELINE)
    names = [s.name for s in PIPELINE]
    assert names.index("stabilize") < names.index("nan_guard") < names.index("canonicalize")
    assert all(s.why for s in PIPELINE if s.after)
    bad = (PassSpec("b", ("cse",), lambda rs, ctx: None, after=("a",)), PassSpec("a", ("cse",), lambda rs, ctx: None))
    with pytest.raises(GraphError, match="'b' must run after a"):
        check_pipeline(bad)


def test_passes_never_edit_nodes():
    x = gb.input("x", (None, 4), dtype="float64")
    w = gb.param("w", np.ones((4, 3)))
    b = gb.param("b", np.zeros(3))
    y = gb.sum(gb.log(1.0 + gb.exp(gb.tanh(x @ w + b) * 1.0)))
    gs = gb.grad(y, [w, b])
    order = gb.toposort([y, *gs])
    snapshot = [(n.op, n.inputs, n.type, n.name, n.scope, n.origin, n.provenance) for n in order]
    optimize([y, *gs], debug=True)
    assert snapshot == [(n.op, n.inputs, n.type, n.name, n.scope, n.origin, n.provenance) for n in order]


def test_rewritten_nodes_carry_the_matched_nodes_line_scope_and_provenance():
    x = gb.input("x", (3,), dtype="float64")
    with gb.scope("act"):
        y = gb.log(1.0 + x)  # -> log1p(x), built by the stability rule
    res = optimize([y], {"constant_fold": False})
    out = res.roots[0]
    assert out.op.name == "log1p" and out.scope == ("act",) and out.origin == y.origin


def test_autodiff_narrows_provenance_per_input_without_editing_nodes():
    a = gb.input("a", (3,), dtype="float64")
    b = gb.input("b", (3,), dtype="float64")
    ga, gb_ = gb.grad(gb.sum(a / b), [a, b])
    div = next(n for n in gb.toposort([ga, gb_]) if not n.provenance and n.op.name == "divide")
    recs = {(p.forward.op.name, p.rule, p.input_index) for n in gb.toposort([gb_]) for p in n.provenance
            if p.forward is div and p.rule == "vjp"}
    assert recs == {("divide", "vjp", 0), ("divide", "vjp", 1)}  # g / b is shared, made for input 0
    assert not any(p.forward is div and p.rule == "vjp" and p.input_index is None
                   for n in gb.toposort([ga, gb_]) for p in n.provenance)


def test_the_ops_passes_make_are_registered_and_saved(tmp_path):
    assert gb.ops.AddN in OP_CLASSES and gb.ops.MatMulBiasAct in OP_CLASSES
    x = gb.input("x", (None, 4), dtype="float32")
    w = gb.param("w", np.ones((4, 3), np.float32) * 0.1)
    b = gb.param("b", np.zeros(3, np.float32))
    h = gb.tanh(x @ w + b)
    loss = gb.mean(h * h) + gb.mean(gb.exp(h)) + gb.mean(gb.sin(h))
    prog = gb.compile([x], [loss, *gb.grad(loss, [w, b])])
    kinds = {type(n.op) for n in prog.order}
    assert gb.ops.MatMulBiasAct in kinds and gb.ops.AddN in kinds
    gb.save(tmp_path / "p.gbp", prog)
    again = gb.load(tmp_path / "p.gbp")
    X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    for u, v in zip(prog(X), again(X)):
        np.testing.assert_array_equal(u, v)


def test_gelu_is_primitives_built_at_the_users_line():
    """One gelu formula, in the builder: no gelu op, every node it makes points at this line,
    and the gradient its primitives' VJPs give is the textbook derivative."""
    x = gb.input("x", (7,), dtype="float64")
    X = np.linspace(-3, 3, 7)
    u = gb.gelu(x, "tanh")
    line = inspect.currentframe().f_lineno - 1
    y = gb.sum(u)
    g = gb.grad(y, x)
    made = [n for n in gb.toposort([u]) if n.inputs]
    assert {n.op.name for n in made} <= {"multiply", "add", "tanh"}
    assert {(n.origin.filename, n.origin.lineno) for n in made} == {(__file__, line)}
    ref = gb.evaluate([y, g], {x: X})
    np.testing.assert_allclose(gb.compile([x], [y, g])(X)[1], ref[1], rtol=1e-13)
    k = np.sqrt(2 / np.pi)
    t = np.tanh(k * (X + 0.044715 * X ** 3))
    np.testing.assert_allclose(ref[1], 0.5 * (1 + t) + 0.5 * X * (1 - t * t) * k * (1 + 3 * 0.044715 * X * X),
                               rtol=1e-13)


def test_default_flops_is_one_per_output_element():
    assert Op.flops(gb.ops.Exp(), [TensorType((2, 3), np.float64)], TensorType((2, 3), np.float64)).at(1) == 6


def test_every_op_database_entry_prices_itself():
    from graphbp.graph.cost import Poly

    from opdb import OPDB

    rng = np.random.default_rng(0)
    for info in OPDB:
        sample = info.samples(rng)[0]
        shapes = sample.shapes()
        nodes = [gb.input(f"a{k}", s, dtype=a.dtype) for k, (a, s) in enumerate(zip(sample.args, shapes))]
        out = info.build(*nodes, **sample.kwargs)
        for n in gb.toposort([out]):
            cost = flops(n)
            assert isinstance(cost, Poly) and all(c >= 0 for _, c in cost.terms), (info.name, n)
            if n.op.view:
                assert cost.is_zero, (info.name, n)


@dataclasses.dataclass(frozen=True)
class _Times(Elementwise):
    """``x * k``: its result dtype follows the parameter's type (int stays int)."""

    name: ClassVar[str] = "times"
    k: float

    def compute(self, x):
        return x * self.k


def test_result_dtypes_are_not_shared_by_equal_parameters_of_other_types():
    # _Times(2) == _Times(2.0) and they hash alike, but an int array times 2 stays int
    x = gb.input("x", (3,), dtype="int64")
    assert apply(_Times(2.0), x).dtype == np.float64
    assert apply(_Times(2), x).dtype == np.int64
    assert apply(_Times(2.0), x).dtype == np.float64
