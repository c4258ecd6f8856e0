"""graphbp: a compiler for backpropagation on static symbolic graphs.

Build a graph with NumPy-named ops, derive its gradient graph with :func:`grad`, and
:func:`compile` both into a :class:`Program` that runs over NumPy arrays.
"""

from __future__ import annotations

from . import ops
from .autodiff import grad, vjp
from .errors import (
    DTypeError, FeedError, GraphbpError, GraphError, GraphFormatError, NumericsError, ShapeError,
    UnusedParameterWarning, DTypePromotionWarning,
)
from .graph import Node, Provenance, TensorType, checkpoint, scope, toposort
from .graph.nx import to_networkx
from .ops import *  # noqa: F401,F403 - every op builder is public as gb.<name>
from .ops import Op
from .runtime import Program, RuntimeOptions, Schedule, compile, evaluate
from . import passes  # noqa: E402 - the rewrite passes gb.compile runs (gb.passes.PASS_NAMES)
from . import data, train  # noqa: E402 - after the ops: training builds graphs with them
from . import nn  # noqa: E402 - recurrent cells (plain functions of nodes)
from . import distributed  # noqa: E402 - imports without mpi4py; gb.distributed.world() needs it
from .train import clip_by_global_norm, init, optim
from .io import Limits, LoadedGraph, load, load_checkpoint, save, save_checkpoint  # noqa: E402
from .check import GradCheckError, check_grad  # noqa: E402
from .onnx import export_onnx, import_onnx  # noqa: E402 - needs the onnx extra only when called
from . import render  # noqa: E402 - a callable package: gb.render(target, path) draws
from .render import explain, to_dot, to_html, to_latex  # noqa: E402

__version__ = "0.1.0"
