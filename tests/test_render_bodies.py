"""Loop bodies in the diagrams and the explorer (issue 12): a scan is a cluster holding its
body, each carry is a back edge from the value a step returns to the placeholder the next
step reads, and the backward view draws the reverse scan with its body like the forward
view draws the forward one."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops.loop import Scan
from graphbp.render.classify import is_scalar_constant
from graphbp.render.dot import scene_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

needs_dot = pytest.mark.skipif(not gb.render.dot_available(), reason="Graphviz's dot is not installed")


def _rnn_step():
    x = gb.input("x", (None, 3), "float64")
    W = gb.param("W", 0.5 * np.random.default_rng(0).normal(size=(3, 3)))
    c0 = gb.input("c0", (3,), "float64")
    (h, c), ys = gb.scan(lambda hc, x_t: ((gb.tanh(W @ hc[0] + x_t), hc[1] + x_t), hc[0] * x_t),
                         (gb.constant(np.zeros(3)), c0), x)
    loss = gb.sum(h) + gb.sum(c) + gb.sum(ys * ys)
    gW, gc = gb.grad(loss, [W, c0])
    return gb.compile([x, c0], [loss, gW, gc]), W


def _scans(prog):
    return [n for n in prog.order if isinstance(n.op, Scan)]


def _carry_edges(scene, scan):
    body = scan.op.body
    return [(e.tail, e.head) for (tail, head, kind), e in scene.edges.items() if kind == "carry"
            and tail in body.outputs and head in body.inputs]


def test_each_carry_is_a_back_edge_from_the_new_value_to_the_placeholder():
    prog, _ = _rnn_step()
    (fwd,) = [n for n in _scans(prog) if not n.op.reverse]
    scene = scene_of(prog, "forward")
    body = fwd.op.body
    assert _carry_edges(scene, fwd) == [(body.outputs[0], body.inputs[0]), (body.outputs[1], body.inputs[1])]
    src = scene.to_digraph().source
    assert len(re.findall(r'label="carry \d"[^\]]*constraint=false', src)) == 2  # drawn, not ranked
    assert src == scene_of(prog, "forward").to_digraph().source
    # a carry returned unchanged (the body's output is its own input) draws no edge
    x = gb.input("x", (4, 2), "float64")
    (same, _), _ = gb.scan(lambda c, x_t: ((c[0], c[1] + x_t), None), (gb.constant(np.ones(2)), x[0]), x)
    (loop,) = [n for n in gb.toposort([same]) if isinstance(n.op, Scan)]
    assert _carry_edges(scene_of([same], "forward"), loop) == [(loop.op.body.outputs[1], loop.op.body.inputs[1])]


def test_the_backward_view_draws_the_reverse_scan_and_its_body():
    prog, _ = _rnn_step()
    (back,) = [n for n in _scans(prog) if n.op.reverse]
    scene = scene_of(prog, "backward")
    bodies = [k for k, attrs in scene.clusters.items() if "scan · body" in attrs.get("label", "")]
    assert len(bodies) == 1 and bodies[0][1] is back  # the reverse loop's body; not the saved forward loop's
    shown = [n for n in back.op.body.nodes() if not is_scalar_constant(n)]  # 1.0 folds into its user's label
    assert shown and all(n in scene.nodes for n in shown)
    wired = {(e.tail, e.head) for e in scene.edges.values()}
    body = back.op.body
    assert all((i, n) in wired for n in body.nodes() for i in n.inputs if n in scene.nodes and i in scene.nodes)
    assert _carry_edges(scene, back)  # the cotangent carries run backwards through the steps too
    assert any(k[0] is back and k[2] == "link" for k in scene.edges)  # the loop node points at its body


@needs_dot
def test_the_explorer_unfolds_the_reverse_scan_body_in_the_backward_view():
    import lstm_charlm

    text = gb.to_html(lstm_charlm.build(), views=["backward"], equations=False)
    data = json.loads(re.search(r'<script type="application/json" id="gb-data">(.*?)</script>', text, re.S)
                      .group(1).replace("<\\/", "</"))
    (view,) = data["views"]
    bodies = [c for c in view["clusters"].values() if c["kind"] == "body"]
    assert len(bodies) == 1 and len(bodies[0]["members"]) > 10
    rows = data["nodes"]
    for sid in bodies[0]["members"]:  # every node drawn in the body has its row for the side panel
        (r,) = view["nodes"][sid]
        assert rows[r]["t"] and rows[r]["ty"]
    assert any(rows[r]["k"] == "grad" for sid in bodies[0]["members"] for r in view["nodes"][sid])
    assert 'label="carry' not in text and "carry 0" in text  # the back edges' labels are in the SVG
