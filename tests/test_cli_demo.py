"""``graphbp demo`` end to end: trains, reports, writes diagrams (SVG or DOT + hint)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import graphbp as gb
from graphbp import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz dot for the SVG path")
def test_demo_writes_svg_diagrams(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "graphbp", "demo", "--epochs", "2", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "epoch   1/2" in text and "epoch   2/2" in text and "val_accuracy" in text
    assert "test accuracy:" in text and "wall time:" in text
    acc = float(text.split("test accuracy:")[1].split("%")[0])
    assert acc > 85.0
    for name in ("forward", "gradient"):
        svg = (out / f"{name}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") or "<svg" in svg[:500]
        assert "</svg>" in svg
    # drawn by graphbp.render: gradient nodes are labelled with the rule that made them
    assert "vjp of matmul" in (out / "gradient.svg").read_text()


def test_demo_without_dot_writes_dot_files_and_says_how_to_get_svg(tmp_path, monkeypatch, capsys):
    import graphbp.train.demo as demo

    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    assert cli.main(["demo", "--epochs", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    hint = [line for line in text.splitlines() if "dot -Tsvg" in line]
    assert len(hint) == 1 and "Graphviz" in hint[0]
    for name in ("forward", "gradient"):
        src = (tmp_path / f"{name}.dot").read_text()
        assert "digraph" in src and src.rstrip().endswith("}")
    assert "vjp of" in (tmp_path / "gradient.dot").read_text()
    assert not list(tmp_path.glob("*.svg"))


def test_cli_help_and_unknown_command(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert gb.__version__ in capsys.readouterr().out


def test_demo_result_is_returned_by_the_function(tmp_path):
    from graphbp.train.demo import run_demo

    res = run_demo(epochs=1, out=tmp_path, progress=False)
    assert 0.0 < res.test_accuracy <= 1.0 and len(res.history) == 1
    assert [p.stem for p in res.diagrams] == ["forward", "gradient"]
