"""Writing diagrams to files and showing them in Jupyter.

``render`` picks the format from the file suffix and writes atomically (a temporary file
in the same directory, then ``os.replace``), so a crash never leaves half an SVG behind.
DOT needs nothing but Python; SVG/PNG/PDF need Graphviz's ``dot`` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from ..errors import GraphbpError
from .dot import to_dot

FORMATS = ("svg", "png", "pdf", "dot", "html")


class RenderError(GraphbpError):
    """A diagram could not be written (unknown format, or Graphviz missing/failing)."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


def run_dot(source: str, fmt: str) -> bytes:
    """Lay out DOT ``source`` with Graphviz and return the ``fmt`` bytes."""
    exe = shutil.which("dot")
    if exe is None:
        raise RenderError(
            f"writing {fmt.upper()} needs Graphviz's `dot` program, which is not on PATH; install "
            "Graphviz (apt install graphviz, brew install graphviz, conda install graphviz) "
            "or render to a .dot file instead"
        )
    proc = subprocess.run([exe, f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RenderError(f"dot -T{fmt} failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
    return proc.stdout


def render(target: Any, path: str | os.PathLike, view: str = "forward", **options: Any) -> str:
    """Write a diagram of ``target`` to ``path``; the suffix (.svg .png .pdf .dot .html) is the format.

    ``options`` are those of :func:`graphbp.to_dot` (``optimized``, ``collapse``,
    ``hide_shape_ops``, ``max_nodes``, ...). Returns the path written. A ``.html`` file is
    the interactive explorer with every view (:func:`graphbp.render.html.to_html`; choose
    tabs with ``views=[...]``).
    """
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in FORMATS:
        raise RenderError(f"cannot tell the format of {path!r}: use a .svg, .png, .pdf, .dot or .html suffix")
    if fmt == "html":
        from .html import to_html

        write_atomic(path, to_html(target, **options).encode("utf-8"))
        return path
    source = to_dot(target, view, **options).source
    data = source.encode("utf-8") if fmt == "dot" else run_dot(source, fmt)
    write_atomic(path, data)
    return path


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` crash-safely (see :func:`graphbp.io.atomic.atomic_write`)."""
    from ..io.atomic import atomic_write

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def to_svg(target: Any, view: str = "forward", **options: Any) -> str:
    """The SVG text of a diagram (needs ``dot``)."""
    return run_dot(to_dot(target, view, **options).source, "svg").decode("utf-8")


def repr_svg(target: Any, view: str) -> str | None:
    """SVG for Jupyter, or None when Graphviz is missing (Jupyter then shows the text repr)."""
    if not dot_available():
        return None
    try:
        return to_svg(target, view)
    except GraphbpError:
        return None


def repr_mimebundle(target: Any, view: str) -> dict[str, str]:
    bundle = {"text/plain": repr(target)}
    svg = repr_svg(target, view)
    if svg is not None:
        bundle["image/svg+xml"] = svg
    return bundle
