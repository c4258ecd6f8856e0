"""Lowering records, the plan's liveness and allocation, and runtime options."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops.leaves import Leaf
from graphbp.runtime import lowering as lw
from graphbp.runtime.allocate import allocate
from graphbp.runtime.liveness import liveness
from graphbp.runtime.plan import Step, lower_all

ROOT = Path(__file__).resolve().parents[1]


def test_every_op_class_has_a_lowering_entry():
    """One backend table: each op class has its own lowering or the declared generic one."""
    missing = [c.__name__ for c in gb.ops.OP_CLASSES if not issubclass(c, Leaf) and c not in lw.LOWERINGS]
    assert not missing, f"op classes without a lowering entry (add one, or lowering.generic): {missing}"


def test_call_records_render_by_slot():
    low = lw.out_kind(lw.call("subtract", lw.Lit(0), lw.X0, lw.T0, dtype=lw.Name("uint32")),
                      lw.call("bitwise_and", lw.Method(lw.X1, "view", (lw.Name("uint32"),)), lw.T0, lw.OUT),
                      lw.call("equal", lw.Index(lw.X0, (lw.Lit(slice(None)), lw.Lit(None))), lw.Name("r"), lw.OUT))
    names = {lw.X0: "v1", lw.X1: "v2", lw.T0: "v9_t0", lw.OUT: "v9"}
    assert low.statement(names.__getitem__) == (
        "subtract(0, v1, v9_t0, dtype=uint32); bitwise_and(v2.view(uint32), v9_t0, v9); equal(v1[:, None], r, v9)")
    # names that contain each other's text are substituted by slot, never by text
    names = {lw.X0: "v1", lw.X1: "v1_t0", lw.T0: "v1_t0_x", lw.OUT: "v10"}
    assert low.statement(names.__getitem__).startswith("subtract(0, v1, v1_t0_x, dtype=uint32); bitwise_and(v1_t0.view")
    kernel = lw.Lowered("call", (lw.Call(None, (lw.X0,), (("out", lw.OUT),)),))
    assert kernel.statement(names.__getitem__, "prod_4") == "prod_4(v1, out=v10)"
    assert lw.substitute(lw.call("tanh", lw.X0, lw.X0), {lw.X0: lw.OUT}) == lw.call("tanh", lw.OUT, lw.OUT)


def _mlp_steps():
    x = gb.input("x", (4, 3), dtype="float64")
    w = gb.param("w", np.ones((3, 2)))
    h = gb.tanh(x @ w)
    big = gb.exp(h) * 2.0
    loss = gb.mean(big)
    (gw,) = gb.grad(loss, [w])
    prog = gb.compile([x], [loss, gw], optimize=False)
    types = prog._check_shapes([np.ones((4, 3))])
    nodes = prog.forward.nodes + prog.backward.nodes
    lows = lower_all(nodes, types, {loss, gw}, fold_max_size=None)
    steps = [Step(n, lows[n]) for n in nodes]
    return prog, steps, types, (h, big, loss, gw), len(prog.forward.nodes)


def test_liveness_ends_at_the_last_data_read_and_skips_shape_only_reads():
    prog, steps, types, (h, big, loss, gw), nf = _mlp_steps()
    live = liveness(steps, [loss, gw])
    at = {st.node: s for s, st in enumerate(steps)}
    assert live.last[loss] == live.last[gw] == len(steps)  # outputs live to the end
    # the mean's gradient reads `big` only for its element count: it dies at the mean
    assert live.last[big] == at[loss] < nf
    # h is read by the backward (tanh's derivative): it lives into the backward schedule
    assert live.last[h] >= nf and live.death[h] == live.last[h]


def test_allocation_reuses_buffers_of_dead_values():
    prog, steps, types, (h, big, loss, gw), nf = _mlp_steps()
    live = liveness(steps, [loss, gw])
    alloc = allocate(steps, nf, types, live, {loss, gw})
    assert loss in alloc.fresh and gw in alloc.fresh and loss not in alloc.buffer_of
    assert alloc.n_inplace >= 1  # elementwise chains write over operands that die there
    assert len(alloc.sizes) < sum(1 for st in steps if st.low.kind == "out")
    # no two values live at the same time share a buffer
    spans: dict[int, list[tuple[int, int]]] = {}
    for s, st in enumerate(steps):
        b = alloc.buffer_of.get(st.node)
        if b is not None:
            spans.setdefault(b, []).append((s, live.death.get(st.node, s)))
    for lst in spans.values():
        lst.sort()
        for (_, end), (start, _) in zip(lst, lst[1:]):
            assert end <= start


def test_mean_of_a_large_intermediate_saves_no_tensor_for_it():
    x = gb.input("x", (None, 256), dtype="float32")
    w = gb.param("w", np.full((256, 256), 0.01, np.float32))
    z = x @ w  # saved: the backward of the matmul below reads x, of tanh reads t
    t = gb.tanh(z)
    big = gb.exp(t) * 3.0  # only the mean reads it
    loss = gb.mean(big)
    (gw,) = gb.grad(loss, [w])
    prog = gb.compile([x], [loss, gw])
    assert big not in prog.partition.saved
    row_bytes = 256 * 4
    plan = prog.memory_plan((1024, 256))
    # exp(t) is saved (the derivative of exp reads it); the product `big` is not
    assert plan.saved <= 2 * 1024 * row_bytes
    got = prog(np.ones((1024, 256), np.float32))
    want = gb.evaluate([loss, gw], {x: np.ones((1024, 256), np.float32)})
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5)


def test_explain_of_xor_tanh_does_not_list_square_as_saved():
    out = subprocess.run([sys.executable, "-m", "graphbp", "explain", str(ROOT / "examples" / "xor_tanh.py")],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    saved = out[out.index("saved activations:"):]
    listed = [ln.split()[1] for ln in saved.splitlines()[1:] if ln.startswith("      ")]
    assert listed and "square" not in listed


def test_runtime_options_are_per_program_and_validated():
    x = gb.input("x", (64, 8), dtype="float64")
    y = gb.sum(gb.tanh(x * 2.0) * gb.exp(x))
    (gx,) = gb.grad(y, [x])
    xv = np.linspace(-1, 1, 512).reshape(64, 8)
    blocked = gb.compile([x], [y, gx], runtime=gb.RuntimeOptions(block_min_bytes=1, block_elements=16))
    plain = gb.compile([x], [y, gx])
    assert "for i in range(" in blocked.source() and "for i in range(" not in plain.source()
    for a, b in zip(blocked(xv), plain(xv)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="block_elements"):
        gb.RuntimeOptions(block_elements=0)
    with pytest.raises(gb.GraphError, match="RuntimeOptions"):
        gb.compile([x], [y], runtime={"block_min_bytes": 1})
    xs = gb.input("xs", (None, 8), dtype="float64")
    small = gb.compile([xs], [gb.sum(xs)], runtime=gb.RuntimeOptions(max_plans=1))
    small(np.ones((2, 8)))
    small(np.ones((3, 8)))
    assert len(small._executor.plans) == 1


def test_a_failing_generated_line_names_its_node_from_the_line_map():
    x = gb.input("x", (None, 3), dtype="float64")
    i = gb.input("i", (2,), dtype="int64")
    y = gb.take(gb.tanh(x), i, axis=0)
    prog = gb.compile([x, i], [y])
    gen = prog._executor.get(((4, 3), (2,))).generated
    lines = gen.source.splitlines()
    (k, args), = [(k, args) for k, (node, args) in gen.line_nodes.items() if node.op.name == "take"]
    assert "take" in lines[k - 1] and args[1] == "i"
    with pytest.raises(gb.GraphbpError, match="take"):
        prog(np.ones((4, 3)), np.array([0, 9]))


def test_view_ops_lower_to_views_and_only_they_do():
    """``Op.view`` and the lowering agree: the shape ops are free re-views of operand 0."""
    x = gb.input("x", (2, 3, 1), dtype="float64")
    views = [gb.reshape(x, (3, 2)), gb.transpose(x), gb.broadcast_to(x, (4, 2, 3, 1)), gb.expand_dims(x, 0),
             gb.squeeze(x, 2)]
    others = [gb.tanh(x), gb.sum(x, axis=1), x * 2.0]
    for n in views + others:
        low = lw.lower(n, [i.type for i in n.inputs], n.type)
        assert (low.kind == "view") == type(n.op).view, n
    view_classes = [c for c in gb.ops.OP_CLASSES if c.view]
    assert view_classes and all(lw.LOWERINGS[c] is not lw.generic for c in view_classes)


def test_a_like_operand_is_kept_as_a_shape_not_a_tensor():
    """``sum``'s gradient broadcasts ``g`` ``like=`` its operand (unknown batch dim): the
    operand is in the partition's ``shape_only`` set and the backward never receives it."""
    x = gb.input("x", (None, 8), dtype="float64")
    big = gb.exp(x) * 3.0
    loss = gb.sum(big)
    (gx,) = gb.grad(loss, [x])
    prog = gb.compile([x], [loss, gx], optimize=False)
    assert big in prog.partition.shape_only and big not in prog.partition.saved
    src = prog.source((4, 8))
    handed = src[src.index("def backward("):].split("\n", 1)[0]
    assert handed == "def backward(x, v4):"  # the loss only, not big's buffer
    xv = np.linspace(-1, 1, 32).reshape(4, 8)
    np.testing.assert_allclose(prog(xv)[1], gb.evaluate(gx, {x: xv}))


@pytest.mark.parametrize("shape", [(6, 64), (3, 5, 40), (2, 3, 4, 7)])
def test_softmax_family_on_nd_logits_lowers_to_row_calls(shape):
    """Logits of any rank reduced along the last axis (a sequence model's (T, B, V)) take
    the same row-matrix calls as 2-D ones, not the op's generic kernel, with equal values."""
    rng = np.random.default_rng(0)
    x = gb.input("x", shape, dtype="float32")
    t = gb.input("t", shape[:-1], dtype="int64")
    outs = [gb.softmax(x), gb.softmax_cross_entropy(x, t), gb.one_hot(t, shape[-1])]
    prog = gb.compile([x, t], outs, optimize=False)
    xv = (rng.normal(size=shape) * 30).astype(np.float32)
    xv.flat[3] = 1e4  # a row whose maximum dominates
    tv = rng.integers(0, shape[-1], shape[:-1])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp may underflow to 0
        got = prog(xv, tv)
    ref = gb.evaluate(outs, {x: xv, t: tv})
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=2e-6, atol=1e-30)
    assert not re.search(r"\b(softmax|softmax_cross_entropy|one_hot)_\d+\(", prog.source())  # no op kernel
