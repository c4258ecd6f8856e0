"""The HTML explorer's file (without a browser) and the LaTeX equations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphbp as gb
from graphbp.render.latex import name_symbol, to_latex

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import mlp_digits  # noqa: E402
import xor_tanh  # noqa: E402

needs_dot = pytest.mark.skipif(not gb.render.dot_available(), reason="Graphviz's dot is not installed")


def _payload(text: str) -> dict:
    blob = re.search(r'<script type="application/json" id="gb-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(blob.replace("<\\/", "</"))


@needs_dot
def test_html_is_self_contained_and_deterministic(tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    gb.render(mlp_digits.build(), a)
    gb.render(mlp_digits.build(), b)
    text = a.read_text(encoding="utf-8")
    assert a.read_bytes() == b.read_bytes()
    assert text.startswith("<!DOCTYPE html>")
    # nothing loaded from elsewhere: no external scripts, styles, images or fonts
    assert not re.search(r"<script[^>]*\bsrc=|<link\b", text)
    markup = re.sub(r"<script\b.*?</script>", "", text, flags=re.S)  # (KaTeX's code holds tag strings)
    assert not re.search(r"<(img|iframe|object|embed)\b|url\(|@import", markup)
    assert not re.search(r"https?://(?!www\.w3\.org/)", text)
    data = _payload(text)
    assert [v["id"] for v in data["views"]] == ["forward", "backward", "joint", "optimization", "equations"]
    for view in ("forward", "backward", "joint"):
        assert f'<section class="view" id="view-{view}"' in text
        ids = re.findall(rf'<g id="({view}_n\d+)" class="node"', text)
        assert ids and set(ids) == set(next(v for v in data["views"] if v["id"] == view)["nodes"])


@needs_dot
def test_node_table_links_gradients_to_the_drawn_forward_op():
    data = _payload(gb.to_html(mlp_digits.build(), equations=False))
    nodes = data["nodes"]
    joint = next(v for v in data["views"] if v["id"] == "joint")
    drawn = {r for rows in joint["nodes"].values() for r in rows}
    grads = [r for r in nodes if r["k"] == "grad"]
    assert grads
    for r in grads:
        fwd = r["pv"][0][0]
        assert fwd in drawn, f"{r['t']}: its forward op is not drawn in the joint view"
        assert "vjp" in r["why"] or "unbroadcast" in r["why"] or "seed" in r["why"] or "accumulate" in r["why"]
    W1 = next(r for r in nodes if r["t"] == "W1")
    assert (W1["k"], W1["ty"], W1["b"]) == ("param", "f32[64,128]", "32 KiB")
    assert W1["src"].startswith("W1 = gb.param(")  # the user's line, read from the file
    assert any(r.get("sv") for r in nodes) and any(r.get("f") for r in nodes)


@needs_dot
def test_collapse_request_starts_clusters_folded_and_updates_get_clusters():
    m = mlp_digits.model()
    opt = gb.optim.SGD(lr=0.1) if hasattr(gb.optim, "SGD") else gb.optim.Adam(lr=1e-3)
    prog = gb.compile(inputs=[m.x, m.t], outputs=[m.loss], updates=opt.updates(m.loss, m.params))
    data = _payload(gb.to_html(prog, views=["joint"], collapse="grad", equations=False))
    joint = data["views"][0]
    kinds = {c["kind"] for c in joint["clusters"].values()}
    assert "update" in kinds
    labels = [c["label"] for c in joint["clusters"].values() if c["kind"] == "update"]
    assert "update of W1" in labels
    folded = [joint["clusters"][c] for c in joint["collapsed"]]
    assert {c["kind"] for c in folded} == {"grad", "update"} and all(c["members"] for c in folded)
    open_updates = _payload(gb.to_html(prog, views=["joint"], expand_updates=True, equations=False))["views"][0]
    assert not open_updates["collapsed"]


def test_unknown_view_is_refused():
    with pytest.raises(ValueError, match="unknown view"):
        gb.to_html(xor_tanh.build(), views=["sideways"])


@needs_dot
def test_cli_writes_one_html_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "graphbp", "render", str(ROOT / "examples" / "xor_tanh.py"),
                           "--format", "html", "--out", str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "xor_tanh.build.html"
    assert proc.stdout.strip() == str(out)
    assert "graphbp explorer" in out.read_text(encoding="utf-8")


# -- LaTeX ----------------------------------------------------------------------------------
def test_symbols_follow_course_notation():
    assert name_symbol("W1").tex() == "W_{1}"
    assert name_symbol("x").tex(bar=True) == "\\bar{x}"
    assert name_symbol("W_out").tex() == "W_{\\mathrm{out}}"
    assert name_symbol("logits").tex() == "\\mathrm{logits}"


def test_latex_of_the_mlp_names_rule_and_forward_node():
    tex = to_latex(mlp_digits.build())
    fwd, bwd = tex.split("Backward schedule")
    assert "z_{1} &= x W_{1} \\tag{F0}" in fwd
    assert "h_{1} &= \\operatorname{relu}\\left(z_{2}\\right) \\tag{F2}" in fwd
    # \bar{h}_1 = \bar{z}_4 W_2^T, from the second matmul's rule (the transpose inlined)
    assert re.search(r"\\bar\{h\}_\{1\} &= \\bar\{z\}_\{4\} W_\{2\}\^\\top && \\text\{vjp of matmul, input 0 \(F3\)\}", bwd)
    assert "\\bar{W}_{1} &= x^\\top \\bar{z}_{2}" in bwd
    assert "\\bar{L} &= 1" in bwd
    # one equation per scheduled node (transposes inlined into their single user are the exception)
    s = gb.render.subject.subject_of(mlp_digits.build(), optimized=False)
    tags = re.findall(r"\\tag\{(B\d+)\}", bwd)
    assert len(tags) == len(set(tags)) and set(tags) <= {s.step[n] for n in s.backward}
    assert len(re.findall(r"\\tag\{F\d+\}", fwd)) == len(s.forward)


def test_explain_latex_and_shapes():
    prog = xor_tanh.build()
    tex = prog.explain(format="latex")
    assert tex == to_latex(prog)
    assert "\\in \\text{f32[" in gb.to_latex(prog, shapes=True) or "\\in \\text{f64[" in gb.to_latex(prog, shapes=True)
    with pytest.raises(ValueError, match="format"):
        prog.explain(format="rtf")


def test_latex_handles_accumulated_gradients():
    x = gb.input("x", (3,), dtype="float64")
    y = gb.sum(x * x + gb.exp(x))  # x feeds two ops: two contributions, then their sum
    g = gb.grad(y, x)
    tex = to_latex([y, g])
    assert "\\bar{x}^{(1)}" in tex and "\\bar{x}^{(2)}" in tex
    assert re.search(r"\\bar\{x\} &= ", tex)
    assert np.isfinite(gb.compile([x], [g])(np.ones(3))[0]).all()


PDFLATEX = shutil.which("pdflatex")


@pytest.mark.skipif(PDFLATEX is None, reason="no TeX engine (apt-get install texlive-latex-base)")
@pytest.mark.parametrize("example", ["mlp_digits", "xor_tanh", "regression_mse"])
def test_every_example_compiles_with_pdflatex(tmp_path, example):
    module = __import__(example)
    (tmp_path / "eq.tex").write_text(to_latex(module.build(), shapes=True, document=True), encoding="utf-8")
    proc = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "eq.tex"], cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "eq.pdf").stat().st_size > 1000


@needs_dot
def test_explorer_of_a_scan_model_lists_multi_output_nodes_and_body_clusters():
    import lstm_charlm

    data = _payload(gb.to_html(lstm_charlm.build(), views=["forward", "joint"], equations=False))
    scans = [r for r in data["nodes"] if r["op"] == "scan"]
    assert len(scans) == 2  # the forward loop and its reverse (the gradient)
    for r in scans:  # a scan's value is a tuple: its shape lists the items'
        assert r["sh"].startswith("((") and r["ty"].startswith("(")
    for view in data["views"]:
        bodies = [c for c in view["clusters"].values() if c["kind"] == "body"]
        assert bodies and all(c["members"] for c in bodies)
