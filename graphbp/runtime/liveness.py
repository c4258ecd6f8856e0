"""Liveness of one planned step list: which storage each value holds, and when it dies.

A value keeps *storage roots* alive: itself, or for a view the roots of its operand, or for
a fallback ``call`` (whose result may alias its operands) itself plus its operands' roots.
A root dies at the last step that reads any value holding it; outputs and update values
live to the end. Reads of an op's ``shape_only_inputs`` are not reads: code generation
passes a stand-in of the planned shape there, so a value the backward needs only for its
shape is not kept alive for it.

This is half of planning; :mod:`.allocate` gives buffers to the lifetimes found here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..graph.node import Node
from .schedule import data_inputs

if TYPE_CHECKING:
    from .plan import Step


@dataclasses.dataclass(frozen=True)
class Liveness:
    """Lifetimes of one step list.

    Attributes
    ----------
    holds : dict[Node, frozenset]
        The storage roots each value keeps alive (leaves hold themselves).
    last : dict[Node, int]
        The step that last reads each value's data (``len(steps)`` for outputs and update
        values, which live to the end).
    death : dict[Node, int]
        The step after which each storage root is free: the latest ``last`` of the values
        holding it.
    """

    holds: dict[Node, frozenset]
    last: dict[Node, int]
    death: dict[Node, int]

    def holds_of(self, v: Node) -> frozenset:
        return self.holds.get(v) or frozenset((v,))


def storage_roots(steps: Sequence[Step]) -> dict[Node, frozenset]:
    """The roots each computed value (and each leaf it reads) keeps alive."""
    holds: dict[Node, frozenset] = {}

    def of(v: Node) -> frozenset:
        h = holds.get(v)
        if h is None:  # a leaf
            h = holds[v] = frozenset((v,))
        return h

    for st in steps:
        n, kind = st.node, st.low.kind
        if kind == "view":
            holds[n] = of(n.inputs[0])
        elif kind == "call":
            holds[n] = frozenset((n,)).union(*(of(i) for i in data_inputs(n)))
        else:
            for i in n.inputs:
                if i not in holds:  # a leaf
                    holds[i] = frozenset((i,))
            holds[n] = frozenset((n,))
    return holds


def liveness(steps: Sequence[Step], keep: Iterable[Node], holds: dict[Node, frozenset] | None = None) -> Liveness:
    """Lifetimes of ``steps`` in order; values in ``keep`` (outputs, update values) live
    past the last step. ``holds`` is :func:`storage_roots` of these steps (in any order)
    when the caller has it."""
    if holds is None:
        holds = storage_roots(steps)
    end = len(steps)
    last: dict[Node, int] = {}
    for s, st in enumerate(steps):
        n = st.node
        if n not in last:
            last[n] = s
        if st.low.kind == "const":
            continue  # computed at plan time: reads nothing per call
        for i in data_inputs(n) if type(n.op).shape_only_inputs else n.inputs:
            last[i] = s
    for v in keep:
        last[v] = end
    death: dict[Node, int] = {}
    death_get, holds_get = death.get, holds.get
    for v, s in last.items():
        for r in holds_get(v) or (v,):
            if death_get(r, -1) < s:
                death[r] = s
    return Liveness(holds, last, death)
