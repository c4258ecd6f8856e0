"""What a diagram or report is about: a Program, a node, or a list of nodes, normalised.

Every view reads one :class:`Subject`: the nodes in topological order, the forward and
backward schedules, the saved activations, the outputs and the parameter updates, and the
schedule step of each node (``F3``, ``B7``). For a node or list of nodes the split is the
same one ``gb.compile`` makes, so a diagram of loose nodes matches the compiled program.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import GraphError
from ..graph.node import Node
from ..graph.traverse import toposort
from ..graph.types import TensorType, TupleType
from ..runtime.schedule import split_schedules


@dataclass
class Subject:
    """A graph to draw or explain, with its schedules.

    Attributes
    ----------
    order : list[Node]
        Every node reached, inputs before users (leaves included).
    forward, backward : list[Node]
        Non-leaf nodes of each schedule, in run order.
    saved : list[Node]
        Forward activations the backward schedule reads for their data (see
        :func:`activations`: optimiser arithmetic is not an activation).
    update_owner : dict[Node, Node | None]
        Each node that only serves parameter updates (optimiser arithmetic: no gradient
        provenance, needed by no output and by no gradient), mapped to the trainable
        parameter whose update it serves, or ``None`` when it serves several (the step
        count, a shared learning rate). Diagrams group them per parameter.
    outputs : list[Node]
        What the program returns (or the nodes given).
    updates : list[tuple[Node, Node]]
        ``(parameter, new value)`` pairs.
    program : object or None
        The Program, when the target was one (for rewrite logs and memory plans).
    """

    order: list[Node]
    forward: list[Node]
    backward: list[Node]
    saved: list[Node]
    outputs: list[Node]
    updates: list[tuple[Node, Node]] = field(default_factory=list)
    program: Any = None
    title: str = ""

    def __post_init__(self) -> None:
        self.index = {n: i for i, n in enumerate(self.order)}
        self.step: dict[Node, str] = {}
        for i, n in enumerate(self.forward):
            self.step[n] = f"F{i}"
        for i, n in enumerate(self.backward):
            self.step[n] = f"B{i}"
        self.backward_set = set(self.backward)
        self.update_owner = update_owners(self.order, self.outputs, self.updates)
        self.saved = activations(self.saved, self.update_owner)
        self.saved_set = set(self.saved)
        self.output_index = {}
        for i, o in enumerate(self.outputs):
            self.output_index.setdefault(o, i)
        self.update_of = {v: p for p, v in self.updates}


def update_owners(order: Sequence[Node], outputs: Sequence[Node],
                  updates: Sequence[tuple[Node, Node]]) -> dict[Node, Node | None]:
    """The optimiser arithmetic of each parameter (see :attr:`Subject.update_owner`).

    A node is update arithmetic when it is computed (not a leaf), was not made by
    ``gb.grad`` (no provenance), and neither an output nor a gradient node depends on it:
    momentum and Adam's moments, bias corrections, the learning rate cast, the step count.
    Its owner is the trainable parameter whose new value reads it; state parameters
    (non-trainable, like Adam's moments) own what only their own update reads."""
    if not updates:
        return {}
    needed = set(toposort(list(outputs) + [n for n in order if n.provenance]))
    candidates = {n for n in toposort([v for _, v in updates]) if n.inputs and not n.provenance and n not in needed}
    owners: dict[Node, set[Node]] = {}
    for p, v in sorted(updates, key=lambda pv: not getattr(pv[0].op, "trainable", False)):
        trainable = getattr(p.op, "trainable", False)
        for n in toposort([v]):
            if n in candidates and (trainable or n not in owners):
                owners.setdefault(n, set()).add(p)
    return {n: (next(iter(ps)) if len(ps) == 1 else None) for n, ps in owners.items()}


def activations(saved: Sequence[Node], update_owner: dict[Node, Node | None]) -> list[Node]:
    """The saved values that are activations: the schedule's saved set (which already
    leaves out values read only for their shape, ``Op.shape_only_inputs``) without the
    optimiser's arithmetic, which the backward reads but no forward pass keeps for it."""
    return [n for n in saved if n not in update_owner]


def _program_types():
    from ..runtime.program import Program

    return (Program,)


def is_program(target: Any) -> bool:
    return isinstance(target, _program_types())


def subject_of(target: Any, *, optimized: bool = True) -> Subject:
    """Normalise ``target`` (Program, Node, or sequence of Nodes) into a :class:`Subject`.

    ``optimized=False`` on a Program describes the graph as the user built it, before
    rewrite passes (the outputs and update values given to ``gb.compile``).
    """
    if is_program(target):
        return _program_subject(target, optimized)
    if isinstance(target, Node):
        return nodes_subject([target])
    if isinstance(target, (list, tuple)) and target and all(isinstance(t, Node) for t in target):
        return nodes_subject(list(target))
    if isinstance(target, (list, tuple)) and not target:
        raise GraphError("nothing to draw: the list of nodes is empty")
    raise GraphError(
        f"cannot draw a {type(target).__name__}: pass a Program (gb.compile), a node, or a list of nodes"
    )


def nodes_subject(outputs: Sequence[Node], updates: Sequence[tuple[Node, Node]] = (), title: str = "") -> Subject:
    roots = list(outputs) + [v for _, v in updates]
    order = toposort(roots)
    fwd, bwd = split_schedules(order)
    return Subject(order, list(fwd.nodes), list(bwd.nodes), list(bwd.saved), list(outputs), list(updates), title=title)


def _program_subject(program: Any, optimized: bool) -> Subject:
    if not optimized:
        outs = list(getattr(program, "user_outputs", None) or program.outputs)
        updates = list(getattr(program, "user_updates", None) or getattr(program, "updates", []))
        s = nodes_subject(outs, updates)
        s.program = program
        return s
    outputs = list(program.outputs)
    updates = list(getattr(program, "updates", []) or [])
    order = getattr(program, "order", None)
    if order is None:
        order = toposort(outputs + [v for _, v in updates])
    fwd, bwd = program.forward, program.backward
    return Subject(
        list(order), list(fwd.nodes), list(bwd.nodes), list(getattr(bwd, "saved", [])),
        outputs, updates, program=program,
    )


# -- small text helpers shared by every view -----------------------------------------------
_SHORT = {"float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16",
          "int32": "i32", "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32",
          "uint64": "u64", "bool": "bool", "complex64": "c64", "complex128": "c128"}


def short_type(t: TensorType) -> str:
    """``f32[?,128]``: compact enough for an edge label (``(f32[3], f32[2])`` for several outputs)."""
    if isinstance(t, TupleType):
        return "(" + ", ".join(short_type(i) for i in t.items) + ")"
    dims = ",".join("?" if d is None else str(d) for d in t.shape)
    return f"{_SHORT.get(t.dtype.name, t.dtype.name)}[{dims}]"


def origin_text(node: Node) -> str:
    """``model.py:12`` (base name only, so diagrams do not depend on where a repo lives)."""
    o = node.origin
    if o is None:
        return ""
    return f"{os.path.basename(o.filename)}:{o.lineno}"


def node_title(node: Node) -> str:
    """The name a person would use for a node: its name, or its op."""
    if node.name:
        return node.name
    input_name = getattr(node.op, "input_name", None) or getattr(node.op, "param_name", None)
    return input_name or node.op.name
