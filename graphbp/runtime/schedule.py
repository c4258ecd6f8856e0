"""Schedules: the forward/backward split of a compiled graph."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph.node import Node
from ..graph.traverse import depends_on
from ..ops.leaves import is_leaf


@dataclass(frozen=True)
class Schedule:
    """An ordered list of non-leaf nodes to evaluate.

    Attributes
    ----------
    name : str
        ``"forward"`` or ``"backward"``.
    nodes : list[Node]
        Evaluation order (inputs before users).
    reads : list[Node]
        Values this schedule reads that it does not compute (leaves, and for the backward
        schedule the forward activations it needs, see :attr:`saved`).
    saved : list[Node]
        For the backward schedule: non-leaf forward values it reads, which the forward
        schedule must keep alive. Empty for the forward schedule.
    """

    name: str
    nodes: list[Node]
    reads: list[Node] = field(default_factory=list)
    saved: list[Node] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)


def split_schedules(order: list[Node]) -> tuple[Schedule, Schedule]:
    """Split a topological order into forward and backward schedules.

    Backward holds every gradient node (``node.provenance`` set by ``gb.grad``/``gb.vjp``)
    and everything computed from one (parameter updates, for instance); forward holds the
    rest. A gradient rule's term that reads only forward values (``1 - tanh(x)**2``) thus
    runs in backward, so the forward pass saves the activation rather than the term.
    """
    grad_nodes = [n for n in order if n.provenance]
    backward_set = depends_on(order, grad_nodes)
    fwd = [n for n in order if not is_leaf(n) and n not in backward_set]
    bwd = [n for n in order if not is_leaf(n) and n in backward_set]
    fwd_set = set(fwd)
    bwd_reads: dict[Node, None] = {}
    for n in bwd:
        for i in n.inputs:
            if i not in backward_set or is_leaf(i):
                bwd_reads.setdefault(i, None)
    fwd_reads: dict[Node, None] = {}
    for n in fwd:
        for i in n.inputs:
            if is_leaf(i):
                fwd_reads.setdefault(i, None)
    saved = [n for n in bwd_reads if n in fwd_set]
    return (
        Schedule("forward", fwd, list(fwd_reads)),
        Schedule("backward", bwd, list(bwd_reads), saved),
    )
