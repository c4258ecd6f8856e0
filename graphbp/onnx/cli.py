"""``graphbp export FILE.py[:FUNCTION] --out model.onnx``: a user's program as ONNX."""

from __future__ import annotations

import argparse
import sys

from ..errors import GraphbpError


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export the program built by a function in a Python file as ONNX",
                       description="Export the Program or nodes returned by FUNCTION (default: build) in "
                       "FILE.py as an ONNX model: forward, gradients and parameter updates alike.")
    p.add_argument("target", metavar="FILE.py[:FUNCTION]")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 20, at least 18)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..render.cli import CommandError, load_target
    from .export import export_onnx

    try:
        target, _, _ = load_target(args.target)
        try:
            model = export_onnx(target, args.out, opset=args.opset)
        except OSError as e:  # writing the model (an error the program file raises is its own)
            raise CommandError(f"cannot write {args.out}: {e.strerror or e}") from None
    except (CommandError, GraphbpError, ValueError, ImportError) as e:
        print(f"graphbp export: error: {e}", file=sys.stderr)
        return 2
    graph = model.graph
    print(f"{args.out}: {len(graph.node)} ONNX nodes, inputs {[i.name for i in graph.input]}, "
          f"outputs {[o.name for o in graph.output]}")
    return 0
