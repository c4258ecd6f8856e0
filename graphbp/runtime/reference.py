"""The reference interpreter: the meaning of a graph, with nothing clever in between.

``evaluate`` runs one ``op.compute`` per node in topological order: no rewrite passes, no
lowering, no memory plan, no generated code. It is slow and obviously right, which is what
an oracle must be: tests compare every optimised, lowered, blocked program against it (as
JAX's ``eval_jaxpr`` is the model its transformations are checked against). Bodies of
higher-order ops are interpreted the same way, recursively: the op's kernel gets this
interpreter as its body runner (``op.compute_with``), so a ``scan`` loops in Python over its
steps interpreting the body per step and a ``cond`` interprets the branch it takes; no body
is ever compiled. Each value is dropped after its last reader, so it also runs graphs larger
than memory would allow if every intermediate were kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import numpy as np

from ..errors import FeedError, GraphError
from ..graph.node import Node
from ..graph.subgraph import Subgraph
from ..graph.traverse import toposort
from ..graph.types import TupleType
from ..ops.leaves import Input
from .feeds import check_feed


@overload
def evaluate(outputs: Node, feeds: Mapping[Node | str, Any] | None = None) -> np.ndarray: ...


@overload
def evaluate(outputs: Sequence[Node], feeds: Mapping[Node | str, Any] | None = None) -> list[np.ndarray]: ...


def evaluate(outputs, feeds=None):
    """Evaluate ``outputs`` by calling each op's NumPy kernel once, in topological order.

    Parameters
    ----------
    outputs : Node or sequence of Node
        What to compute. A single node gives one array, a sequence a list.
    feeds : mapping, optional
        A value for each input the outputs depend on, keyed by the input node or its name;
        checked and converted like a compiled program's feeds. Parameters are read at their
        current value.

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray
        Fresh arrays (never views of a parameter or a feed).

    Examples
    --------
    >>> import numpy as np, graphbp as gb
    >>> x = gb.input("x", (3,), dtype="float64")
    >>> gb.evaluate(gb.sum(x * x), {"x": np.array([1.0, 2.0, 3.0])})
    array(14.)
    """
    single = isinstance(outputs, Node)
    outs = [outputs] if single else list(outputs)
    for o in outs:
        if not isinstance(o, Node):
            raise GraphError(f"evaluate: outputs must be nodes, got {type(o).__name__}")
    by_name: dict[str, Any] = {}
    by_node: dict[Node, Any] = {}
    for key, value in (feeds or {}).items():
        if isinstance(key, Node):
            by_node[key] = value
        elif isinstance(key, str):
            by_name[key] = value
        else:
            raise FeedError(f"evaluate: feeds are keyed by input node or name, got {key!r}")

    def feed(n: Node) -> np.ndarray:
        if n in by_node:
            raw = by_node[n]
        elif n.op.input_name in by_name:
            raw = by_name[n.op.input_name]
        else:
            raise FeedError(f"evaluate: no feed for input {n.op.input_name!r}")
        return check_feed(n, raw)

    values = _interpret(outs, feed)
    return np.array(values[0]) if single else [np.array(v) for v in values]


def _interpret(outs: list[Node], feed: Callable[[Node], np.ndarray]) -> list[Any]:
    """The values of ``outs``; ``feed(n)`` gives each ``Input`` leaf's value."""
    order = toposort(outs)
    last: dict[Node, int] = {}
    for k, n in enumerate(order):
        for i in n.inputs:
            last[i] = k
    keep = set(outs)
    values: dict[Node, Any] = {}
    for k, n in enumerate(order):
        op = n.op
        if isinstance(op, Input):
            values[n] = feed(n)
        elif op.leaf_kind is not None:  # a parameter (its current value) or a constant
            values[n] = op.value
        else:
            out = op.compute_with(_body_runner, *(values[i] for i in n.inputs))
            values[n] = out if isinstance(n.type, TupleType) else np.asarray(out)  # several outputs: a tuple
            for i in dict.fromkeys(n.inputs):
                if last[i] == k and i not in keep:
                    del values[i]
    return [values[o] for o in outs]


def _body_runner(body: Subgraph) -> Callable[..., list[Any]]:
    """A body as a function of its operands, interpreted node by node (recursively for
    bodies inside it). Operands bind to the placeholders as they are: a body's values were
    checked when the op holding it type-checked, and a step's slice must not be copied."""
    def run(*arrays: np.ndarray) -> list[Any]:
        if len(arrays) != len(body.inputs):
            raise GraphError(f"evaluate: a body takes {len(body.inputs)} operands, got {len(arrays)}")
        env = dict(zip(body.inputs, arrays))
        return _interpret(list(body.outputs), env.__getitem__)

    return run


__all__ = ["evaluate"]
