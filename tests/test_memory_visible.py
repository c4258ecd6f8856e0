"""Rematerialisation made visible: recomputed values drawn in their own style (backward and
joint views, the explorer's legend) and ``explain()`` naming, for each saved value, the
backward steps and rules that read it (graphbp/render/dot.py, explain.py)."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

import graphbp as gb
from graphbp.render import styles

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "docs"))
from gen_memory import swish_mlp  # noqa: E402


@pytest.fixture(scope="module")
def prog():
    return swish_mlp()


def test_the_swish_net_recomputes_and_agrees_with_none_and_the_reference(prog):
    assert len(prog.remat.recomputed) >= 2  # each layer's sigmoid at least (rewrite passes may merge more)
    assert prog.remat.saved_after < prog.remat.saved_before
    assert {c.provenance[0].rule for c in prog.remat.recomputed} == {"remat"}
    x = np.random.default_rng(1).normal(size=(5, 64))
    got = prog(x)
    ref = gb.evaluate(prog.outputs, {prog.inputs[0]: x})
    for g, r, n in zip(got, ref, swish_mlp(remat="none")(x)):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g, n, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("view", ["backward", "joint"])
def test_recomputed_nodes_have_their_own_style_and_title_count(prog, view):
    src = prog.to_dot(view).source
    boxes = [ln for ln in src.splitlines() if "↻ recompute" in ln]
    assert len(boxes) == len(prog.remat.recomputed)
    for ln in boxes:
        assert f'fillcolor="{styles.REMAT["fillcolor"]}"' in ln and "dashed" in ln
    assert f"{len(prog.remat.recomputed)} recomputed (↻ dashed cyan), not saved" in src
    plain = swish_mlp(remat="none").to_dot(view).source
    assert "↻ recompute" not in plain and "recomputed (↻" not in plain


def test_explorer_legend_has_the_recompute_swatch(prog, tmp_path):
    path = tmp_path / "p.html"
    gb.render(prog, str(path))
    assert f"background:{styles.REMAT['fillcolor']}" in path.read_text(encoding="utf-8")


def test_explain_says_why_each_value_is_saved(prog):
    text = str(prog.explain())
    saved = text[text.index("saved activations:"):text.index("recomputed in backward")]
    rows = [ln for ln in saved.splitlines()[1:] if ln.strip()]
    assert len(rows) == len(prog.partition.saved) == 2
    for ln in rows:  # each layer saves its matmul output: the sigmoid is recomputed from it,
        # and z * sigmoid(z), which the derivative s + (z s)(1 - s) reads (collect_terms)
        assert "matmul" in ln and "read by B" in ln and "to recompute sigmoid [F" in ln
        assert "to recompute multiply [F" in ln
    assert "copy of F" in text[text.index("recomputed in backward"):]


def test_explain_reasons_name_rules_and_skip_shape_only_reads():
    x = gb.input("x", (None, 8))
    w1, w2 = (gb.param(f"w{k}", np.ones((8, 8), np.float32)) for k in (1, 2))
    h1 = gb.tanh(x @ w1)
    h2 = gb.tanh(h1 @ w2)
    loss = gb.mean(h2 * h2)  # mean reads its operand only for the count: not saved for that
    g1, g2 = gb.grad(loss, [w1, w2])
    text = str(gb.compile([x], [loss], updates={w1: w1 - 0.1 * g1, w2: w2 - 0.1 * g2}).explain())
    rows = [r for r in text[text.index("saved activations:"):text.index("(row =")].splitlines()[1:] if r.strip()]
    assert len(rows) == 2 and all("tanh" in r and "read by B" in r for r in rows)
    (first,) = [r for r in rows if "F1" in r.split()[0]]
    assert "vjp of tanh, input 0 [F1]" in first and "vjp of matmul, input 1 [F2]" in first
    assert not any(" multiply " in r for r in rows)
