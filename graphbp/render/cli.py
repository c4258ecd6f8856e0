"""``graphbp render`` and ``graphbp explain``: diagrams and text for graphs in a user's file.

``FILE.py[:FUNCTION]`` names a Python file and a function in it (default ``build``) that
takes no arguments and returns a Program, a node, or a list of nodes. The file is the
user's own code and is run with :func:`runpy.run_path` (its ``__main__`` block is not).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from typing import Any

from ..errors import GraphbpError
from .views import VIEWS

DEFAULT_FUNCTION = "build"


class CommandError(Exception):
    """A user mistake on the command line (bad file, function, view...)."""


def load_target(spec: str) -> tuple[Any, str, str]:
    """Run ``FILE.py[:FUNCTION]`` and return ``(result, file stem, function name)``."""
    path, _, func = spec.rpartition(":") if _has_function(spec) else (spec, "", "")
    func = func or DEFAULT_FUNCTION
    if not os.path.isfile(path):
        raise CommandError(f"no such file: {path}")
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)  # let the file import its neighbours, as `python FILE` would
    try:
        namespace = runpy.run_path(path, run_name="__graphbp_render__")
    finally:
        if sys.path and sys.path[0] == directory:
            sys.path.pop(0)
    fn = namespace.get(func)
    if fn is None:
        funcs = sorted(k for k, v in namespace.items() if callable(v) and getattr(v, "__module__", None) == "__graphbp_render__")
        hint = f"; functions defined there: {', '.join(funcs)}" if funcs else ""
        raise CommandError(f"{path} defines no function {func!r}{hint} (use FILE.py:FUNCTION)")
    if not callable(fn):
        raise CommandError(f"{path}:{func} is a {type(fn).__name__}, not a function")
    result = fn()
    _check_result(result, f"{path}:{func}")
    return result, os.path.splitext(os.path.basename(path))[0], func


def _has_function(spec: str) -> bool:
    head, sep, tail = spec.rpartition(":")
    return bool(sep) and bool(head) and os.sep not in tail and "/" not in tail and not tail.endswith(".py")


def _check_result(result: Any, where: str) -> None:
    from ..graph.node import Node
    from .subject import is_program

    if is_program(result) or isinstance(result, Node):
        return
    if isinstance(result, (list, tuple)) and result and all(isinstance(r, Node) for r in result):
        return
    raise CommandError(
        f"{where} returned a {type(result).__name__}; it must return a Program (gb.compile), a node, "
        "or a list of nodes"
    )


def add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="draw the graphs built by a function in a Python file",
                       description="Draw forward, backward, joint and optimisation diagrams of the "
                       "Program or nodes returned by FUNCTION (default: build) in FILE.py.")
    p.add_argument("target", metavar="FILE.py[:FUNCTION]")
    p.add_argument("--view", default=None,
                   help=f"comma-separated views among {', '.join(VIEWS)} (default forward,backward,joint; "
                   "for html also optimization when FUNCTION returns a Program)")
    p.add_argument("--format", default="svg", choices=["svg", "png", "pdf", "dot", "html"],
                   help="output format (default svg); html writes one interactive explorer file with every view")
    p.add_argument("--out", default=".", help="output directory (default: current directory)")
    p.add_argument("--collapse", default=None, help="'scope', 'grad', 'layers', a depth, or scope names (comma-separated)")
    p.add_argument("--hide-shape-ops", action="store_true", help="draw reshape/transpose/... as plain edges")
    p.add_argument("--max-nodes", type=int, default=250, help="collapse above this many boxes (0: never)")
    p.add_argument("--unoptimized", action="store_true", help="draw the graph as built, before rewrite passes")
    p.set_defaults(func=run_render)


def add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="print the schedules and cost summary of a graph in a Python file",
                       description="Print the forward and backward schedules (step, op, type, bytes, "
                       "provenance) and a summary (node counts, FLOPs, peak memory, saved activations).")
    p.add_argument("target", metavar="FILE.py[:FUNCTION]")
    p.add_argument("--unoptimized", action="store_true", help="explain the graph as built, before rewrite passes")
    p.add_argument("--rows", type=int, default=None, help="batch size used to compare memory at unknown dims")
    p.set_defaults(func=run_explain)


def _collapse_arg(text: str | None) -> Any:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    if text in ("scope", "grad", "layers"):
        return text
    return [t for t in text.split(",") if t]


def run_render(args: argparse.Namespace) -> int:
    from .output import render

    views = [v.strip() for v in (args.view or "forward,backward,joint").split(",") if v.strip()]
    try:
        bad = [v for v in views if v not in VIEWS]
        if bad or not views:
            raise CommandError(f"unknown view(s) {', '.join(bad) or '(none)'}; choose among {', '.join(VIEWS)}")
        target, stem, func = load_target(args.target)
        os.makedirs(args.out, exist_ok=True)
        if args.format == "html":
            path = os.path.join(args.out, f"{stem}.{func}.html")
            render(target, path, views=views if args.view else None, optimized=not args.unoptimized,
                   collapse=_collapse_arg(args.collapse), hide_shape_ops=args.hide_shape_ops,
                   max_nodes=args.max_nodes or None)
            print(path)
            return 0
        for view in views:
            path = os.path.join(args.out, f"{stem}.{func}.{view}.{args.format}")
            if view == "optimization":
                render(target, path, view=view, max_nodes=args.max_nodes or None)
            else:
                render(target, path, view=view, optimized=not args.unoptimized, collapse=_collapse_arg(args.collapse),
                       hide_shape_ops=args.hide_shape_ops, max_nodes=args.max_nodes or None)
            print(path)
    except (CommandError, GraphbpError, ValueError) as e:
        print(f"graphbp render: error: {e}", file=sys.stderr)
        return 2
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from .explain import explain

    try:
        target, _, _ = load_target(args.target)
        sys.stdout.write(explain(target, optimized=not args.unoptimized, rows=args.rows))
    except (CommandError, GraphbpError, ValueError) as e:
        print(f"graphbp explain: error: {e}", file=sys.stderr)
        return 2
    return 0
