"""Closed graphs held by higher-order ops (``gb.cond`` today, ``gb.scan`` next).

A :class:`Subgraph` is an ordinary graph with its own input placeholders and outputs, like
JAX's closed jaxpr or PyTensor's inner FunctionGraph. It is made by tracing a Python function
once on placeholders (:func:`trace`). Nothing in a body points outside it: every outside
node the function reads (parameters, inputs, values computed earlier) becomes an extra
placeholder, and the higher-order node takes the outside node as an explicit operand
(closure conversion). Constants are the one exception: they are values, so they stay inside.

Work in the function computed from outside values only (``W.T`` of a captured ``W``) is
left outside too: it runs once, before the op. For a loop that is loop-invariant code
motion; for a branch it moves pure work that both outcomes may share.

Subgraphs compare and hash by structure (ops, wiring, input types), not by node identity,
so two higher-order nodes built from the same function merge under CSE. Everything that
steps into bodies (passes, traversal, the runtime, rendering, the file format) goes through
``op.subgraphs()`` / ``op.replace_subgraphs(...)`` (see ``graphbp.ops.base.Op``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import GraphError
from .context import stamp
from .node import Node
from .traverse import toposort
from .types import TensorType, TupleType


@dataclasses.dataclass(frozen=True, eq=False)
class Subgraph:
    """A closed graph: ``outputs`` computed from the placeholder nodes ``inputs`` only.

    Attributes
    ----------
    inputs : tuple[Node, ...]
        Placeholder leaves (``Input`` ops named ``arg0``, ... or after the captured node),
        one per operand of the higher-order node, in operand order.
    outputs : tuple[Node, ...]
        The body's results, in order.
    """

    inputs: tuple[Node, ...]
    outputs: tuple[Node, ...]
    _memo: dict = dataclasses.field(default_factory=dict, repr=False, init=False)
    # derived, never semantic: the structural key, the node order, the compiled program

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        for n in self.inputs:
            if n.inputs:
                raise GraphError(f"a subgraph's inputs must be placeholder leaves, got {n.describe()}")
        for n in self.outputs:
            if isinstance(n.type, TupleType):
                raise GraphError(f"a subgraph output must be a tensor, got {n.describe()}")

    # -- structure ------------------------------------------------------------------
    @property
    def in_types(self) -> tuple[TensorType, ...]:
        return tuple(n.type for n in self.inputs)

    @property
    def out_types(self) -> tuple[TensorType, ...]:
        return tuple(n.type for n in self.outputs)

    def nodes(self) -> list[Node]:
        """Every node of the body, inputs before users (placeholders first, in order)."""
        hit = self._memo.get("nodes")
        if hit is None:
            body = toposort(self.outputs)
            placeholders = set(self.inputs)
            hit = self._memo["nodes"] = list(self.inputs) + [n for n in body if n not in placeholders]
            for n in hit:
                if n not in placeholders and _is_outside(n):
                    raise GraphError(f"subgraph reaches {n.describe()} outside itself; trace it with gb.cond/trace")
        return hit

    def key(self) -> tuple:
        """A hashable structural description: equal keys compute the same function."""
        hit = self._memo.get("key")
        if hit is None:
            order = self.nodes()
            index = {n: k for k, n in enumerate(order)}
            rows: list[Any] = []
            for k, n in enumerate(order):
                if k < len(self.inputs):
                    rows.append(("input", n.type))
                elif _is_leaf(n):
                    rows.append(_leaf_key(n))
                else:
                    rows.append((n.op, tuple(index[i] for i in n.inputs), bool(n.provenance)))
            hit = self._memo["key"] = (tuple(rows), tuple(index[o] for o in self.outputs))
        return hit

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Subgraph) and self.key() == other.key())

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        n_ops = len(self.nodes()) - len(self.inputs)
        return f"Subgraph({len(self.inputs)} in, {len(self.outputs)} out, {n_ops} nodes)"

    def format(self, indent: str = "  ") -> str:
        """A readable listing, one equation per line (as a jaxpr prints)."""
        order = self.nodes()
        names = {n: (n.name or f"v{k}") for k, n in enumerate(order)}
        head = ", ".join(f"{names[n]}: {n.type}" for n in self.inputs)
        lines = [f"{{ lambda {head} ."]
        for n in order[len(self.inputs):]:
            value = getattr(n.op, "value", None) if n.op.leaf_kind == "constant" else None
            if value is not None and value.size <= 4:
                lines.append(f"{indent}{names[n]}: {n.type} = {value.tolist()!r}")
                continue
            args = ", ".join(names[i] for i in n.inputs)
            lines.append(f"{indent}{names[n]}: {n.type} = {n.op}({args})")
        lines.append(f"{indent}return ({', '.join(names[o] for o in self.outputs)}) }}")
        return "\n".join(lines)

    # -- types ----------------------------------------------------------------------
    def infer(self, types: Sequence[TensorType]) -> tuple[TensorType, ...]:
        """The output types when the inputs have ``types`` (which may be more concrete than
        the placeholders'): every body op's shape rule runs again. Raises the op's
        ``OpError`` when a type does not fit."""
        if len(types) != len(self.inputs):
            raise GraphError(f"subgraph takes {len(self.inputs)} operands, got {len(types)}")
        if tuple(types) == self.in_types:
            return self.out_types
        memo = self._memo.setdefault("infer", {})
        hit = memo.get(tuple(types))
        if hit is not None:
            return hit
        env: dict[Node, Any] = dict(zip(self.inputs, types))
        for n in self.nodes()[len(self.inputs):]:
            env[n] = n.op.infer(*(env[i] for i in n.inputs)) if n.inputs else n.type
        hit = memo[tuple(types)] = tuple(env[o] for o in self.outputs)
        return hit

    # -- rewriting ------------------------------------------------------------------
    def map(self, fn: Callable[[list[Node]], list[Node]]) -> "Subgraph":
        """The body with its outputs replaced by ``fn(outputs)`` (a pass over the body);
        ``self`` when nothing changed."""
        new = tuple(fn(list(self.outputs)))
        if len(new) != len(self.outputs):
            raise GraphError(f"a pass returned {len(new)} roots for {len(self.outputs)} subgraph outputs")
        if all(a is b for a, b in zip(new, self.outputs)):
            return self
        return Subgraph(self.inputs, new)

    def keep(self, indices: Sequence[int]) -> "Subgraph":
        """The body computing only outputs ``indices`` (in that order); the placeholders stay,
        so the holding node's operands do not change."""
        return Subgraph(self.inputs, tuple(self.outputs[k] for k in indices))

    def inline(self, operands: Sequence[Node]) -> list[Node]:
        """Copies of the body's outputs computed from ``operands`` instead of the placeholders
        (each node rebuilt with its own op, user line, scope and provenance)."""
        if len(operands) != len(self.inputs):
            raise GraphError(f"subgraph takes {len(self.inputs)} operands, got {len(operands)}")
        env: dict[Node, Node] = dict(zip(self.inputs, operands))
        for n in self.nodes()[len(self.inputs):]:
            if _is_leaf(n):
                env[n] = n
                continue
            ins = tuple(env[i] for i in n.inputs)
            with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
                env[n] = Node(n.op, ins, n.op.infer(*(i.type for i in ins)), name=n.name)
        return [env[o] for o in self.outputs]

    # -- running --------------------------------------------------------------------
    def program(self):
        """The body compiled once (then cached here), unoptimised: the passes of the
        enclosing program already rewrote it through ``replace_subgraphs``. Its output
        buffers are reused by the next call (a loop copies what it keeps)."""
        prog = self._memo.get("program")
        if prog is None:
            from ..runtime.program import Program

            prog = self._memo["program"] = Program(list(self.inputs), list(self.outputs), optimize=False)
        return prog


def _is_leaf(n: Node) -> bool:
    return n.op.leaf_kind is not None


def _is_outside(n: Node) -> bool:
    """A leaf a body may not hold: anything but a constant (inputs are fed, parameters are state)."""
    return n.op.leaf_kind in ("input", "param")


def placeholder(name: str, t: TensorType, origin=None) -> Node:
    """A body input: an ``Input`` leaf named ``name`` (the body program's feed name)."""
    from ..ops.leaves import Input  # ops sit above graph: loaded on first use

    with stamp(provenance=()):
        return Node(Input(name, t), (), t, name=name, origin=origin)


def fresh_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2``, ... : placeholder names are the body program's
    feed names, and two captured parameters may share a user name."""
    out, k = name, 0
    while out in taken:
        k += 1
        out = f"{name}_{k}"
    taken.add(out)
    return out


def _leaf_key(n: Node) -> tuple:
    value = getattr(n.op, "value", None)
    if isinstance(value, np.ndarray) and value.size <= 64:
        return ("const", value.dtype.str, value.shape, value.tobytes(), bool(n.provenance))
    return ("leaf", id(n.op), bool(n.provenance))


def trace(fn: Callable[..., Any], args: Sequence[TensorType], names: Sequence[str] | None = None
          ) -> tuple[Subgraph, list[Node], Any]:
    """Call ``fn`` once on placeholders of ``args`` types and close the graph it returns.

    Returns
    -------
    body : Subgraph
        Inputs: one placeholder per ``args`` entry, then one per captured node.
    captured : list of Node
        The outside nodes the body reads, in first-use order: the higher-order node takes
        them as operands after the explicit ones.
    structure : None or int
        ``None`` when ``fn`` returned one node, else the length of the tuple it returned.
    """
    from ..ops.base import as_node  # ops sit above graph: loaded on first use, as Node's operators do

    names = list(names) if names is not None else [f"arg{k}" for k in range(len(args))]
    with stamp(provenance=()):
        placeholders = [placeholder(nm, t) for nm, t in zip(names, args)]
    start = placeholders[0].serial if placeholders else None  # no arguments: all is outside
    with stamp(provenance=()):
        result = fn(*placeholders)
        if isinstance(result, (tuple, list)):
            structure: int | None = len(result)
            outs = [as_node(r) for r in result]
        else:
            structure, outs = None, [as_node(result)]
    body, captured = close(placeholders, outs, start)
    return body, captured, structure


def close(placeholders: list[Node], outs: list[Node], start: int | None) -> tuple[Subgraph, list[Node]]:
    """Closure conversion: rebuild the body so every outside node it reads is a placeholder.

    Placeholders and constants are inside. A node made while tracing (creation serial from
    ``start`` on) is inside when one of its inputs is; one computed from outside values
    only stays outside (hoisted: computed once, before the op). Nodes made before the
    trace are outside, so the walk stops at them."""
    ph = set(placeholders)
    inside: dict[Node, bool] = {}
    order: list[Node] = []
    stack: list[tuple[Node, bool]] = [(o, False) for o in reversed(outs)]
    while stack:  # iterative post-order, stopping at nodes older than the trace
        n, done = stack.pop()
        if n in inside:
            continue
        if done:
            inside[n] = any(inside[i] for i in n.inputs)
            order.append(n)
            continue
        if n in ph:
            inside[n] = True
            continue
        if _is_leaf(n):  # a constant is a value the body may hold; other leaves are outside
            inside[n] = not _is_outside(n)
            continue
        if start is None or n.serial < start:
            inside[n] = False
            continue
        if not n.inputs:  # an op of no operands made while tracing (``full``)
            inside[n] = True
            order.append(n)
            continue
        stack.append((n, True))
        stack.extend((i, False) for i in reversed(n.inputs) if i not in inside)
    captured: dict[Node, Node] = {}
    taken = {p.op.input_name for p in placeholders}

    def capture(n: Node) -> Node:
        if _is_leaf(n) and not _is_outside(n):
            return n  # a constant stays in the body
        hit = captured.get(n)
        if hit is None:
            nm = fresh_name(n.name or f"capture{len(captured)}", taken)
            hit = captured[n] = placeholder(nm, n.type, n.origin)
        return hit

    env: dict[Node, Node] = {p: p for p in placeholders}
    env.update((n, n) for n in inside if _is_leaf(n) and inside[n])  # constants stay as they are
    for n in order:
        if not inside[n]:
            continue
        ins = tuple(env[i] if inside[i] else capture(i) for i in n.inputs)
        if all(a is b for a, b in zip(ins, n.inputs)):
            env[n] = n
        else:
            env[n] = Node(n.op, ins, n.type, name=n.name, origin=n.origin, scope=n.scope, provenance=n.provenance)
    new_outs = [env[o] if inside[o] else capture(o) for o in outs]
    return Subgraph(tuple(placeholders) + tuple(captured.values()), tuple(new_outs)), list(captured)


def with_inputs(body: Subgraph, own: Sequence[Node], union: Sequence[Node], n_args: int) -> Subgraph:
    """``body`` re-declared over the operand list ``args + union`` (its captured nodes
    ``own`` are a subset of ``union``): unused placeholders stand for the others' captures."""
    mine = dict(zip(own, body.inputs[n_args:]))
    taken = {p.op.input_name for p in body.inputs}
    ins = list(body.inputs[:n_args])
    for k, n in enumerate(union):
        p = mine.get(n)
        if p is None:
            nm = fresh_name(n.name or f"capture{k}", taken)
            p = placeholder(nm, n.type, n.origin)
        ins.append(p)
    return body if tuple(ins) == body.inputs else Subgraph(tuple(ins), body.outputs)
