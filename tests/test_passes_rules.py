"""Each rewrite rule fires where it should and stays put where it must not."""

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops.reduce import LogSumExp
from graphbp.ops import AddN
from graphbp.passes import optimize, verify
from graphbp.passes.core import run_rules
from graphbp.passes import canonicalize, specialize, stability


def rules_fired(roots, rules, **kw):
    res = run_rules(list(roots), rules, "test", **kw)
    verify(res.roots)
    return res, [e.rule for e in res.log]


def x64(name="x", shape=(3,)):
    return gb.input(name, shape, dtype="float64")


# ------------------------------------------------------------------ algebraic
@pytest.mark.parametrize("build, rule", [
    (lambda x: x * 1.0, "mul_one"),
    (lambda x: 1.0 * x, "mul_one"),
    (lambda x: x + 0.0, "add_zero"),
    (lambda x: x - 0.0, "sub_zero"),
    (lambda x: x / 1.0, "div_one"),
    (lambda x: gb.negative(gb.negative(x)), "neg_neg"),
])
def test_identity_fires_and_returns_operand(build, rule):
    x = x64()
    res, fired = rules_fired([build(x)], canonicalize.RULES)
    assert rule in fired and res.roots[0] is x


@pytest.mark.parametrize("zero", [
    lambda x: gb.constant(np.zeros((128, 512))),  # larger than any fold or CSE limit
    lambda x: gb.zeros_like(x),
    lambda x: gb.broadcast_to(gb.constant(np.zeros((1, 512))), (128, 512)),
    lambda x: gb.transpose(gb.constant(np.zeros((512, 128)))),
])
def test_add_of_a_zero_array_of_any_size_or_form_is_the_operand(zero):
    x = x64("x", (128, 512))
    for y in (x + zero(x), zero(x) + x, x - zero(x)):
        res, fired = rules_fired([y], canonicalize.RULES)
        assert res.roots[0] is x and {"add_zero", "sub_zero"} & set(fired)


def test_add_of_an_almost_zero_array_stays():
    x = x64("x", (128, 512))
    z = np.zeros((128, 512))
    z[77, 300] = 1e-300
    nan = np.zeros((128, 512))
    nan[5, 5] = np.nan
    for c in (z, nan, -z + np.float64(0.5)):
        res, _ = rules_fired([x + gb.constant(c)], canonicalize.RULES)
        assert res.roots[0].op.name == "add"


def test_scan_weight_gradients_start_from_no_zero_add():
    """A reverse scan accumulates the gradients of loop-invariant weights from zeros; once
    ``licm`` sums them after the loop, nothing adds those zeros at run time."""
    rng = np.random.default_rng(0)
    w = gb.param("w", rng.normal(size=(64, 96)))  # 6,144 elements: past the small-constant checks
    xs = gb.input("xs", (5, 3, 64), dtype="float64")

    def step(h, x):
        h = gb.tanh(x @ w + h)
        return h, h

    _, hs = gb.scan(step, gb.constant(np.zeros((3, 96))), xs)
    (gw,) = gb.grad(gb.sum(hs * hs), [w])
    prog = gb.compile([xs], [gw])

    def zero(n):
        while n.op.name in ("broadcast_to", "reshape", "transpose") and n.inputs:
            n = n.inputs[0]
        return (n.op.name == "full" and n.op.value == 0) or (n.op.name == "constant" and not n.op.value.any())

    def zero_adds(order):
        found = []
        for n in order:
            if n.op.name in ("add", "add_n") and any(zero(i) for i in n.inputs):
                found.append(n)
            for body in n.op.subgraphs():
                found += zero_adds(body.nodes())
        return found

    assert not zero_adds(prog.order)
    x = rng.normal(size=(5, 3, 64))
    ref = gb.compile([xs], [gw], optimize=False)(x)[0]
    np.testing.assert_allclose(prog(x)[0], ref, rtol=1e-12, atol=1e-12)


def test_x_times_zero_is_not_folded():
    x = x64()
    y = x * 0.0
    res, fired = rules_fired([y], canonicalize.RULES)
    assert res.roots[0].op.name == "multiply"  # inf * 0 is NaN: folding to 0 would lie
    with np.errstate(invalid="ignore"):  # inf * 0 on purpose
        out = gb.compile([x], [y])(np.array([np.inf, 1.0, np.nan]))[0]
    assert np.isnan(out[0]) and out[1] == 0 and np.isnan(out[2])


def test_identity_that_would_change_shape_or_dtype_does_not_fire():
    x = x64()
    grown = x + np.zeros((2, 3))  # broadcasting makes it (2, 3): not x
    res, _ = rules_fired([grown], canonicalize.RULES)
    assert res.roots[0].shape == (2, 3) and res.roots[0] is not x
    i = gb.input("i", (3,), dtype="int64")
    promoted = i * np.ones((), np.float64)  # int * float is float: not i
    res, _ = rules_fired([promoted], canonicalize.RULES)
    assert res.roots[0].dtype == np.float64


def test_transpose_of_transpose_and_reshape_of_reshape():
    x = x64("x", (2, 3, 4))
    y = gb.transpose(gb.transpose(x, (1, 0, 2)), (1, 0, 2))
    res, fired = rules_fired([y], canonicalize.RULES)
    assert res.roots[0] is x and "transpose_transpose" in fired
    z = gb.transpose(gb.transpose(x, (1, 0, 2)), (0, 2, 1))
    res, _ = rules_fired([z], canonicalize.RULES)
    assert res.roots[0].op.axes == (1, 2, 0) and res.roots[0].inputs[0] is x
    r = gb.reshape(gb.reshape(x, (6, 4)), (4, 6))
    res, fired = rules_fired([r], canonicalize.RULES)
    assert "reshape_reshape" in fired and res.roots[0].inputs[0] is x
    same = gb.reshape(x, (2, 3, 4))
    assert rules_fired([same], canonicalize.RULES)[0].roots[0] is x


def test_transpose_of_a_product_is_the_product_of_the_transposes():
    """``(x^T g)^T`` (the weight gradient of ``x @ W.T``) -> ``g^T x``: one matmul in W's
    layout over two views, no transpose of the result; a product also read elsewhere stays."""
    x, g = x64("x", (5, 3)), x64("g", (5, 4))
    y = gb.transpose(x.T @ g)
    res, fired = rules_fired([y], canonicalize.RULES)
    (r,) = res.roots
    assert "transpose_matmul" in fired and r.op.name == "matmul" and r.shape == (4, 3)
    assert r.inputs[0].op.name == "transpose" and r.inputs[0].inputs[0] is g and r.inputs[1] is x
    xv, gv = np.random.default_rng(0).standard_normal((5, 3)), np.random.default_rng(1).standard_normal((5, 4))
    np.testing.assert_allclose(gb.evaluate([r], {x: xv, g: gv})[0], (xv.T @ gv).T, rtol=1e-14)
    p = x.T @ g
    res, fired = rules_fired([gb.transpose(p), p], canonicalize.RULES)
    assert "transpose_matmul" not in fired


def test_single_transpose_is_kept():
    x = x64("x", (2, 3))
    res, fired = rules_fired([x.T], canonicalize.RULES)
    assert fired == [] and res.roots[0].op.name == "transpose"


def test_squeeze_expand_cancel():
    x = x64("x", (2, 3))
    res, fired = rules_fired([gb.squeeze(gb.expand_dims(x, 1), 1)], canonicalize.RULES)
    assert res.roots[0] is x and "squeeze_expand" in fired
    lone = gb.expand_dims(x, 0)  # nothing to cancel against
    assert rules_fired([lone], canonicalize.RULES)[1] == []


def test_sum_over_broadcast_becomes_scaled_operand():
    s = x64("s", ())
    y = gb.sum(gb.broadcast_to(s, (4, 5)))
    res, fired = rules_fired([y], canonicalize.RULES)
    assert "sum_broadcast" in fired
    assert gb.compile([s], [res.roots[0]], optimize=False)(np.array(2.0))[0] == 40.0
    v = x64("v", (5,))
    partial = gb.sum(gb.broadcast_to(v, (4, 5)), axis=1)  # not over the broadcast axis
    assert "sum_broadcast" not in rules_fired([partial], canonicalize.RULES)[1]


def test_broadcast_operand_dropped_only_when_type_is_kept():
    x = x64("x", (4, 5))
    s = x64("s", ())
    y = x * gb.broadcast_to(s, (4, 5))
    res, fired = rules_fired([y], canonicalize.RULES)
    assert "broadcast_operand" in fired and res.roots[0].inputs[1] is s
    lone = gb.broadcast_to(s, (4, 5)) * s  # without the broadcast it would be a scalar
    res, fired = rules_fired([lone], canonicalize.RULES)
    assert "broadcast_operand" not in fired and res.roots[0].shape == (4, 5)


def test_cast_to_same_dtype_and_where_same_branches():
    x = x64()
    from graphbp.ops.base import apply

    c = apply(gb.ops.Cast("float64"), x)
    assert rules_fired([c], canonicalize.RULES)[0].roots[0] is x
    w = gb.where(x > 0, x, x)
    assert rules_fired([w], canonicalize.RULES)[0].roots[0] is x
    w2 = gb.where(x > 0, x, -x)
    assert rules_fired([w2], canonicalize.RULES)[0].roots[0].op.name == "where"


def test_constant_folding_small_and_not_huge():
    a = gb.constant(np.arange(3.0))
    y = gb.exp(a) * 2.0
    res, fired = rules_fired([y], canonicalize.RULES)
    assert res.roots[0].op.name == "constant"
    np.testing.assert_allclose(res.roots[0].value, np.exp(np.arange(3.0)) * 2)
    big = gb.exp(gb.constant(np.zeros(canonicalize.FOLD_LIMIT + 1)))
    assert rules_fired([big], canonicalize.RULES)[0].roots[0].op.name == "exp"


def test_cse_merges_structural_duplicates_but_not_params():
    x = x64()
    y = gb.exp(x) + gb.exp(x)
    res, fired = rules_fired([y], [], cse=True)
    assert fired.count("cse") >= 1 and res.roots[0].inputs[0] is res.roots[0].inputs[1]
    p = gb.param("p", np.ones(3))
    q = gb.param("q", np.ones(3))
    z = gb.exp(p) + gb.exp(q)  # equal values, different state
    res, _ = rules_fired([z], [], cse=True)
    assert res.roots[0].inputs[0] is not res.roots[0].inputs[1]


# ------------------------------------------------------------------ stability
def test_log1p_fires_and_is_accurate():
    x = x64()
    for y in (gb.log(1 + x), gb.log(x + 1)):
        res, fired = rules_fired([y], stability.RULES)
        assert "log1p_of_sum" in fired and res.roots[0].op.name == "log1p"
    keep = gb.log(2 + x)
    assert rules_fired([keep], stability.RULES)[1] == []
    f = gb.compile([x], [gb.log(1 + x)])
    assert f(np.array([1e-18, 0, 1]))[0][0] == pytest.approx(1e-18)


def test_log_sigmoid_becomes_negative_softplus():
    x = x64()
    res, fired = rules_fired([gb.log(gb.sigmoid(x))], stability.RULES)
    assert "log_sigmoid" in fired and res.roots[0].op.name == "negative"
    assert res.roots[0].inputs[0].op.name == "softplus"
    f = gb.compile([x], [gb.log(gb.sigmoid(x))])
    np.testing.assert_allclose(f(np.array([-800.0, 0.0, 800.0]))[0], [-800.0, np.log(0.5), 0.0], atol=1e-12)
    assert rules_fired([gb.log(gb.tanh(x))], stability.RULES)[1] == []


def test_log_sum_exp_and_log_softmax():
    x = x64("x", (2, 3))
    res, fired = rules_fired([gb.log(gb.sum(gb.exp(x), axis=1))], stability.RULES)
    assert isinstance(res.roots[0].op, LogSumExp)
    ls = gb.log(gb.exp(x) / gb.sum(gb.exp(x), axis=1, keepdims=True))
    res, fired = rules_fired([ls], stability.RULES)
    assert "log_softmax" in fired
    no_keep = gb.log(gb.sum(gb.exp(x), axis=1) + 0.0)  # not log(sum(exp)) directly
    assert "log_sum_exp" not in rules_fired([no_keep], stability.RULES)[1]


def test_unfused_softmax_cross_entropy_fuses():
    x = x64("x", (2, 3))
    t = x64("t", (2, 3))
    p = gb.exp(x) / gb.sum(gb.exp(x), axis=1, keepdims=True)
    ce = -gb.sum(t * gb.log(p), axis=1)
    res, fired = rules_fired([ce], stability.RULES)
    assert res.roots[0].op.name.startswith("softmax_cross_entropy")
    wrong_axis = -gb.sum(t * gb.log(p), axis=0)
    res, fired = rules_fired([wrong_axis], stability.RULES)
    assert not res.roots[0].op.name.startswith("softmax_cross_entropy")


# ------------------------------------------------------------------ accumulation
def test_fan_out_gradient_becomes_add_n():
    x = x64("x", (4,))
    y = gb.sum(gb.exp(x) + gb.sin(x) + gb.cos(x) + x * x)
    g = gb.grad(y, x)
    res = optimize([g])
    kinds = [n.op for n in gb.toposort(res.roots)]
    assert any(isinstance(op, AddN) and op.n >= 3 for op in kinds)
    assert any(e.rule == "flatten_add" for e in res.log)


def test_shared_partial_sum_is_not_flattened():
    a, b, c = x64("a"), x64("b"), x64("c")
    s = a + b
    y = s + c
    res = specialize.flatten_adds([y, s])  # s is read twice (it is a root)
    assert res.log == []
    assert res.roots == [y, s]


def test_add_chain_flattening_is_linear_in_chain_length():
    x = x64("x", (3,))
    terms = [gb.exp(x * float(i)) for i in range(2000)]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    res = specialize.flatten_adds([total])
    (out,) = res.roots
    assert isinstance(out.op, AddN) and out.op.n == 2000
    assert len(res.log) == 1 and len(res.log[0].before) == 1999


def test_sum_of_scaled_value_scales_the_sum():
    x = x64("x", (2, 3))
    s = gb.param("s", np.float64(0.25))
    y = gb.sum(gb.exp(x) * s, axis=1)
    res, fired = rules_fired([y], canonicalize.RULES)
    assert "sum_scalar_factor" in fired
    root = res.roots[0]
    assert root.op.name == "multiply" and any(i.op.name == "sum" for i in root.inputs)
    xv = np.arange(6.0).reshape(2, 3) / 7
    np.testing.assert_allclose(gb.compile([x], [y])(xv)[0], np.exp(xv).sum(1) * 0.25, rtol=1e-15)


def test_sum_scalar_factor_stays_put_when_the_product_is_shared_or_not_scalar():
    x = x64("x", (2, 3))
    p = gb.exp(x) * 0.5
    _, fired = rules_fired([gb.sum(p), p], canonicalize.RULES)
    assert "sum_scalar_factor" not in fired  # p is computed anyway: no pass saved
    row = x64("r", (1, 3))
    _, fired = rules_fired([gb.sum(gb.exp(x) * row, axis=1)], canonicalize.RULES)
    assert "sum_scalar_factor" not in fired


def test_pruned_scan_keeps_its_output_renumbering_when_its_body_is_rewritten():
    """A gradient scan whose unread outputs are pruned and whose body a pass then rewrites
    is a new node again: the TupleGets reading it must still get the pruned indices."""
    from graphbp.passes import PASS_NAMES

    H = 4
    x = gb.input("x", (5, 2, 4 * H))
    h0, c0 = gb.input("h0", (2, H)), gb.input("c0", (2, H))
    w = gb.param("w", np.random.default_rng(0).normal(size=(4 * H, H)).astype(np.float32))

    def step(carry, x_t):
        h, c = gb.nn.lstm_cell(x_t, carry, None, w, project=False)
        return (h, c), h

    (_, _), hs = gb.scan(step, (h0, c0), x)
    loss = gb.mean(hs)
    outs = [loss, *gb.grad(loss, [w, x])]
    rng = np.random.default_rng(1)
    feeds = [rng.normal(size=n.shape).astype(np.float32) for n in (x, h0, c0)]
    ref = gb.compile([x, h0, c0], outs, optimize=False)(*feeds)
    only_cse = {p: p == "cse" for p in PASS_NAMES}
    got = gb.compile([x, h0, c0], outs, debug=True, passes=only_cse)(*feeds)
    for r, o in zip(ref, got):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(512, 10), (4, 128, 10), (None, None, 10)])
def test_softmax_cross_entropy_gradient_reads_the_forward_softmax(shape):
    """The loss computes the softmax its gradient needs: after share_softmax the program runs
    one node giving both, in the forward, and no softmax of its own in the backward."""
    rng = np.random.default_rng(1)
    x = gb.input("x", shape, dtype="float64")
    t = gb.input("t", shape[:-1], dtype="int64")
    w = gb.param("w", rng.normal(size=(10, 10)))
    loss = gb.mean(gb.softmax_cross_entropy(x @ w, t))
    shape = tuple(8 if d is None else d for d in shape)
    (gw,) = gb.grad(loss, [w])
    prog = gb.compile([x, t], [loss, gw])
    names = [n.op.name for n in prog.order]
    assert names.count("softmax_cross_entropy_probs") == 1
    assert "softmax" not in names and "softmax_cross_entropy" not in names
    xv, tv = rng.normal(size=shape) * 4, rng.integers(0, 10, shape[:-1])
    ref = gb.compile([x, t], [loss, gw], optimize=False)(xv, tv)
    for a, b in zip(prog(xv, tv), ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    off = gb.compile([x, t], [loss, gw], passes={"share_softmax": False})
    assert "softmax" in {n.op.name for n in off.order}


def test_small_logits_keep_the_two_lowered_kernels():
    """Below SHARE_SOFTMAX_MIN elements (an unknown batch counted as 32) the joint node's
    fixed cost outweighs the softmax it saves: the loss and the gradient's softmax stay."""
    x = gb.input("x", (None, 10), dtype="float32")
    t = gb.input("t", (None,), dtype="int64")
    loss = gb.mean(gb.softmax_cross_entropy(x, t))
    prog = gb.compile([x, t], [loss, *gb.grad(loss, [x])])
    names = {n.op.name for n in prog.order}
    assert {"softmax", "softmax_cross_entropy"} <= names and "softmax_cross_entropy_probs" not in names


def test_an_operand_of_equal_elements_becomes_a_scalar():
    """A folded broadcast (a mean's seed spread over the batch) or a view chain over one
    value is multiplied as a scalar: one pass, not a pass per row."""
    x = x64("x", (32, 16, 8))
    col = gb.constant(np.full((32, 16, 1), 0.25))
    s = gb.input("s", (), dtype="float64")
    chain = gb.expand_dims(gb.broadcast_to(gb.reshape(s, (1,)), (16,)), -1)  # (16, 1)
    res, fired = rules_fired([x * col, x + chain], canonicalize.RULES)
    assert fired.count("uniform_operand") == 2
    for r in res.roots:
        assert r.type == x.type and all(i is x or i.shape == () for i in r.inputs)
    xv, sv = np.random.default_rng(0).normal(size=(32, 16, 8)), np.array(1.5)
    got = gb.compile([x, s], res.roots, optimize=False)(xv, sv)
    np.testing.assert_allclose(got[0], xv * 0.25)
    np.testing.assert_allclose(got[1], xv + 1.5)


def test_an_operand_of_unequal_or_nan_elements_stays():
    x = x64("x", (4, 3))
    for c in (np.array([[1.0], [1.0], [1.0], [2.0]]), np.full((4, 1), np.nan)):
        res, fired = rules_fired([x * gb.constant(c)], canonicalize.RULES)
        assert "uniform_operand" not in fired and res.roots[0].inputs[1].shape == (4, 1)
