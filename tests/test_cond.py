"""The subgraph IR through its first higher-order op, ``gb.cond``.

Forward values and first/second-order gradients of every branch shape live in the op
database (tests/opdb.py, entry ``cond``). Here: closure conversion, multi-output VJPs with
symbolic zeros, branch type errors at the user's line, passes inside bodies, CSE of equal
bodies, rendering, the file format, and optimised against unoptimised programs.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb
from graphbp.graph.subgraph import Subgraph, trace
from graphbp.graph.traverse import toposort_nested
from graphbp.graph.types import TensorType, TupleType
from graphbp.io.format import from_document, to_document
from graphbp.ops.control import Cond, TupleGet
from graphbp.ops.leaves import Constant, Input

RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 3))
W0 = RNG.normal(size=(3, 3))


def _model():
    x = gb.input("x", (None, 3), "float64")
    p = gb.input("p", (), "bool")
    W = gb.param("W", W0)
    a, b = gb.cond(p, lambda u: (gb.tanh(u @ W), gb.sin(u)), lambda u: (u * 2.0, u - 1.0), x)
    loss = gb.sum(a * b) + gb.mean(a)
    return x, p, W, a, b, loss


def _cond_node(node):
    """The last cond node ``node`` reaches (for a gradient: the VJP cond)."""
    return [n for n in gb.toposort([node]) if isinstance(n.op, Cond)][-1]


def test_bodies_are_closed_and_captured_nodes_become_operands():
    x, p, W, a, b, loss = _model()
    c = _cond_node(a)
    assert c.inputs == (p, x, W)  # W is read inside the true branch only: an operand of both
    assert isinstance(c.type, TupleType) and [t.shape for t in c.type.items] == [(None, 3), (None, 3)]
    for body in c.op.subgraphs():
        assert len(body.inputs) == 2
        for n in body.nodes():  # a body never reaches outside itself
            if not n.inputs:
                assert n in body.inputs or isinstance(n.op, (Constant, gb.ops.Full))
        assert W not in body.nodes() and x not in body.nodes()
    assert isinstance(a.op, TupleGet) and a.op.index == 0 and a.inputs == (c,)


def test_work_on_outside_values_only_is_hoisted_out_of_the_body():
    x = gb.input("x", (3,), "float64")
    W = gb.param("W", W0)
    y = gb.cond(gb.constant(True), lambda u: W.T @ u, lambda u: u, x)
    c = _cond_node(y)
    hoisted = c.inputs[-1]
    assert hoisted.op.name == "transpose" and hoisted.inputs == (W,)
    assert [n.op.name for n in c.op.true_body.nodes()[2:]] == ["matmul"]


def test_gradients_flow_into_captured_parameters_and_grad_of_grad_works():
    x, p, W, a, b, loss = _model()
    gx, gW = gb.grad(loss, [x, W])
    f = gb.compile([x, p], [loss, gx, gW])
    for pred in (True, False):
        lv, gxv, gWv = f(X, np.array(pred))
        eps = 1e-6
        d = RNG.normal(size=W0.shape)
        f_loss = gb.compile([x, p], [loss])
        W.value = W0 + eps * d
        up = f_loss(X, np.array(pred))[0]
        W.value = W0 - eps * d
        down = f_loss(X, np.array(pred))[0]
        W.value = W0
        assert np.isclose(np.sum(gWv * d), (up - down) / (2 * eps), rtol=1e-5, atol=1e-8)
        if not pred:
            assert not gWv.any()  # the false branch does not read W
    hvp = gb.grad(gb.sum(gx * gx), x)  # the VJP cond is differentiated again
    assert sum(isinstance(n.op, Cond) for n in gb.toposort([hvp])) >= 3
    h = gb.compile([x, p], [hvp])(X, np.array(True))[0]
    assert h.shape == X.shape and np.isfinite(h).all()


def test_an_unused_output_gets_a_symbolic_zero_not_an_array():
    x, p, W, a, b, loss = _model()
    (gx,) = gb.grad(gb.sum(a), [x])
    back = _cond_node(gx)  # the VJP cond: pred, 2 operands (x, W), one cotangent (for a only)
    assert len(back.inputs) == 1 + 2 + 1
    assert back.op.true_body.in_types[-1] == a.type
    both = _cond_node(gb.grad(gb.sum(a) + gb.sum(b), x))
    assert len(both.inputs) == 1 + 2 + 2


@pytest.mark.parametrize("false_fn, kind, words", [
    (lambda u: u[:2], gb.ShapeError, ["float64(3,)", "float64(2,)"]),
    (lambda u: gb.cast(u, "float32"), gb.DTypeError, ["float64(3,)", "float32(3,)"]),
    (lambda u: (u, u), gb.ShapeError, ["one node", "a tuple of 2"]),
])
def test_mismatched_branches_name_both_and_the_users_line(false_fn, kind, words):
    x = gb.input("x", (3,), "float64")
    with pytest.raises(kind) as err:
        gb.cond(gb.constant(True), lambda u: u * 2.0, false_fn, x)
    msg = str(err.value)
    for w in words:
        assert w in msg
    assert "test_cond.py" in msg and "true branch" in msg and "false branch" in msg


def test_tuple_length_mismatch_and_bad_pred_are_typed_errors():
    x = gb.input("x", (3,), "float64")
    with pytest.raises(gb.ShapeError, match="true branch returns 2 values, the false branch 1"):
        gb.cond(gb.constant(True), lambda u: (u, u), lambda u: (u,), x)
    with pytest.raises(gb.DTypeError, match="pred must be a bool scalar"):
        gb.cond(gb.constant(1.0), lambda u: u, lambda u: u, x)
    with pytest.raises(gb.DTypeError, match="pred must be a bool scalar"):
        gb.cond(gb.constant([True, False]), lambda u: u, lambda u: u, x)


def test_subgraphs_compare_by_structure_and_print():
    t = [TensorType((3,), "float64")]
    one, _, _ = trace(lambda u: gb.exp(u) * 2.0, t)
    two, _, _ = trace(lambda u: gb.exp(u) * 2.0, t)
    other, _, _ = trace(lambda u: gb.exp(u) * 3.0, t)
    assert one == two and hash(one) == hash(two) and one is not two
    assert one != other
    text = one.format()
    assert "exp(arg0)" in text and "return" in text
    assert repr(one) == "Subgraph(1 in, 1 out, 3 nodes)"


def test_rules_run_inside_bodies_and_cse_merges_equal_conds():
    x = gb.input("x", (3,), "float64")
    p = gb.input("p", (), "bool")
    branch = (lambda u: gb.exp(u) + gb.exp(u), lambda u: u * 1.0 + 0.0)
    y1 = gb.cond(p, *branch, x)
    y2 = gb.cond(p, *branch, x)  # traced again: equal bodies, different node objects
    f = gb.compile([x, p], [y1 + y2])
    rules = {e.rule for e in f.rewrite_log}
    assert {"mul_one", "add_zero"} <= rules  # algebraic rules fired in the false branch
    conds = [n for n in f.order if isinstance(n.op, Cond)]
    assert len(conds) == 1  # CSE merged the two cond nodes
    yes, no = conds[0].op.subgraphs()
    assert [n.op.name for n in yes.nodes()[1:]] == ["exp", "add"]  # the two exps merged inside
    assert no.outputs == no.inputs  # u * 1 + 0 is u
    xv = RNG.normal(size=3)
    unopt = gb.compile([x, p], [y1 + y2], optimize=False)
    for pred in (True, False):
        np.testing.assert_allclose(f(xv, np.array(pred))[0], unopt(xv, np.array(pred))[0], rtol=1e-12)


def test_optimized_unoptimized_and_reference_agree_with_gradients():
    x, p, W, a, b, loss = _model()
    gx, gW = gb.grad(loss, [x, W])
    outs = [loss, a, b, gx, gW]
    opt = gb.compile([x, p], outs)
    raw = gb.compile([x, p], outs, optimize=False)
    for pred in (True, False):
        ref = gb.evaluate(outs, {x: X, p: np.array(pred)})
        for o, r, e in zip(opt(X, np.array(pred)), raw(X, np.array(pred)), ref):
            np.testing.assert_allclose(o, e, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(r, e, rtol=1e-10, atol=1e-12)
    opt.memory_plan()  # tuple values and their projections are planned


def test_nested_cond_and_nested_traversal():
    x = gb.input("x", (3,), "float64")
    p = gb.input("p", (), "bool")
    q = gb.input("q", (), "bool")
    y = gb.cond(p, lambda u: gb.cond(q, lambda v: v * 3.0, lambda v: gb.exp(v), u), lambda u: -u, x)
    g = gb.grad(gb.sum(y * y), x)
    f = gb.compile([x, p, q], [y, g])
    xv = RNG.normal(size=3)
    for pv, qv, fn in ((True, True, lambda v: 3 * v), (True, False, np.exp), (False, True, np.negative)):
        yv, gv = f(xv, np.array(pv), np.array(qv))
        np.testing.assert_allclose(yv, fn(xv), rtol=1e-12)
    nested = toposort_nested([y])
    inner = [n for n in nested if isinstance(n.op, Cond)]
    assert len(inner) == 2 and nested.index(inner[0]) < nested.index(inner[1])
    assert len(nested) == len(set(nested))


def test_bodies_draw_as_clusters_deterministically():
    x, p, W, a, b, loss = _model()
    gx = gb.grad(loss, x)
    f = gb.compile([x, p], [loss, gx])
    for view in ("forward", "joint"):
        src = gb.to_dot(f, view).source
        assert src == gb.to_dot(f, view).source
        assert "cond · true body" in src and "cond · false body" in src
        assert src.count("subgraph cluster_") >= 2
    assert "cond" in f.explain()


def test_save_load_round_trip_of_program_and_graph(tmp_path):
    x, p, W, a, b, loss = _model()
    gx, gW = gb.grad(loss, [x, W])
    prog = gb.compile([x, p], [loss, gx], updates={W: W - 0.1 * gW})
    path = tmp_path / "cond.gbp"
    gb.save(path, prog)
    loaded = gb.load(path)
    for pred in (True, False, True):
        for u, v in zip(prog(X, np.array(pred)), loaded(X, np.array(pred))):
            assert u.tobytes() == v.tobytes()
    gb.save(tmp_path / "g.gbp", [a, b])
    g = gb.load(tmp_path / "g.gbp")
    assert [n.op.input_name for n in g.inputs] == ["x", "p"]  # body placeholders are not graph inputs
    c = _cond_node(g.outputs[0])
    assert c.op == _cond_node(a).op  # bodies compare equal by structure after the round trip
    doc, _ = to_document([a])
    assert doc["version"] == 2


def test_version_1_documents_still_load_and_cannot_hold_subgraphs():
    x = gb.input("x", (2,), "float64")
    doc, arrays = to_document([gb.tanh(x) * 2.0])
    doc["version"] = 1
    (y,) = from_document(doc, arrays).outputs
    assert y.op.name == "multiply"
    doc, arrays = to_document(list(_model()[3:5]))
    doc["version"] = 1
    with pytest.raises(gb.GraphFormatError):
        from_document(doc, arrays)


def test_a_body_reaching_outside_is_rejected():
    x = gb.input("x", (3,), "float64")
    ph = gb.input("arg0", (3,), "float64")
    with pytest.raises(gb.GraphError, match="outside itself"):
        Subgraph((ph,), (ph * x,)).nodes()
    assert all(isinstance(n.op, Input) for n in Subgraph((ph,), (ph,)).nodes())


def test_outputs_nobody_reads_are_pruned_from_the_gradient_cond():
    x, p, W, a, b, loss = _model()
    gW = gb.grad(loss, W)  # the VJP cond computes every float operand's cotangent: x's too
    assert len(_cond_node(gW).type) == 2
    f = gb.compile([x, p], [gW])
    back = [n for n in f.order if isinstance(n.op, Cond)][-1]
    assert len(back.type) == 1 and back.type.items[0].shape == (3, 3)
    assert "prune_outputs" in {e.rule for e in f.rewrite_log}
    raw = gb.compile([x, p], [gW], optimize=False)
    for pred in (True, False):
        np.testing.assert_allclose(f(X, np.array(pred))[0], raw(X, np.array(pred))[0], rtol=1e-12)


def test_explain_lists_each_body_as_equations():
    x, p, W, a, b, loss = _model()
    text = gb.compile([x, p], [loss]).explain()
    assert "F0 cond · true body:" in text and "F0 cond · false body:" in text
    assert "= tanh(" in text and "= 2.0" in text


def test_a_multi_output_node_is_read_only_through_its_projections():
    x, p, W, a, b, loss = _model()
    with pytest.raises(gb.GraphError, match="multi-output"):
        gb.ops.apply(gb.ops.Negative(), _cond_node(a))


def test_an_effectful_op_inside_a_branch_is_refused():
    from graphbp.ops.collective import allreduce_mean

    x = gb.input("x", (3,), "float64")
    with pytest.raises(gb.GraphError, match="has effects"):
        gb.cond(gb.constant(True), lambda u: allreduce_mean(u), lambda u: u, x)


def _cond_doc():
    x, p, W, a, b, loss = _model()
    doc, arrays = to_document([a, b])
    k = next(i for i, e in enumerate(doc["nodes"]) if e["op"] == "cond")
    return doc, arrays, k


@pytest.mark.parametrize("corrupt, words", [
    (lambda d, k: d["nodes"][k]["params"]["true_body"]["subgraph"].update(outputs=[k]), "outside nodes"),
    (lambda d, k: d["nodes"][k]["params"]["true_body"]["subgraph"].update(inputs=[k - 1]), "invalid subgraph"),
    (lambda d, k: d["nodes"][k]["params"]["true_body"]["subgraph"].update(inputs=[]), "invalid subgraph"),
    (lambda d, k: d["nodes"][k]["params"]["true_body"].update(subgraph=[1, 2]), "expected a subgraph"),
    (lambda d, k: d["nodes"][k + 1].update(op="negative", params={}), "multi-output"),
])
def test_corrupt_subgraphs_are_format_errors(corrupt, words):
    doc, arrays, k = _cond_doc()
    corrupt(doc, k)
    with pytest.raises(gb.GraphFormatError, match=words):
        from_document(doc, arrays)


def test_a_loaded_body_reaching_outside_itself_is_refused():
    doc, arrays, k = _cond_doc()
    body = doc["nodes"][k]["params"]["true_body"]["subgraph"]
    x_index = doc["inputs"][0]  # the graph's own input, not a placeholder
    tanh = next(i for i, e in enumerate(doc["nodes"]) if e["op"] == "tanh")
    doc["nodes"][tanh - 1]["inputs"] = [x_index, doc["nodes"][tanh - 1]["inputs"][1]]  # matmul reads x
    assert body["inputs"][0] != x_index
    with pytest.raises(gb.GraphFormatError, match="outside itself"):
        from_document(doc, arrays)
