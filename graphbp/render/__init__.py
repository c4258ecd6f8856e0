"""Graphviz/DOT and text views of graphs and programs.

``gb.to_dot(target, view=...)`` returns a ``graphviz.Digraph``; ``gb.render(target, path)``
writes .svg/.png/.pdf/.dot or the interactive .html explorer; ``gb.explain(target)`` (and
``program.explain()``) gives text, ``gb.to_latex(target)`` the schedules as equations.
See docs/reading-diagrams.md for how to read the pictures.
"""

import sys
import types

from .collapse import DEFAULT_MAX_NODES
from .dot import to_dot
from .explain import Explanation, explain
from .html import to_html
from .latex import to_latex
from .optview import pass_counts, pass_diagrams
from .output import RenderError, dot_available, render, repr_mimebundle, repr_svg, to_svg

__all__ = [
    "DEFAULT_MAX_NODES",
    "Explanation",
    "RenderError",
    "dot_available",
    "explain",
    "pass_counts",
    "pass_diagrams",
    "render",
    "repr_mimebundle",
    "repr_svg",
    "to_dot",
    "to_html",
    "to_latex",
    "to_svg",
]


class _CallableModule(types.ModuleType):
    """``gb.render(target, path)`` calls :func:`render` while ``graphbp.render`` stays this
    package, so ``import graphbp.render.dot`` and ``gb.render.to_dot`` keep working."""

    def __call__(self, target, path, view: str = "forward", **options):
        return render(target, path, view, **options)


sys.modules[__name__].__class__ = _CallableModule
