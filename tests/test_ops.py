"""Op tests driven by the op database (tests/opdb.py).

For every entry and sample: forward against the NumPy reference; the optimised program
(passes, lowering, memory plan) against the reference interpreter (``gb.evaluate``); static shape/dtype of
every node (forward and gradient graph) against the computed value; the VJP against
central finite differences along a random direction (as PyTensor's ``verify_grad``); and,
for a subset, a Hessian-vector product (grad of grad) against finite differences of the
first gradient. A coverage test fails when an op class has no entry.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb
from graphbp.graph.types import TensorType, concrete_matches
from graphbp.ops.leaves import is_leaf

from opdb import EXCLUDED_FROM_COVERAGE, OPDB, OpInfo, Sample

EPS = 1e-6
CASES = [
    pytest.param(info, i, id=f"{info.name}-{i}")
    for info in OPDB
    for i in range(len(info.samples(np.random.default_rng(0))))
]


def _sample(info: OpInfo, i: int) -> Sample:
    return info.samples(np.random.default_rng(0))[i]


def _build(info: OpInfo, s: Sample):
    inputs = [gb.input(f"a{i}", shape, dtype=a.dtype) for i, (a, shape) in enumerate(zip(s.args, s.shapes()))]
    return inputs, info.build(*inputs, **s.kwargs)


def _run(inputs, outputs, args):
    return gb.compile(inputs, outputs, optimize=False)(*args)


def _check_types(nodes, values):
    for n, v in zip(nodes, values):
        assert concrete_matches(n.shape, v.shape), f"{n!r}: static shape {n.shape} vs computed {v.shape}"
        assert n.dtype == v.dtype, f"{n!r}: static dtype {n.dtype} vs computed {v.dtype}"


def _diff_inputs(info: OpInfo, s: Sample, out) -> list[int]:
    if not info.grad or out.dtype != np.float64:
        return []
    return [i for i, a in enumerate(s.args) if a.dtype == np.float64 and i not in info.nondiff]


@pytest.mark.parametrize("info, i", CASES)
def test_forward_and_static_types(info: OpInfo, i: int):
    s = _sample(info, i)
    inputs, out = _build(info, s)
    (value,) = _run(inputs, [out], s.args)
    expected = np.asarray(info.ref(*s.args, **s.kwargs))
    tol = info.rtol if value.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(value, expected, rtol=tol, atol=tol)
    assert value.shape == expected.shape
    if info.check_dtype:
        assert value.dtype == expected.dtype, f"{info.name}: {value.dtype} != NumPy's {expected.dtype}"
    _check_types([out], [value])


def _directional_fd(f, args, idx, dirs, eps=EPS):
    plus, minus = list(args), list(args)
    for i, d in zip(idx, dirs):
        plus[i] = args[i] + eps * d
        minus[i] = args[i] - eps * d
    return (f(*plus) - f(*minus)) / (2 * eps)


def _assert_close(analytic: float, numeric: float, what: str):
    tol = 1e-5 * (1 + abs(numeric))
    assert abs(analytic - numeric) <= tol, f"{what}: analytic {analytic!r} vs finite difference {numeric!r}"


@pytest.mark.parametrize("info, i", [c for c in CASES if c.values[0].grad])
def test_vjp_matches_finite_differences(info: OpInfo, i: int):
    s = _sample(info, i)
    inputs, out = _build(info, s)
    idx = _diff_inputs(info, s, out)
    if not idx:
        pytest.skip("no float64 differentiable input in this sample")
    rng = np.random.default_rng(1)
    (value,) = _run(inputs, [out], s.args)
    u = gb.constant(rng.normal(size=value.shape))
    loss = gb.sum(out * u)
    grads = gb.grad(loss, [inputs[k] for k in idx])
    graph = [n for n in gb.toposort([loss, *grads]) if not is_leaf(n) and isinstance(n.type, TensorType)]
    f = gb.compile(inputs, [loss, *grads, *graph], optimize=False)
    vals = f(*s.args)
    _check_types(graph, vals[1 + len(grads):])  # every gradient node's static type is right
    dirs = [rng.normal(size=s.args[k].shape) for k in idx]
    for k, g in zip(idx, vals[1: 1 + len(grads)]):
        assert g.shape == s.args[k].shape and g.dtype == s.args[k].dtype
    analytic = float(sum(np.sum(g * d) for g, d in zip(vals[1: 1 + len(grads)], dirs)))
    f_loss = gb.compile(inputs, [loss], optimize=False)
    numeric = float(_directional_fd(lambda *a: f_loss(*a)[0], s.args, idx, dirs))
    _assert_close(analytic, numeric, f"{info.name} {s!r}")


@pytest.mark.parametrize("info, i", [c for c in CASES if c.values[0].second_order])
def test_hessian_vector_product_matches_finite_differences(info: OpInfo, i: int):
    s = _sample(info, i)
    inputs, out = _build(info, s)
    idx = _diff_inputs(info, s, out)
    if not idx:
        pytest.skip("no float64 differentiable input in this sample")
    rng = np.random.default_rng(2)
    (value,) = _run(inputs, [out], s.args)
    loss = gb.sum(out * gb.constant(rng.normal(size=value.shape)))
    wrt = [inputs[k] for k in idx]
    grads = gb.grad(loss, wrt)
    ws = [rng.normal(size=s.args[k].shape) for k in idx]
    gw = gb.sum(gb.stack([gb.sum(g * w) for g, w in zip(grads, ws)]))  # <grad, w>
    hvp = gb.grad(gw, wrt)
    f = gb.compile(inputs, [gw, *hvp], optimize=False)
    vs = [rng.normal(size=s.args[k].shape) for k in idx]
    vals = f(*s.args)
    analytic = float(sum(np.sum(h * v) for h, v in zip(vals[1:], vs)))
    numeric = float(_directional_fd(lambda *a: f(*a)[0], s.args, idx, vs, eps=1e-5))
    _assert_close(analytic, numeric, f"{info.name} HVP {s!r}")


@pytest.mark.parametrize("info, i", CASES)
def test_optimized_program_matches_reference_interpreter(info: OpInfo, i: int):
    """Every sample compiled with the rewrite passes, lowering and memory plan gives what one
    ``op.compute`` per node gives (``gb.evaluate``), forward and, where defined, gradients."""
    s = _sample(info, i)
    inputs, out = _build(info, s)
    outs = [out]
    idx = _diff_inputs(info, s, out)
    if idx:
        weights = gb.constant(np.random.default_rng(3).normal(size=np.shape(info.ref(*s.args, **s.kwargs))))
        outs += gb.grad(gb.sum(out * weights), [inputs[k] for k in idx])
    feeds = dict(zip(inputs, s.args))
    expected = gb.evaluate(outs, feeds)
    got = gb.compile(inputs, outs, optimize=True)(*s.args)
    for e, g in zip(expected, got):
        tol = info.rtol if g.dtype == np.float64 else 1e-5
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


def test_every_op_class_has_an_opdb_entry():
    covered = {c for info in OPDB for c in info.ops}
    missing = [c.__name__ for c in gb.ops.OP_CLASSES if c not in covered and c not in EXCLUDED_FROM_COVERAGE]
    assert not missing, f"op classes without an opdb entry: {missing}"
    names = [info.name for info in OPDB]
    assert len(names) == len(set(names))


def test_builders_exist_under_gb_and_node_methods_route_to_them():
    for info in OPDB:
        # no gb builder: emitted by a VJP rule or a pass, or built through gb.distributed
        if info.name not in ("embed_slice",
                             "add_n", "matmul_bias_act", "conv_bias_act", "allreduce_mean", "allreduce_mean_overlapped",
                             "softmax_cross_entropy_probs",
                             "conv2d_weight_grad",
                             "max_pool2d_grad", "max_pool2d_gather", "avg_pool2d_grad"):
            assert callable(getattr(gb, info.name)), info.name
    x = gb.input("x", (None, 3, 4), dtype="float64")
    assert x[0].op.name == "getitem" and x.T.op.name == "transpose" and x.astype("float32").op.name == "cast"


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make, kind, words", [
    (lambda: gb.add(gb.input("a", (3,)), gb.input("b", (4,))), gb.ShapeError, ["add", "(3,)", "(4,)"]),
    (lambda: gb.concatenate([gb.input("a", (2, 3)), gb.input("b", (2, 4))], 0), gb.ShapeError,
     ["concatenate", "(2, 3)", "(2, 4)"]),
    (lambda: gb.softmax_cross_entropy(gb.input("z", (None, 5)), gb.input("t", (None, 2), dtype="int64")),
     gb.ShapeError, ["softmax_cross_entropy", "(?, 5)", "(?, 2)"]),
    (lambda: gb.take(gb.input("a", (4, 3)), gb.input("i", (2,))), gb.DTypeError, ["take", "float32(2,)"]),
    (lambda: gb.max(gb.input("a", (4, 3)), axis=2), gb.ShapeError, ["(4, 3)", "axis 2"]),
    (lambda: gb.one_hot(gb.input("a", (4,)), 3), gb.DTypeError, ["one_hot", "float32(4,)"]),
    (lambda: gb.getitem(gb.input("a", (4, 3)), (0, 1, 2)), gb.ShapeError, ["getitem", "(4, 3)", "too many"]),
    (lambda: gb.where(gb.input("c", (2,)), 1.0, 0.0), gb.DTypeError, ["where", "bool"]),
    (lambda: gb.split(gb.input("a", (5, 2)), 2, 0), gb.ShapeError, ["split", "(5, 2)"]),
])
def test_build_errors_name_op_operands_and_line(make, kind, words):
    with pytest.raises(kind) as info:
        make()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    first = make.__code__.co_firstlineno  # the user's line is inside this lambda
    assert any(f"test_ops.py:{n} " in msg for n in range(first, first + 3)), msg


def test_advanced_indexing_error_points_to_take():
    x = gb.input("x", (4, 3))
    with pytest.raises(gb.GraphError, match="gb.take"):
        x[np.array([0, 1])]  # noqa: B018
    with pytest.raises(gb.GraphError, match="gb.take"):
        x[gb.input("i", (2,), dtype="int64")]  # noqa: B018
    with pytest.raises(gb.GraphError, match="gb.take"):
        x[0, (1, 2)]  # noqa: B018 - a nested tuple is an advanced index in NumPy


# ------------------------------------------------------------------- op specifics
def test_stable_kernels_do_not_warn_for_extreme_inputs():
    x = gb.input("x", (5,), dtype="float64")
    t = gb.input("t", (), dtype="int64")
    outs = [gb.sigmoid(x), gb.softplus(x), gb.log_softmax(x), gb.softmax(x), gb.logsumexp(x),
            gb.sigmoid_binary_cross_entropy(x, gb.zeros_like(x)), gb.softmax_cross_entropy(x, t), gb.erf(x),
            gb.elu(x), gb.gelu(x, approximate="none")]
    f = gb.compile([x, t], outs, optimize=False)
    with np.errstate(all="raise"):
        vals = f(np.array([-1e4, -50.0, 0.0, 50.0, 1e4]), np.array(4))
    assert all(np.all(np.isfinite(v)) for v in vals)
    np.testing.assert_allclose(vals[0], [0, 1.9287498479639178e-22, 0.5, 1, 1], atol=1e-300)
    np.testing.assert_allclose(vals[6], 0.0, atol=1e-12)


def test_max_ties_share_the_gradient_evenly():
    x = gb.input("x", (4,), dtype="float64")
    (g,) = gb.compile([x], [gb.grad(gb.max(x), x)], optimize=False)(np.array([1.0, 3.0, 3.0, 0.0]))
    np.testing.assert_array_equal(g, [0, 0.5, 0.5, 0])


def test_prod_gradient_with_zeros():
    x = gb.input("x", (4,), dtype="float64")
    f = gb.compile([x], [gb.grad(gb.prod(x), x)], optimize=False)
    np.testing.assert_array_equal(f(np.array([2.0, 0.0, 3.0, 4.0]))[0], [0, 24, 0, 0])
    np.testing.assert_array_equal(f(np.array([2.0, 0.0, 0.0, 4.0]))[0], [0, 0, 0, 0])


def test_dropout_mask_is_a_function_of_the_key():
    x = gb.input("x", (None, 50), dtype="float64")
    key = gb.input("key", (), dtype="int64")
    y = gb.dropout(x, 0.5, key)
    f = gb.compile([x, key], [y, gb.grad(gb.sum(y), x)], optimize=False)
    X = np.ones((4, 50))
    a, ga = f(X, np.array(1))
    b, _ = f(X, np.array(1))
    c, _ = f(X, np.array(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(ga, a)  # gradient goes through the same mask
    assert set(np.unique(a)) <= {0.0, 2.0} and 0.3 < np.mean(a == 0) < 0.7


def test_softmax_cross_entropy_gradient_reaches_soft_labels():
    z = gb.input("z", (3, 4), dtype="float64")
    p = gb.input("p", (3, 4), dtype="float64")
    loss = gb.sum(gb.softmax_cross_entropy(z, p))
    gz, gp = gb.grad(loss, [z, p])
    P = np.full((3, 4), 0.25)
    _, vp = gb.compile([z, p], [gz, gp], optimize=False)(np.zeros((3, 4)), P)
    np.testing.assert_allclose(vp, np.log(4), rtol=1e-15)  # -log_softmax(0) over 4 classes


def test_var_and_mean_with_unknown_dims():
    x = gb.input("x", (None, None), dtype="float64")
    v = gb.var(x, axis=0)
    f = gb.compile([x], [v, gb.grad(gb.sum(v), x)], optimize=False)
    X = np.random.default_rng(0).normal(size=(5, 3))
    val, g = f(X)
    np.testing.assert_allclose(val, X.var(0))
    np.testing.assert_allclose(g, 2 * (X - X.mean(0)) / 5)


def test_erf_matches_math_erf_densely():
    import math

    grid = np.linspace(-7, 7, 20001)
    x = gb.input("x", (None,), dtype="float64")
    (out,) = gb.compile([x], [gb.erf(x)], optimize=False)(grid)
    ref = np.array([math.erf(v) for v in grid])
    assert np.max(np.abs(out - ref) / np.maximum(np.abs(ref), 1e-300)) < 1e-15


def test_op_reference_is_generated_from_the_op_classes():
    """docs/ops.md must equal what docs/gen_ops.py generates now (regenerate when adding ops)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "docs" / "gen_ops.py"
    spec = importlib.util.spec_from_file_location("gen_ops", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for cls in gb.ops.OP_CLASSES:
        if cls.differentiable and cls not in EXCLUDED_FROM_COVERAGE:
            assert cls.vjp_formula, f"{cls.__name__} has no vjp_formula for the op reference"
    assert gen.OUT.read_text() == gen.generate(), "docs/ops.md is stale: run python docs/gen_ops.py"



@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_add_many_rows_sums_like_add_at(axis):
    """An embedding-sized scatter_add (many indices, rows of several elements) takes the
    sorted path and sums repeated and negative indices like ``np.add.at``; an index out of
    range still raises NumPy's IndexError."""
    from graphbp.ops.indexing import ScatterAdd, _add_sorted

    rng = np.random.default_rng(0)
    idx = rng.integers(-5, 5, (10, 12))
    shape = (5, 8, 3) if axis == 0 else (3, 5, 8)
    g = rng.standard_normal(shape[:axis] + idx.shape + shape[axis + 1:])
    gm = np.moveaxis(g, (axis, axis + 1), (0, 1))
    want = np.zeros(shape)
    np.add.at(np.moveaxis(want, axis, 0), idx, gm)
    assert _add_sorted(np.moveaxis(np.zeros(shape), axis, 0), idx, gm)
    np.testing.assert_allclose(ScatterAdd(axis, shape).compute(g, idx), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(IndexError):
        ScatterAdd(axis, shape).compute(g, np.where(idx == 0, 5, idx))
    assert not _add_sorted(np.zeros((5, 1)), idx, np.ones((10, 12, 1)))  # one element per index: add.at
