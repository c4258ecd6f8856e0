"""Sphinx directive ``graphbp-diagram``: draw a graph from the docs' own example code at build time.

In ``conf.py``::

    extensions = ["graphbp.sphinxext"]
    graphbp_diagram_root = ".."        # FILE paths are relative to this (default: conf.py's folder)

In reStructuredText (or MyST Markdown as a ```` ```{graphbp-diagram} ```` fence)::

    .. graphbp-diagram:: examples/mlp_digits.py:build
       :view: joint
       :collapse: layers
       :format: svg

       The digits MLP's forward and backward schedules.

``FILE.py[:FUNCTION]`` is read as ``graphbp render`` reads it. ``:format:`` is ``svg`` (the
static diagram inline in the page), ``html`` (the interactive explorer, written next to the
page and shown in an iframe with a link to open it full size) or ``latex`` (the schedules as
numbered equations, through Sphinx's math support). The directive's content or ``:caption:``
becomes the figure caption.

Results are cached in the build's doctree folder under a key made of the file's bytes, the
function, the options and the graphbp version, so an unchanged example is not run again.
When the function raises, the build gets a warning that names the file and the error, and
the page says the diagram is missing; the build does not stop.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives

try:
    from sphinx.util import logging as sphinx_logging
    from sphinx.util.docutils import SphinxDirective
except ImportError as e:  # pragma: no cover - exercised only without sphinx
    raise ImportError("graphbp.sphinxext needs Sphinx: pip install 'graphbp[docs]'") from e

FORMATS = ("svg", "html", "latex")
logger = sphinx_logging.getLogger(__name__)


def _format(arg: str | None) -> str:
    return directives.choice(arg, FORMATS)


class GraphbpDiagram(SphinxDirective):
    """``.. graphbp-diagram:: FILE.py[:FUNCTION]`` (see the module docstring)."""

    required_arguments = 1
    has_content = True
    option_spec = {
        "view": directives.unchanged,
        "collapse": directives.unchanged,
        "format": _format,
        "caption": directives.unchanged,
        "max-nodes": directives.nonnegative_int,
        "unoptimized": directives.flag,
        "height": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        spec = self.arguments[0]
        fmt = self.options.get("format", "svg")
        root = os.path.join(self.env.app.confdir, self.config.graphbp_diagram_root)
        file_part, _, func = spec.partition(":") if spec.count(":") == 1 and not re.match(r"^[A-Za-z]:[\\/]", spec) \
            else (spec, "", "")
        path = os.path.normpath(os.path.join(root, file_part))
        self.env.note_dependency(path)
        try:
            body = self._cached(path, func or "build", fmt)
        except Exception as e:  # the user's example failed: warn, keep building
            logger.warning(f"graphbp-diagram {spec}: {type(e).__name__}: {e}", location=self.get_location())
            return [nodes.paragraph(text=f"(graphbp-diagram {spec} could not be drawn: {e})")]
        made = self._nodes(body, fmt, spec)
        caption = self.options.get("caption") or "\n".join(self.content).strip()
        figure = nodes.figure(classes=["graphbp-diagram", f"graphbp-{fmt}"])
        figure += made
        if caption:
            parsed, _ = self.state.inline_text(caption, self.lineno)
            figure += nodes.caption(caption, "", *parsed)
        return [figure]

    # -- rendering with a cache ---------------------------------------------------------------
    def _key(self, path: str, func: str, fmt: str) -> str:
        from . import __version__

        h = hashlib.sha256()
        with open(path, "rb") as f:
            h.update(f.read())
        opts = sorted((k, str(v)) for k, v in self.options.items() if k != "caption")
        h.update(repr((func, fmt, opts, __version__)).encode("utf-8"))
        return h.hexdigest()[:20]

    def _cached(self, path: str, func: str, fmt: str) -> str:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
        key = self._key(path, func, fmt)
        cache = os.path.join(self.env.app.doctreedir, "graphbp-diagrams")
        os.makedirs(cache, exist_ok=True)
        target = os.path.join(cache, f"{key}.{fmt}")
        if os.path.isfile(target):
            with open(target, encoding="utf-8") as f:
                return f.read()
        text = self._render(f"{path}:{func}", fmt)
        tmp = target + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
        return text

    def _render(self, spec: str, fmt: str) -> str:
        from .render.cli import CommandError, _collapse_arg, load_target
        from .render.html import to_html
        from .render.latex import to_latex
        from .render.output import to_svg

        try:
            target, _, _ = load_target(spec)
        except CommandError as e:
            raise RuntimeError(str(e)) from None
        optimized = "unoptimized" not in self.options
        collapse = _collapse_arg(self.options.get("collapse"))
        max_nodes = self.options.get("max-nodes", 250) or None
        if fmt == "latex":
            return to_latex(target)  # the graph as built: each rule names the user's forward op
        if fmt == "html":
            views = [v.strip() for v in self.options["view"].split(",")] if "view" in self.options else None
            return to_html(target, views, optimized=optimized, collapse=collapse, max_nodes=max_nodes)
        view = self.options.get("view", "joint")
        if view == "optimization":
            return to_svg(target, view, max_nodes=max_nodes)
        return to_svg(target, view, optimized=optimized, collapse=collapse, max_nodes=max_nodes)

    def _nodes(self, body: str, fmt: str, spec: str) -> list[nodes.Node]:
        if fmt == "svg":
            start = body.find("<svg")
            return [nodes.raw("", f'<div class="graphbp-svg">{body[start:]}</div>', format="html")]
        if fmt == "latex":
            blocks = re.findall(r"\\paragraph\{([^}]*)\}\s*(\\begin\{align\}.*?\\end\{align\})?", body, re.S)
            out: list[nodes.Node] = []
            for title, block in blocks:
                out.append(nodes.rubric(text=title))
                if block:
                    # the whole align, unwrapped: Sphinx would wrap the rows in \begin{split},
                    # where MathJax refuses \tag (the step numbers)
                    out.append(nodes.math_block(block, block, nowrap=True, number=None))
            return out
        name = f"{hashlib.sha256(body.encode('utf-8')).hexdigest()[:20]}.html"
        out_dir = os.path.join(self.env.app.outdir, "_graphbp")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(body)
        up = "../" * self.env.docname.count("/")
        uri = f"{up}_graphbp/{name}"
        height = self.options.get("height", "600px")
        html = (f'<iframe class="graphbp-explorer" src="{uri}" title="graphbp explorer: {spec}" '
                f'style="width:100%;height:{height};border:1px solid #e5e7eb" loading="lazy"></iframe>'
                f'<p><a href="{uri}">open the explorer full size</a></p>')
        return [nodes.raw("", html, format="html")]


def setup(app: Any) -> dict[str, Any]:
    from . import __version__

    app.add_config_value("graphbp_diagram_root", ".", "env")
    app.add_directive("graphbp-diagram", GraphbpDiagram)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
