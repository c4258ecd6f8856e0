"""``graphbp render`` / ``graphbp explain`` end to end, through ``python -m graphbp``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = textwrap.dedent(
    """
    import numpy as np
    import graphbp as gb

    def build():
        x = gb.input("x", (None, 3))
        with gb.scope("dense"):
            W = gb.param("W", np.ones((3, 2), np.float32))
            y = gb.tanh(x @ W)
        loss = gb.mean(y * y)
        return gb.compile([x], [loss, gb.grad(loss, W)])

    def nodes():
        x = gb.input("x", (2,))
        return [gb.exp(x), gb.sin(x)]

    def not_a_graph():
        return 42

    if __name__ == "__main__":
        raise SystemExit("the __main__ block must not run")
    """
)


def run(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "graphbp", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    return path


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
def test_render_writes_one_svg_per_view(model_file, tmp_path):
    out = tmp_path / "out"
    r = run("render", str(model_file), "--view", "forward,backward,joint,optimization", "--out", str(out),
            cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    files = sorted(os.listdir(out))
    assert files == [f"model.build.{v}.svg" for v in ("backward", "forward", "joint", "optimization")]
    root = ET.parse(out / "model.build.backward.svg").getroot()
    text = " ".join(t.text or "" for t in root.iter())
    assert "vjp of tanh, input 0" in text


def test_render_dot_format_and_function_selection(model_file, tmp_path):
    r = run("render", f"{model_file}:nodes", "--view", "forward", "--format", "dot", "--out", str(tmp_path),
            cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    src = (tmp_path / "model.nodes.forward.dot").read_text()
    assert "exp" in src and "sin" in src


def test_explain_prints_schedules(model_file, tmp_path):
    r = run("explain", str(model_file), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "forward schedule" in r.stdout and "backward schedule" in r.stdout and "saved activations" in r.stdout


@pytest.mark.parametrize(
    "target, message",
    [
        ("missing.py", "no such file"),
        ("{model}:nope", "defines no function 'nope'"),
        ("{model}:not_a_graph", "returned a int"),
    ],
)
def test_clear_errors(model_file, tmp_path, target, message):
    r = run("render", target.format(model=model_file), "--out", str(tmp_path), cwd=str(tmp_path))
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_unknown_view_is_an_error(model_file, tmp_path):
    r = run("render", str(model_file), "--view", "sideways", cwd=str(tmp_path))
    assert r.returncode == 2 and "unknown view" in r.stderr
