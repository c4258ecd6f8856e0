"""The ``graphbp-diagram`` Sphinx directive, in a tiny Sphinx project built in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import graphbp as gb

ROOT = Path(__file__).resolve().parents[1]


def _needs() -> str | None:
    try:
        import myst_parser  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError:
        return "sphinx / myst-parser not installed (pip install -e '.[docs]')"
    if not gb.render.dot_available():
        return "Graphviz's dot is not on PATH"
    return None


@pytest.fixture
def project(tmp_path):
    why = _needs()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the Sphinx test must run in CI: {why}")
        pytest.skip(why)
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "calls.txt").write_text("", encoding="utf-8")
    (tmp_path / "model.py").write_text(textwrap.dedent(f"""
        import numpy as np
        import graphbp as gb

        def build():
            with open({str(tmp_path / "calls.txt")!r}, "a") as f:
                f.write("x")  # counts how often the build ran this function
            x = gb.input("x", (None, 3))
            W = gb.param("W", np.ones((3, 2), np.float32))
            loss = gb.mean(gb.tanh(x @ W))
            return gb.compile(inputs=[x], outputs=[loss, gb.grad(loss, W)])

        def broken():
            raise RuntimeError("this example is broken on purpose")
        """), encoding="utf-8")
    (src / "conf.py").write_text(textwrap.dedent("""
        extensions = ["graphbp.sphinxext", "myst_parser"]
        graphbp_diagram_root = ".."
        project = "tiny"
        """), encoding="utf-8")
    (src / "index.rst").write_text(textwrap.dedent("""
        Tiny
        ====

        .. toctree::

           page

        .. graphbp-diagram:: model.py:build
           :view: backward

           The gradient graph of *tanh(x W)*.

        .. graphbp-diagram:: model.py:build
           :format: latex
           :caption: The chain rule as equations.

        .. graphbp-diagram:: model.py:broken
        """), encoding="utf-8")
    (src / "page.md").write_text(textwrap.dedent("""
        # A MyST page

        ```{graphbp-diagram} model.py:build
        :format: html
        :collapse: grad

        The explorer, embedded.
        ```
        """), encoding="utf-8")
    return tmp_path


def _build(root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", *extra, str(root / "src"),
                           str(root / "out")], capture_output=True, text=True, env=env, check=False, timeout=600)


def test_directive_renders_svg_latex_html_and_warns_on_failure(project):
    proc = _build(project)
    assert proc.returncode == 0, proc.stderr
    index = (project / "out" / "index.html").read_text(encoding="utf-8")
    assert '<div class="graphbp-svg"><svg' in index
    assert "The gradient graph of <em>tanh(x W)</em>." in index  # caption from the content, parsed
    assert "The chain rule as equations." in index and "\\bar{W}" in index  # math for MathJax
    assert "could not be drawn" in index
    assert "graphbp-diagram model.py:broken: RuntimeError: this example is broken on purpose" in proc.stderr
    page = (project / "out" / "page.html").read_text(encoding="utf-8")
    assert '<iframe class="graphbp-explorer" src="_graphbp/' in page
    explorers = list((project / "out" / "_graphbp").glob("*.html"))
    assert len(explorers) == 1 and "graphbp explorer" in explorers[0].read_text(encoding="utf-8")
    calls = (project / "calls.txt").read_text(encoding="utf-8")
    assert len(calls) == 3  # one run per distinct (format, options)

    # a fresh environment re-reads every page, but unchanged sources come from the cache
    proc = _build(project, "-E")
    assert proc.returncode == 0, proc.stderr
    assert (project / "calls.txt").read_text(encoding="utf-8") == calls
    # editing the example invalidates its entries
    with open(project / "model.py", "a", encoding="utf-8") as f:
        f.write("\n# edited\n")
    proc = _build(project)
    assert proc.returncode == 0, proc.stderr
    assert len((project / "calls.txt").read_text(encoding="utf-8")) == 6


def test_the_gallery_page_builds_with_the_directive(tmp_path):
    """docs/gallery.md (MLP, CNN, LSTM: explorer, SVG and equations each) under docs/conf.py."""
    why = _needs()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the Sphinx test must run in CI: {why}")
        pytest.skip(why)
    src = tmp_path / "src"
    src.mkdir()
    conf = (ROOT / "docs" / "conf.py").read_text(encoding="utf-8")
    (src / "conf.py").write_text(conf.replace('graphbp_diagram_root = ".."', f"graphbp_diagram_root = {str(ROOT)!r}"),
                                 encoding="utf-8")
    page = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    (src / "index.md").write_text(page, encoding="utf-8")
    proc = _build(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "graphbp-diagram" not in proc.stderr  # every example drew (links to other pages may warn)
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    fences = page.count("```{graphbp-diagram}")
    assert html.count('class="figure graphbp-diagram') + html.count('<figure class="graphbp-diagram') == fences
    assert html.count('<iframe class="graphbp-explorer"') == 3
    assert html.count('<div class="graphbp-svg"><svg') == 6
    assert "could not be drawn" not in html
    # the equations go to MathJax as align environments (\tag is an error inside split)
    assert html.count("\\begin{align}") == 6 and "\\tag{seed}" in html and "\\begin{split}" not in html
    for name in ("mlp_digits", "cnn_digits", "lstm_charlm"):
        assert f"examples/{name}.py:build" in html  # each explorer's iframe title names its source
    explorers = sorted((tmp_path / "out" / "_graphbp").glob("*.html"))
    assert len(explorers) == 3 and all("graphbp explorer" in p.read_text(encoding="utf-8") for p in explorers)
