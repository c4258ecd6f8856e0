"""Diagrams of a training step (issue 10, items 10 and 11).

An optimiser's update arithmetic is grouped per parameter into a collapsible cluster
(collapsed by default); optimiser state and values read only for their shape are not
"saved activations"; the optimisation view says what each pass did to each node.
"""

from __future__ import annotations

import numpy as np

import graphbp as gb
from graphbp.graph.traverse import toposort
from graphbp.render import optview
from graphbp.render.collapse import plan
from graphbp.render.subject import subject_of
from graphbp.render.views import build_view


def _adam_step():
    x = gb.input("x", (None, 8))
    t = gb.input("t", (None,), dtype="int64")
    W1 = gb.param("W1", np.full((8, 16), 0.1, np.float32))
    b1 = gb.param("b1", np.zeros(16, np.float32))
    W2 = gb.param("W2", np.full((16, 3), 0.1, np.float32))
    with gb.scope("layer1"):
        h = gb.relu(x @ W1 + b1)
    loss = gb.mean(gb.softmax_cross_entropy(h @ W2, t))
    prog = gb.compile([x, t], [loss], updates=gb.optim.Adam(0.01).updates(loss, [W1, b1, W2]))
    return prog, loss


def test_each_parameters_update_is_one_collapsed_cluster():
    prog, _ = _adam_step()
    spec = build_view(subject_of(prog), "joint")
    p = plan(spec, max_nodes=None)
    titles = sorted(g.title for g in p.groups.values() if g.kind == "update")
    assert [t.split(" ·")[0] for t in titles if t.startswith("update of")] == ["update of W1", "update of W2", "update of b1"]
    drawn = p.drawn_count(spec)
    expanded = plan(spec, max_nodes=None, expand_updates=True)
    assert not any(g.kind == "update" for g in expanded.groups.values())
    assert drawn < expanded.drawn_count(spec) - 40  # Adam's per-parameter arithmetic folds away
    src = gb.to_dot(prog, "joint", max_nodes=None).source
    assert "update of W1" in src


def test_optimiser_state_and_shape_only_reads_are_not_saved_activations():
    prog, loss = _adam_step()
    s = subject_of(prog)
    model = set(toposort(list(prog.outputs)))
    assert s.saved and all(n in model for n in s.saved)  # no optimiser arithmetic
    assert not any(n.op.name in ("softmax_cross_entropy", "cast") for n in s.saved)  # read for its shape only
    assert f"saved activations: {len(s.saved)} tensors" in prog.explain()


def _rewritten_program():
    x = gb.input("x", (None, 8))
    W = gb.param("W", np.full((8, 4), 0.1, np.float32))
    h = gb.tanh(x @ W)
    y = gb.log(h * h + 1.0) + gb.exp(x @ W) * 1.0
    loss = gb.mean(gb.log(gb.sigmoid(y)))
    return gb.compile([x], [loss], updates=gb.optim.SGD(0.1).updates(loss, [W]))


def test_the_optimization_view_labels_what_each_pass_really_did():
    prog = _rewritten_program()
    sources = dict((name, d.source) for name, d in optview.pass_diagrams(prog))
    assert not any("dead code" in src for src in sources.values())
    assert "re-derived by stabilize" in sources["stabilize"]  # the gradient, derived again
    assert "rebuilt by canonicalize" in sources["canonicalize"] or "unused after canonicalize" in sources["canonicalize"]
