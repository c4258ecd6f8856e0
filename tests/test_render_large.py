"""Joint views of large graphs: the arrows between the columns must not blow up Graphviz.

The joint view's arrows from the forward column to the backward column take no part in the
ranking, yet ``dot`` threads each through one virtual node per rank it spans; on a
2,000-node residual network that made the layout run for hours (and some small cluster
nestings make ``dot`` stop with "trouble in init_rank"). Large scenes are laid out without
those arrows and get them drawn over the result (``Scene.layered``). These tests check the
structure that avoids the blow-up and that the renders finish; none measures time (the
subprocess timeout only stops a hang from blocking the suite).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import graphbp as gb
from graphbp.render.dot import scene_of
from graphbp.render.scene import ROUTED_OVERLAY_MAX

ROOT = Path(__file__).resolve().parents[1]
needs_dot = pytest.mark.skipif(not gb.render.dot_available(), reason="Graphviz's dot is not installed")

RESIDUAL = textwrap.dedent('''
    import numpy as np
    import graphbp as gb

    def residual(blocks, scoped):
        """h <- h + tanh(h W_i + b_i), blocks times: every block's input is read twice."""
        x = gb.input("x", (None, 8))
        h, params = x, []
        for i in range(blocks):
            W = gb.param(f"W{i}", np.zeros((8, 8), np.float32))
            b = gb.param(f"b{i}", np.zeros(8, np.float32))
            params += [W, b]
            if scoped:
                with gb.scope(f"block{i}"):
                    h = h + gb.tanh(h @ W + b)
            else:
                h = h + gb.tanh(h @ W + b)
        loss = gb.mean(gb.square(h))
        return gb.compile(inputs=[x], outputs=[loss, *gb.grad(loss, params)], optimize=False)
    ''')


def residual(blocks: int, scoped: bool = False):
    namespace: dict = {}
    exec(RESIDUAL, namespace)  # the same builder the subprocess below runs
    return namespace["residual"](blocks, scoped)


def _graph_size(program) -> int:
    s = gb.render.subject.subject_of(program)
    return len(gb.toposort(list(s.forward) + list(s.backward)))


def test_large_joint_scene_is_laid_out_without_its_cross_arrows():
    prog = residual(135)
    assert _graph_size(prog) >= 2000
    scene = scene_of(prog, "joint", max_nodes=None)
    assert len(scene) > 2000 and scene.layered()
    first_pass = scene.to_digraph(overlay=False).source
    edges = [ln for ln in first_pass.splitlines() if " -> " in ln]
    # nothing Graphviz must thread across the columns is left in the layout pass
    assert edges and not [ln for ln in edges if "constraint=false" in ln or "lhead=" in ln]
    overlay = scene.overlay_statements()
    n_overlay = sum(1 for e in scene.edges.values() if e.overlay)
    assert n_overlay > 500 and overlay.count(" -> ") == n_overlay
    assert "label=" not in overlay  # drawn straight, unlabelled (types are in the tooltips)
    assert "drawn straight" in scene.title
    # the full DOT (gb.to_dot) still holds every arrow
    assert gb.to_dot(prog, "joint", max_nodes=None).source.count(" -> ") == len(edges) + n_overlay


def test_small_joint_scene_routes_its_cross_arrows():
    prog = residual(3)
    scene = scene_of(prog, "joint")
    assert len(scene) <= ROUTED_OVERLAY_MAX and not scene.layered()
    assert "drawn straight" not in scene.title


@needs_dot
def test_small_scoped_residual_renders_despite_init_rank_failure(tmp_path):
    """dot refuses this one ("trouble in init_rank": constraint=false edges between nested
    clusters); the renderer falls back to the two-pass layout."""
    prog = residual(3, scoped=True)
    svg = gb.render.to_svg(prog, "joint")
    root = ET.fromstring(svg)
    edges = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "edge"]
    assert len(edges) == len(scene_of(prog, "joint").edges)


@needs_dot
@pytest.mark.parametrize("fmt,max_nodes", [("svg", "None"), ("html", "250")])
def test_two_thousand_node_joint_view_renders(tmp_path, fmt, max_nodes):
    """Every box of the 2,000-node joint view as SVG, and the explorer with its default budget
    (where the unscoped residual collapses into ~240 segments: that layout used to hang)."""
    out = tmp_path / f"joint.{fmt}"
    script = RESIDUAL + textwrap.dedent(f"""
        prog = residual(135, scoped=False)
        if {fmt!r} == "html":
            gb.render(prog, {str(out)!r}, views=["joint"], equations=False, max_nodes={max_nodes})
        else:
            gb.render(prog, {str(out)!r}, "joint", max_nodes={max_nodes})
        """)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=1800, check=False)  # a hang guard, not a speed test
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    scene = scene_of(residual(135), "joint", max_nodes=None if max_nodes == "None" else int(max_nodes))
    assert scene.layered()
    if fmt == "svg":
        root = ET.fromstring(text)
        kinds = [g.get("class") for g in root.iter("{http://www.w3.org/2000/svg}g")]
        assert kinds.count("node") == len(scene) > 2000
        assert kinds.count("edge") == len(scene.edges)
    else:
        assert len(re.findall(r'<g id="joint_n\d+" class="node"', text)) == len(scene)
        assert text.count('class="edge"') == len(scene.edges)
