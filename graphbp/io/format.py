"""``gb.save`` / ``gb.load``: graphs and compiled programs as versioned, inspectable files.

A graph file is a ZIP archive with two members: ``graph.json`` (the nodes in topological
order, each naming its op by its registered name, its parameters, inputs by index, name,
scope, source line and gradient provenance) and ``arrays.npz`` (parameter and constant
values, read without pickle). The format is specified in ``docs/graph-format.md``.

Loading is a pure parse: it never imports, evaluates or unpickles anything from the file.
Ops are looked up in :data:`graphbp.ops.OP_CLASSES` (ops since removed, in
:mod:`graphbp.io.legacy`), built from checked parameters and re-typed with their own shape
rules; any inconsistency is a
:class:`~graphbp.errors.GraphFormatError` naming the file, the place and the problem.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import GraphbpError, GraphFormatError
from ..graph.context import Provenance
from ..graph.node import Node
from ..graph.source import SourceLocation
from ..graph.subgraph import Subgraph
from ..graph.types import TensorType, TupleType
from ..ops.base import OpError
from ..ops.control import TupleGet
from ..ops.leaves import Constant, Input, Leaf, Param
from .atomic import atomic_write
from .codec import ArrayStore, Decoder, encode
from .container import DEFAULT_LIMITS, Limits, dump_json, encode_npz, fail, read_container, write_zip
from .legacy import LEGACY_OPS, expand

FORMAT_NAME = "graphbp.graph"
FORMAT_VERSION = 2
"""Version 2 adds higher-order ops (``{"subgraph": ...}`` parameters) and multi-output
nodes (``{"items": [...]}`` types); version 1 files load unchanged."""
_MEMBERS = ("graph.json", "arrays.npz")
_TOP_KEYS = {"format", "version", "graphbp_version", "kind", "nodes", "inputs", "outputs", "updates", "compile"}
_NODE_KEYS = {"op", "inputs", "params", "type", "name", "scope", "origin", "provenance"}
_COMPILE_FLAGS = ("optimize", "debug", "check_numerics")
_RULE = re.compile(r"[a-z_]{1,32}\Z")


def op_registry() -> dict[str, type]:
    """Registered op name -> class, from ``OP_CLASSES`` (read at call time, so new ops count).

    Two classes sharing a public name are told apart as ``name/ClassName``.
    """
    from ..ops import OP_CLASSES

    counts: dict[str, int] = {}
    for cls in OP_CLASSES:
        counts[cls.name] = counts.get(cls.name, 0) + 1
    return {(cls.name if counts[cls.name] == 1 else f"{cls.name}/{cls.__name__}"): cls for cls in OP_CLASSES}


class LoadedGraph:
    """The graph a file holds: output nodes, the inputs and parameters they read.

    Attributes
    ----------
    outputs : list[Node]
        The saved outputs, in order.
    inputs : list[Node]
        Every ``gb.input`` node of the graph, in topological order (the feed order of
        :meth:`compile` by default).
    params : list[Node]
        Every parameter node, with its loaded value (fresh arrays, not shared with the
        graph that was saved).
    nodes : list[Node]
        All nodes in file (topological) order.
    """

    def __init__(self, nodes: list[Node], inputs: list[Node], outputs: list[Node]) -> None:
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs
        self.params = [n for n in nodes if isinstance(n.op, Param)]

    def node(self, name: str) -> Node:
        """The node called ``name`` (inputs, parameters and named intermediates)."""
        found = [n for n in self.nodes if n.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} nodes are named {name!r}")
        return found[0]

    def compile(self, inputs: Sequence[Node] | None = None, updates=None, **flags: Any):
        """``gb.compile`` the loaded outputs (feeds default to :attr:`inputs`)."""
        from ..runtime import compile as compile_

        return compile_(self.inputs if inputs is None else inputs, self.outputs, updates, **flags)

    def __repr__(self) -> str:
        return f"<LoadedGraph {len(self.nodes)} nodes, {len(self.inputs)} inputs, {len(self.outputs)} outputs>"


# ----------------------------------------------------------------------------- saving
def save(path: str | os.PathLike, outputs_or_program: Any) -> None:
    """Write a graph (its output nodes) or a compiled ``Program`` to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        The file to write (conventionally ``*.gbp``). It is replaced atomically: readers
        see the old or the new file, never a partial one.
    outputs_or_program : Node, sequence of Node, or Program
        For a program, its inputs, outputs, parameter updates and compile flags are kept,
        and :func:`load` returns a ready ``Program``.
    """
    doc, arrays = to_document(outputs_or_program)
    members = [("graph.json", dump_json(doc), True), ("arrays.npz", encode_npz(arrays), False)]
    atomic_write(path, lambda f: write_zip(f, members))


def to_document(obj: Any) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON document and the arrays of a graph or program (what :func:`save` writes)."""
    from ..runtime.program import Program

    if isinstance(obj, Program):
        kind = "program"
        inputs = list(obj.inputs)
        outputs = list(getattr(obj, "user_outputs", obj.outputs))
        updates = [tuple(u) for u in getattr(obj, "user_updates", obj.updates)]
        flags = {k: bool(getattr(obj, k, False)) for k in _COMPILE_FLAGS}
        flags["optimize"] = bool(getattr(obj, "optimize", True))
    else:
        kind = "graph"
        outputs = [obj] if isinstance(obj, Node) else list(obj)
        if not all(isinstance(o, Node) for o in outputs):
            raise GraphFormatError("save: expected a node, a sequence of nodes or a Program")
        inputs, updates, flags = [], [], None
    nodes = _closure(outputs + [x for u in updates for x in u] + inputs)
    placeholders = {p for n in nodes for body in n.op.subgraphs() for p in body.inputs}
    index = {n: i for i, n in enumerate(nodes)}
    registry = {cls: name for name, cls in op_registry().items()}
    store = ArrayStore()
    entries = [_encode_node(n, index, registry, store) for n in nodes]
    if kind == "graph":
        inputs = [n for n in nodes if isinstance(n.op, Input) and n not in placeholders]
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "graphbp_version": _version(),
        "kind": kind,
        "nodes": entries,
        "inputs": [index[n] for n in inputs],
        "outputs": [index[n] for n in outputs],
        "updates": [[index[p], index[v]] for p, v in updates],
        "compile": flags,
    }
    return doc, store.arrays


def _closure(roots: list[Node]) -> list[Node]:
    """Every node the roots reach through inputs, provenance or the bodies of higher-order
    ops, in creation (= topological) order. A body is built before the op that holds it,
    so its nodes come first."""
    seen: set[Node] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.inputs)
        stack.extend(p.forward for p in n.provenance)
        for body in n.op.subgraphs():
            stack.extend(body.inputs)
            stack.extend(body.outputs)
    return sorted(seen, key=lambda n: n.serial)  # a node is created after its inputs


def _encode_node(node: Node, index: dict[Node, int], registry: dict[type, str], store: ArrayStore) -> dict:
    name = registry.get(type(node.op))
    if name is None:
        raise GraphFormatError(
            f"save: op {type(node.op).__name__} of {node.describe()} is not registered in "
            "graphbp.ops.OP_CLASSES, so a file could not name it"
        )
    return {
        "op": name,
        "inputs": [index[i] for i in node.inputs],
        "params": {k: _encode_param(v, index, store) for k, v in node.op.params().items()},
        "type": _encode_type(node.type),
        "name": node.name,
        "scope": list(node.scope),
        "origin": None if node.origin is None else [node.origin.filename, node.origin.lineno, node.origin.function],
        "provenance": [[index[p.forward], p.rule, p.input_index] for p in node.provenance],
    }


def _encode_type(t: TensorType | TupleType) -> dict:
    if isinstance(t, TupleType):
        return {"items": [_encode_type(i) for i in t.items]}
    return {"shape": list(t.shape), "dtype": t.dtype.name}


def _encode_param(value: Any, index: dict[Node, int], store: ArrayStore) -> Any:
    """A body is its placeholders and outputs, as indices into the same node list."""
    if isinstance(value, Subgraph):
        return {"subgraph": {"inputs": [index[n] for n in value.inputs], "outputs": [index[n] for n in value.outputs]}}
    return encode(value, store)


def _version() -> str:
    from .. import __version__

    return __version__


# ---------------------------------------------------------------------------- loading
def load(path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS):
    """Read a file written by :func:`save`.

    Returns
    -------
    Program or LoadedGraph
        A ``Program`` (compiled with the saved flags, updates included) when a program was
        saved, otherwise a :class:`LoadedGraph`.

    Raises
    ------
    GraphFormatError
        For any file that is not a complete, consistent graph file of a supported version,
        naming the file, where in it, and what is wrong. Nothing in the file is executed.
    """
    contents = read_container(path, "graph.json", limits)
    return from_document(contents.doc, contents.arrays, path=path, limits=limits)


def from_document(doc: Any, arrays: dict[str, np.ndarray], *, path: Any = None, limits: Limits = DEFAULT_LIMITS):
    """Rebuild the graph or program of a parsed document (see :func:`load`)."""
    dec = Decoder(path, arrays, limits)
    if not isinstance(doc, dict):
        raise fail(path, "graph.json", "top level is not an object")
    if doc.get("format") != FORMAT_NAME:
        raise fail(path, "graph.json.format", f"expected {FORMAT_NAME!r}, got {doc.get('format')!r:.60}")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise fail(path, "graph.json.version", f"invalid version {version!r:.60}")
    if version > FORMAT_VERSION:
        raise fail(path, "graph.json.version", f"format version {version} is newer than this graphbp reads ({FORMAT_VERSION}); upgrade graphbp")
    if set(doc) != _TOP_KEYS:
        raise fail(path, "graph.json", f"keys {sorted(map(str, doc))}, expected {sorted(_TOP_KEYS)}")
    kind = doc["kind"]
    if kind not in ("graph", "program"):
        raise fail(path, "graph.json.kind", f"expected 'graph' or 'program', got {kind!r:.60}")
    entries = dec.sequence(doc["nodes"], "graph.json.nodes", limits.max_nodes)
    registry = op_registry()
    nodes: list[Node] = []
    for i, entry in enumerate(entries):
        nodes.append(_decode_node(dec, registry, nodes, entry, f"graph.json.nodes[{i}]", version))
    for i, entry in enumerate(entries):
        nodes[i].provenance = _decode_provenance(dec, nodes, entry["provenance"], f"graph.json.nodes[{i}].provenance")
    unused = sorted(set(arrays) - dec.used)
    if unused:
        raise fail(path, "arrays.npz", f"arrays not referenced by any node: {unused[:5]}")
    ref = lambda v, w: nodes[_index(dec, v, len(nodes), w)]  # noqa: E731
    inputs = [ref(v, f"graph.json.inputs[{k}]") for k, v in enumerate(dec.sequence(doc["inputs"], "graph.json.inputs", limits.max_nodes))]
    outputs = [ref(v, f"graph.json.outputs[{k}]") for k, v in enumerate(dec.sequence(doc["outputs"], "graph.json.outputs", limits.max_nodes))]
    for k, n in enumerate(inputs):
        if not isinstance(n.op, Input):
            raise fail(path, f"graph.json.inputs[{k}]", f"node is a {n.op.name}, not an input")
    updates = []
    for k, pair in enumerate(dec.sequence(doc["updates"], "graph.json.updates", limits.max_nodes)):
        w = f"graph.json.updates[{k}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise fail(path, w, "expected [param, value]")
        updates.append((ref(pair[0], w), ref(pair[1], w)))
    if kind == "graph":
        if doc["compile"] is not None or updates:
            raise fail(path, "graph.json", "a plain graph has no compile flags or updates")
        return LoadedGraph(nodes, inputs, outputs)
    flags = doc["compile"]
    if not isinstance(flags, dict) or set(flags) != set(_COMPILE_FLAGS) or not all(isinstance(v, bool) for v in flags.values()):
        raise fail(path, "graph.json.compile", f"expected booleans {list(_COMPILE_FLAGS)}")
    from ..runtime import compile as compile_

    try:
        return compile_(inputs, outputs, updates, **flags)
    except GraphbpError as e:
        raise fail(path, "graph.json", f"the saved program does not compile: {e}") from None


def _index(dec: Decoder, v: Any, upper: int, where: str) -> int:
    i = dec.int(v, where)
    if not 0 <= i < upper:
        raise fail(dec.path, where, f"reference {i} is outside nodes[0:{upper}] (dangling, or a cycle / wrong order)")
    return i


def _decode_node(dec: Decoder, registry: dict[str, type], nodes: list[Node], entry: Any, where: str,
                 version: int = FORMAT_VERSION) -> Node:
    path = dec.path
    if not isinstance(entry, dict) or set(entry) != _NODE_KEYS:
        raise fail(path, where, f"expected keys {sorted(_NODE_KEYS)}")
    op_name = entry["op"]
    cls = registry.get(op_name) if isinstance(op_name, str) else None
    legacy = LEGACY_OPS.get(op_name) if cls is None and isinstance(op_name, str) else None
    if cls is None and legacy is None:
        raise fail(path, f"{where}.op", f"unknown op {op_name!r:.60} (known ops come from graphbp.ops.OP_CLASSES)")
    where = f"{where} ({op_name})"
    inputs = tuple(
        nodes[_index(dec, v, len(nodes), f"{where}.inputs[{k}]")]
        for k, v in enumerate(dec.sequence(entry["inputs"], f"{where}.inputs"))
    )
    if legacy is not None:  # a removed op: built from primitives (io/legacy.py)
        stored = _decode_type(dec, entry["type"], f"{where}.type", version)
        name, scope, origin = _decode_labels(dec, entry, where)
        return expand(dec, legacy, entry["params"], inputs, stored, where, name=name, scope=scope,
                      origin=origin or _NO_ORIGIN)
    op = _decode_op(dec, cls, entry["params"], f"{where}.params", nodes if version >= 2 else None)
    stored = _decode_type(dec, entry["type"], f"{where}.type", version)
    if isinstance(op, Leaf):
        if inputs:
            raise fail(path, where, "a leaf has no inputs")
        actual = _leaf_type(op, stored)
    else:
        if any(isinstance(x.type, TupleType) for x in inputs) and not isinstance(op, TupleGet):
            raise fail(path, where, "only tuple_get reads a multi-output node")
        try:
            actual = op.infer(*(x.type for x in inputs))
        except OpError as e:
            raise fail(path, where, f"operands {[str(x.type) for x in inputs]} do not fit: {e.reason}") from None
        except Exception as e:
            raise fail(path, where, f"cannot type the node ({type(e).__name__}: {e})") from None
        if not isinstance(actual, (TensorType, TupleType)):
            raise fail(path, where, "the op's shape rule returned no type")
    if actual != stored:
        raise fail(path, f"{where}.type", f"stored type {stored} differs from the type its op gives, {actual}")
    name, scope, origin = _decode_labels(dec, entry, where)
    node = Node(op, inputs, actual, name=name, origin=origin or _NO_ORIGIN, scope=scope, provenance=())
    node.origin = origin
    return node


def _decode_labels(dec: Decoder, entry: dict, where: str) -> tuple[str | None, tuple[str, ...], SourceLocation | None]:
    """A node's name, scope and origin."""
    name = entry["name"]
    if name is not None and not isinstance(name, str):
        raise fail(dec.path, f"{where}.name", "expected a string or null")
    scope = dec.sequence(entry["scope"], f"{where}.scope")
    if not all(isinstance(s, str) for s in scope):
        raise fail(dec.path, f"{where}.scope", "expected a list of strings")
    return name, tuple(scope), _decode_origin(dec, entry["origin"], f"{where}.origin")


_NO_ORIGIN = SourceLocation("<file>", 0, "<file>")


def _decode_type(dec: Decoder, doc: Any, where: str, version: int) -> TensorType | TupleType:
    if version >= 2 and isinstance(doc, dict) and set(doc) == {"items"}:
        items = dec.sequence(doc["items"], f"{where}.items")
        return TupleType(tuple(dec.tensor_type(t, f"{where}.items[{k}]") for k, t in enumerate(items)))
    return dec.tensor_type(doc, where)


def _decode_param(dec: Decoder, doc: Any, where: str, nodes: list[Node] | None) -> Any:
    """A parameter value; ``{"subgraph": ...}`` (version 2) refers to earlier nodes."""
    if nodes is None or not (isinstance(doc, dict) and set(doc) == {"subgraph"}):
        return dec.decode(doc, where)
    body = doc["subgraph"]
    if not isinstance(body, dict) or set(body) != {"inputs", "outputs"}:
        raise fail(dec.path, where, "expected a subgraph {'inputs': [...], 'outputs': [...]}")
    ins = [nodes[_index(dec, v, len(nodes), f"{where}.inputs[{k}]")]
           for k, v in enumerate(dec.sequence(body["inputs"], f"{where}.inputs"))]
    outs = [nodes[_index(dec, v, len(nodes), f"{where}.outputs[{k}]")]
            for k, v in enumerate(dec.sequence(body["outputs"], f"{where}.outputs"))]
    for k, n in enumerate(ins):
        if not isinstance(n.op, Input):
            raise fail(dec.path, f"{where}.inputs[{k}]", f"a body input must be an input placeholder, got {n.op.name}")
    try:
        sub = Subgraph(tuple(ins), tuple(outs))
        sub.nodes()  # rejects a body that reaches a leaf outside itself
    except GraphbpError as e:
        raise fail(dec.path, where, f"invalid subgraph: {e}") from None
    return sub


def _decode_op(dec: Decoder, cls: type, doc: Any, where: str, nodes: list[Node] | None = None):
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    if not isinstance(doc, dict) or set(doc) != names:
        got = sorted(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
        raise fail(dec.path, where, f"expected parameters {sorted(names)}, got {got}")
    values = {k: _decode_param(dec, doc[k], f"{where}.{k}", nodes) for k in sorted(names)}
    if cls is Param or cls is Constant:
        if not isinstance(values["value"], np.ndarray):
            raise fail(dec.path, f"{where}.value", "expected an array")
        if cls is Param and not isinstance(values.get("trainable"), bool):
            raise fail(dec.path, f"{where}.trainable", "expected a bool")
        if cls is Constant:
            values["value"] = values["value"].copy()
            values["value"].setflags(write=False)
    if cls is Input and (not isinstance(values["input_name"], str) or not values["input_name"]
                         or not isinstance(values["type"], TensorType)):
        raise fail(dec.path, where, "an input needs a non-empty input_name and a tensor_type")
    try:
        return cls(**values)
    except Exception as e:
        raise fail(dec.path, where, f"invalid parameters for {cls.__name__} ({type(e).__name__}: {e})") from None


def _leaf_type(op: Leaf, stored: TensorType) -> TensorType:
    if isinstance(op, Input):
        return op.type
    value = getattr(op, "value", None)
    if isinstance(value, np.ndarray):
        return TensorType(value.shape, value.dtype)
    return stored


def _decode_origin(dec: Decoder, doc: Any, where: str) -> SourceLocation | None:
    if doc is None:
        return None
    if (not isinstance(doc, list) or len(doc) != 3 or not isinstance(doc[0], str)
            or not isinstance(doc[2], str)):
        raise fail(dec.path, where, "expected [filename, line, function] or null")
    return SourceLocation(doc[0], dec.int(doc[1], f"{where}[1]"), doc[2])


def _decode_provenance(dec: Decoder, nodes: list[Node], doc: Any, where: str) -> tuple[Provenance, ...]:
    out = []
    for k, rec in enumerate(dec.sequence(doc, where)):
        w = f"{where}[{k}]"
        if not isinstance(rec, list) or len(rec) != 3:
            raise fail(dec.path, w, "expected [forward, rule, input_index]")
        fwd = nodes[_index(dec, rec[0], len(nodes), f"{w}[0]")]
        if not isinstance(rec[1], str) or not _RULE.match(rec[1]):
            raise fail(dec.path, f"{w}[1]", f"invalid rule {rec[1]!r:.40}")
        idx = None if rec[2] is None else dec.int(rec[2], f"{w}[2]")
        out.append(Provenance(fwd, rec[1], idx))
    return tuple(out)
