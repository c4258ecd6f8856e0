"""Several outputs and control flow: ``TupleGet`` projections and ``gb.cond``.

A node whose op returns several values has a :class:`~graphbp.graph.types.TupleType`; it is
read only through ``TupleGet(index)`` nodes (torch.fx's ``getitem``, JAX's outvars), which
carry ordinary tensor types, so no other op, pass or schedule ever sees a tuple. Autodiff
gathers the projections' cotangents and calls the multi-output op's VJP once, with ``None``
for an output nothing reads.

``gb.cond`` is the first higher-order op: its branches are :class:`Subgraph` bodies traced
once, and its VJP is another ``cond`` over the branches' VJP bodies, so it differentiates
again (grad of grad) with no special case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph.cost import Poly
from ..graph.node import Node
from ..graph.subgraph import Subgraph, fresh_name, trace, with_inputs
from ..graph.source import user_location
from ..graph.types import TensorType, TupleType
from .base import Op, apply, as_node, dtype_error, shape_error


@dataclasses.dataclass(frozen=True)
class TupleGet(Op):
    """Output ``index`` of a multi-output node. Autodiff routes its cotangent to the tuple's
    VJP, so it has no rule of its own."""

    name: ClassVar[str] = "tuple_get"
    view: ClassVar[bool] = True
    reads_tuples: ClassVar[bool] = True
    vjp_formula: ClassVar[str] = "gathered into the tuple's cotangent, entry index"
    index: int

    def infer(self, t) -> TensorType:
        if not isinstance(t, TupleType):
            raise shape_error(f"reads a multi-output node, got a {t}")
        if not 0 <= self.index < len(t):
            raise shape_error(f"index {self.index} is out of range for {len(t)} outputs")
        return t.items[self.index]

    def compute(self, values: tuple) -> np.ndarray:
        return values[self.index]

    def vjp(self, node: Node, g: Node):  # pragma: no cover - autodiff never calls it
        raise GraphError("tuple_get cotangents are gathered by autodiff, not by a rule")


def unpack(node: Node) -> list[Node]:
    """One ``TupleGet`` node per output of a multi-output ``node``."""
    if not isinstance(node.type, TupleType):
        raise GraphError(f"unpack: {node.describe()} has one output")
    return [apply(TupleGet(k), node) for k in range(len(node.type))]


def _fits(declared: TensorType, actual: TensorType) -> bool:
    return (declared.dtype == actual.dtype and len(declared.shape) == len(actual.shape)
            and all(d is None or d == a for d, a in zip(declared.shape, actual.shape)))


def _join(a: TensorType, b: TensorType) -> TensorType:
    """The type both branch results have: a dim one branch leaves unknown stays unknown."""
    return TensorType(tuple(x if x == y else None for x, y in zip(a.shape, b.shape)), a.dtype)


@dataclasses.dataclass(frozen=True)
class Cond(Op):
    """``true_body(*operands)`` if ``pred`` else ``false_body(*operands)``; only the chosen
    body runs. Inputs: ``pred`` (a bool scalar), then the operands both bodies take (the
    explicit ones, then the outside nodes either branch captured). Always multi-output."""

    name: ClassVar[str] = "cond"
    nondiff_inputs: ClassVar[tuple[int, ...]] = (0,)
    vjp_formula: ClassVar[str] = "cond(pred, vjp(true_body), vjp(false_body))(operands, cotangents)"
    true_body: Subgraph
    false_body: Subgraph

    def infer(self, pred, *types) -> TupleType:
        if not isinstance(pred, TensorType) or pred.shape != () or pred.dtype != np.bool_:
            raise dtype_error(f"pred must be a bool scalar, got {pred}")
        body_types = self.true_body.in_types
        if len(types) != len(body_types) or len(self.false_body.inputs) != len(types):
            raise shape_error(f"the branches take {len(body_types)} operands, got {len(types)}")
        for k, (d, t) in enumerate(zip(body_types, types)):
            if not isinstance(t, TensorType) or not _fits(d, t):
                raise shape_error(f"operand {k} is {t}, the branches were traced with {d}")
        yes, no = self.true_body.infer(types), self.false_body.infer(types)
        if len(yes) != len(no):
            raise shape_error(f"the true branch returns {len(yes)} values, the false branch {len(no)}")
        for k, (a, b) in enumerate(zip(yes, no)):
            where = f" (output {k})" if len(yes) > 1 else ""
            if a.dtype != b.dtype:
                raise dtype_error(f"the true branch returns {a}, the false branch {b}{where}")
            if len(a.shape) != len(b.shape) or any(x is not None and y is not None and x != y
                                                   for x, y in zip(a.shape, b.shape)):
                raise shape_error(f"the true branch returns {a}, the false branch {b}{where}")
        return TupleType(tuple(_join(a, b) for a, b in zip(yes, no)))

    def subgraphs(self) -> tuple[Subgraph, Subgraph]:
        return (self.true_body, self.false_body)

    def keep_outputs(self, indices) -> "Cond":
        return Cond(self.true_body.keep(indices), self.false_body.keep(indices))

    def compute(self, pred: np.ndarray, *xs: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.compute_with(Subgraph.program, pred, *xs)

    def compute_with(self, run_body, pred: np.ndarray, *xs: np.ndarray) -> tuple[np.ndarray, ...]:
        outs = run_body(self.true_body if bool(pred) else self.false_body)(*xs)
        return tuple(np.array(o, copy=True) for o in outs)  # a program reuses its buffers next call

    def flops(self, in_types, out_type) -> Poly:
        return Poly()  # the work is in the bodies, which are costed where they run

    def vjp(self, node: Node, cts: tuple[Node | None, ...]) -> list[Node | None]:
        from ..autodiff.grad import vjp as body_vjp  # autodiff sits above ops

        pred, xs = node.inputs[0], node.inputs[1:]
        diff = [k for k, x in enumerate(xs) if x.dtype.kind == "f"]
        live = [j for j, c in enumerate(cts) if c is not None]
        if not diff or not live:
            return [None] * len(node.inputs)

        def pullback(body: Subgraph) -> Callable[..., tuple[Node, ...]]:
            def fn(*args: Node) -> tuple[Node, ...]:
                x, c = args[:len(xs)], args[len(xs):]
                outs = body.inline(x)
                return tuple(body_vjp([outs[j] for j in live], [x[k] for k in diff], list(c)))
            return fn

        names = [p.op.input_name for p in self.true_body.inputs] + [f"ct{j}" for j in live]
        grads, _ = _cond(pred, pullback(self.true_body), pullback(self.false_body),
                      list(xs) + [cts[j] for j in live], names)
        out: list[Node | None] = [None] * len(node.inputs)
        for k, g in zip(diff, grads):
            out[1 + k] = g
        return out


def cond(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands: Any
         ) -> Node | tuple[Node, ...]:
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``, as one graph node.

    Parameters
    ----------
    pred : bool scalar node
        Decided when the program runs; only the chosen branch is computed.
    true_fn, false_fn : callable(*nodes) -> node or tuple of nodes
        Called once each, on placeholders typed like ``operands``, to build the branch
        bodies. Nodes they read from outside (parameters, inputs, earlier values) become
        operands automatically. Both must return the same structure, shapes and dtypes.
    *operands : nodes (or arrays, scalars)

    Returns
    -------
    Node or tuple of Node
        As the branches return: one node, or a tuple of nodes.
    """
    xs = [as_node(x) for x in operands]
    for k, x in enumerate(xs):
        if isinstance(x.type, TupleType):
            raise GraphError(f"cond: operand {k} is a multi-output node; pass its outputs")
    outs, single = _cond(as_node(pred), true_fn, false_fn, xs, [x.name or f"arg{k}" for k, x in enumerate(xs)])
    return outs[0] if single else tuple(outs)


def _cond(pred: Node, true_fn: Callable[..., Any], false_fn: Callable[..., Any], xs: list[Node],
          names: list[str]) -> tuple[list[Node], bool]:
    """Trace both branches on placeholders named ``names``, close them over the same
    operand list, build the node. Returns its outputs and whether the branches return a
    single node."""
    types = [x.type for x in xs]
    names = _unique(names)
    yes, yes_cap, yes_struct = trace(true_fn, types, names)
    no, no_cap, no_struct = trace(false_fn, types, names)
    if (yes_struct is None) != (no_struct is None):
        where = user_location(3)
        raise ShapeError(f"cond: {_structure_mismatch(yes_struct, no_struct)}"
                         + (f"\n  built at {where}" if where else ""))
    for body in (yes, no):  # the cond node would have to be effectful then, and run in order
        eff = next((n for n in body.nodes() if n.op.effectful), None)
        if eff is not None:
            raise GraphError(f"cond: {eff.describe()} has effects (op.effectful); a branch cannot hold it yet, "
                             "compute it outside and pass it in")
    union = list(dict.fromkeys(yes_cap + no_cap))
    yes = with_inputs(yes, yes_cap, union, len(xs))
    no = with_inputs(no, no_cap, union, len(xs))
    node = apply(Cond(yes, no), pred, *xs, *union)
    return unpack(node), yes_struct is None


def _structure_mismatch(a: int | None, b: int | None) -> str:
    def say(s):
        return "one node" if s is None else f"a tuple of {s}"
    return f"the true branch returns {say(a)}, the false branch {say(b)}"


def _unique(names: list[str]) -> list[str]:
    taken: set[str] = set()
    return [fresh_name(nm, taken) for nm in names]


