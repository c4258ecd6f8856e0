"""Developer sessions: ``nox -s tests``, ``lint``, ``demo``, ``bench``, ``docs``."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
ROOT = Path(__file__).parent


@nox.session
def tests(session: nox.Session) -> None:
    """The README's test command in a fresh environment."""
    session.install("-e", ".[test,mpi]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (rules in pyproject.toml)."""
    session.install("ruff>=0.4")
    session.run("ruff", "check", "graphbp", "tests", "examples", "benchmarks", "docs", "noxfile.py")


@nox.session
def demo(session: nox.Session) -> None:
    """Install and run ``graphbp demo`` (trains the digits MLP, writes diagrams)."""
    session.install("-e", ".")
    session.run("graphbp", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (``benchmarks/run.py``) with the bench extra installed."""
    session.install("-e", ".[bench,mpi]")
    session.run("python", "benchmarks/run.py", *session.posargs)
    session.run("python", "benchmarks/memory.py")  # W8 and W6 per remat mode (docs/memory.md)
    session.run("python", "benchmarks/distributed.py")  # W2 over 2 MPI ranks (docs/distributed.md)


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate the op reference, the interop page and the committed explorer pages, then build
    docs/ with Sphinx and MyST into docs/_build/html (the gallery's ``graphbp-diagram`` directives
    draw the examples at build time)."""
    session.install("-e", ".[onnx,docs]")
    for script in ("docs/gen_ops.py", "docs/gen_interop.py", "docs/gen_explorer.py"):
        if (ROOT / script).exists():
            session.run("python", script)
        else:
            session.log(f"{script} not found, skipped")
    session.run("python", "-m", "sphinx", "-b", "html", "docs", "docs/_build/html", *session.posargs)
