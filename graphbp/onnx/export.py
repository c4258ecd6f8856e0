"""``gb.export_onnx``: any graphbp program (forward, gradients, a training step) as ONNX.

graphbp's gradient graphs are ordinary graphs of ordinary ops, so the backward pass exports
like any forward pass: a runtime that knows nothing of autodiff can run it. The exported
graph is the one the user built (``Program.user_outputs`` and ``user_updates``), not the
rewritten one, so it uses only public ops and matches ``gb.compile(..., optimize=False)``;
ONNX runtimes apply their own graph optimisations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import GraphError
from ..graph.node import Node
from ..graph.traverse import toposort
from ..ops.leaves import Constant, Input, Param
from ._deps import require_onnx
from .builder import OnnxBuilder, tensor_dtype
from .emit import EMITTERS, NOT_EXPORTED
from .handlers import PARAM_DOC, STATE_DOC

DEFAULT_OPSET = 20
MIN_OPSET = 18  # reduce ops take their axes as an input from 18 on
IR_VERSION = 10  # what ONNX Runtime 1.2x and later load


def export_onnx(target: Any, path: str | os.PathLike | None = None, *, inputs: Sequence[Node] | None = None,
                opset: int | None = None, name: str = "graphbp") -> Any:
    """Write ``target`` as an ONNX model (and return the ``onnx.ModelProto``).

    Parameters
    ----------
    target : Program, Node or sequence of Node
        A compiled :class:`~graphbp.Program` exports its inputs, outputs and parameter
        updates: the updates' new values become extra outputs named ``<param>.new``, after
        the program's outputs. Nodes export as a model with those outputs.
    path : path-like, optional
        Where to write the model (atomically). ``None`` only returns it.
    inputs : sequence of Node, optional
        With node targets: the graph inputs in order (default: every ``gb.input`` the
        outputs reach, in the order they were built).
    opset : int, optional
        The ONNX opset (default 20, at least 18).

    Notes
    -----
    Parameters and constants become initializers named after the parameters; unknown
    (``None``) dims become symbolic dims; every ONNX node's name and doc string say which
    graphbp op, gradient rule and user line it comes from.
    """
    onnx = require_onnx()
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ValueError(f"export_onnx: opset {opset} is too old; graphbp exports opset {MIN_OPSET} or newer")
    ins, outs, updates = _unpack(target, inputs)
    b = OnnxBuilder(onnx, opset)
    names: dict[Node, str] = {}
    graph_inputs = []
    for x in ins:
        names[x] = b.reserve(x.op.input_name)
        graph_inputs.append(value_info(onnx, names[x], x, symbolic=True))
    roots = outs + [v for _, v in updates]
    order = toposort(roots)
    stray = [n for n in order if isinstance(n.op, Input) and n not in names]
    if stray:
        raise GraphError("export_onnx: the outputs depend on input(s) not listed in inputs: "
                         + ", ".join(repr(n.op.input_name) for n in stray))
    for n in order:
        if isinstance(n.op, Param) and n not in names:
            names[n] = b.initializer(b.reserve(_unique_param_name(b, n.op.param_name)), n.op.value,
                                     PARAM_DOC if n.op.trainable else STATE_DOC)
    emit_nodes(b, order, names)
    graph_outputs = []
    out_names = [_output_name(o, k) for k, o in enumerate(outs)] + [f"{p.op.param_name}.new" for p, _ in updates]
    for node, want in zip(roots, out_names):
        final = b.fresh(want)
        b.prefix, b.doc = "", f"output {final}"
        b.op("Identity", [names[node]], out=final)
        graph_outputs.append(value_info(onnx, final, node))
    graph = onnx.helper.make_graph(b.nodes, name, graph_inputs, graph_outputs, initializer=b.initializers,
                                   doc_string="exported by graphbp")
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="graphbp", producer_version=_version())
    model.ir_version = IR_VERSION
    if path is not None:
        from ..io.atomic import atomic_write

        data = model.SerializeToString()
        atomic_write(path, lambda f: f.write(data))
    return model


def emit_nodes(b: OnnxBuilder, order: Sequence[Node], names: dict[Node, str]) -> None:
    """Emit every node of ``order`` not yet in ``names`` (leaves: constants only)."""
    for n in order:
        if n in names:
            continue
        op = n.op
        if isinstance(op, Constant):
            names[n] = b.const(op.value)
            continue
        if isinstance(op, (Input, Param)):
            raise GraphError(f"export_onnx: {n.describe()} is not bound to an ONNX value")
        emitter = EMITTERS.get(type(op))
        if emitter is None:
            why = NOT_EXPORTED.get(type(op), "graphbp has no ONNX mapping for it yet")
            raise GraphError(f"export_onnx: op {op.name} cannot be exported: {why}\n  node: {n.describe()}")
        b.prefix, b.doc = _label(n), _doc(n)
        names[n] = emitter(b, n, [names[i] for i in n.inputs])


def emit_subgraph(b: OnnxBuilder, root: Node, bound: Mapping[Node, str]) -> str:
    """Emit a graph of builder calls over placeholder inputs bound to ONNX names."""
    names = dict(bound)
    saved = b.prefix, b.doc
    emit_nodes(b, toposort([root]), names)
    b.prefix, b.doc = saved
    return names[root]


def _unpack(target: Any, inputs: Sequence[Node] | None):
    from ..runtime.program import Program

    if isinstance(target, Program):
        if inputs is not None:
            raise GraphError("export_onnx: a Program brings its own inputs; do not pass inputs=")
        return list(target.inputs), list(target.user_outputs), list(target.user_updates)
    outs = [target] if isinstance(target, Node) else list(target)
    for o in outs:
        if not isinstance(o, Node):
            raise GraphError(f"export_onnx: target must be a Program or nodes, got {type(o).__name__}")
    if inputs is None:
        ins = [n for n in toposort(outs) if isinstance(n.op, Input)]
        ins.sort(key=lambda n: n.serial)
    else:
        ins = list(inputs)
        for i in ins:
            if not isinstance(i, Node) or not isinstance(i.op, Input):
                raise GraphError(f"export_onnx: inputs must be gb.input nodes, got {i!r}")
    return ins, outs, []


def value_info(onnx: Any, name: str, t: Any, *, symbolic: bool = False):
    """A typed ONNX value (``t`` a node or a TensorType); unknown dims are named when ``symbolic``."""
    dims = [d if d is not None else (f"{name}_dim{k}" if symbolic else None) for k, d in enumerate(t.shape)]
    return onnx.helper.make_tensor_value_info(name, tensor_dtype(onnx.helper, t.dtype), dims)


def _output_name(node: Node, k: int) -> str:
    """``loss`` for a named node, ``grad.W1`` for the gradient of parameter W1, else ``output<k>``."""
    wrt = _gradient_of(node)
    if wrt is not None and wrt.name:
        return f"grad.{wrt.name}"
    return node.name or f"output{k}"


def _gradient_of(node: Node) -> Node | None:
    """The node a gradient output is the total gradient of (from its provenance)."""
    if not node.provenance:
        return None
    p = node.provenance[0]
    if p.rule in ("accumulate", "zeros"):
        return p.forward
    if p.rule in ("vjp", "unbroadcast") and p.input_index is not None:
        return p.forward.inputs[p.input_index]
    return None


def _label(n: Node) -> str:
    """A readable ONNX name prefix: ``grad.matmul.in0/`` for gradient nodes, ``h1/`` for named ones."""
    if n.provenance:
        p = n.provenance[0]
        idx = f".in{p.input_index}" if p.input_index is not None else ""
        return f"{p.rule}.{p.forward.name or p.forward.op.name}{idx}/"
    return f"{n.name}/" if n.name else ""


def _doc(n: Node) -> str:
    parts = [f"graphbp {n.op}"]
    if n.provenance:
        parts.append("; ".join(p.describe() for p in n.provenance))
    if n.origin:
        parts.append(f"built at {n.origin}")
    return " | ".join(parts)


def _unique_param_name(b: OnnxBuilder, name: str) -> str:
    k, cand = 1, name
    while cand in b._names:
        cand = f"{name}_{k}"
        k += 1
    return cand


def _version() -> str:
    from .. import __version__

    return __version__

