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
from .dot import scene_of, to_dot
from .scene import Scene

FORMATS = ("svg", "png", "pdf", "dot", "html")


class RenderError(GraphbpError):
    """A diagram could not be written (unknown format, or Graphviz missing/failing)."""


def dot_available() -> bool:
    return shutil.which("dot") is not None


def run_dot(source: str, fmt: str, program: str = "dot", *args: str) -> bytes:
    """Lay out DOT ``source`` with Graphviz's ``program`` and return the ``fmt`` bytes."""
    exe = shutil.which(program)
    if exe is None:
        raise RenderError(
            f"writing {fmt.upper()} needs Graphviz's `{program}` program, which is not on PATH; install "
            "Graphviz (apt install graphviz, brew install graphviz, conda install graphviz) "
            "or render to a .dot file instead"
        )
    proc = subprocess.run([exe, *args, f"-T{fmt}"], input=source.encode("utf-8"), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RenderError(f"{program} -T{fmt} failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
    return proc.stdout


def layout_scene(scene: Scene, fmt: str) -> bytes:
    """Lay out a scene with Graphviz, in two passes when it is :meth:`~.scene.Scene.layered`.

    Pass one runs ``dot`` without the overlay edges and writes the positions as DOT; pass two
    adds the overlay edges and runs ``neato -n2``, which keeps every position and spline of
    pass one and draws only the new edges, straight. A small scene is laid out in one pass
    (its cross arrows routed), and falls back to two passes when ``dot`` refuses it with
    "trouble in init_rank", a Graphviz failure on ``constraint=false`` edges between nested
    clusters.
    """
    if scene.layered():
        return _two_passes(scene, fmt)
    try:
        return run_dot(scene.to_digraph().source, fmt)
    except RenderError as e:
        if "trouble in init_rank" in str(e) and any(edge.overlay for edge in scene.edges.values()):
            return _two_passes(scene, fmt)
        raise


def _two_passes(scene: Scene, fmt: str) -> bytes:
    laid = run_dot(scene.to_digraph(overlay=False).source, "dot").decode("utf-8")
    end = laid.rstrip().rfind("}")
    source = laid[:end] + scene.overlay_statements() + "}\n"
    return run_dot(source, fmt, "neato", "-n2", "-Gsplines=line")


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
    data = to_dot(target, view, **options).source.encode("utf-8") if fmt == "dot" else draw(target, view, fmt, **options)
    write_atomic(path, data)
    return path


def draw(target: Any, view: str, fmt: str, **options: Any) -> bytes:
    """The laid-out diagram as ``fmt`` bytes (svg, png, pdf); options as for :func:`to_dot`."""
    if view == "optimization":
        return run_dot(to_dot(target, view, **options).source, fmt)
    return layout_scene(scene_of(target, view, **options), fmt)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` crash-safely (see :func:`graphbp.io.atomic.atomic_write`)."""
    from ..io.atomic import atomic_write

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def to_svg(target: Any, view: str = "forward", **options: Any) -> str:
    """The SVG text of a diagram (needs ``dot``)."""
    return draw(target, view, "svg", **options).decode("utf-8")


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
