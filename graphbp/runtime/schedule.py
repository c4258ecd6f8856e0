"""Schedules and the forward/backward partition of a compiled graph.

The split is data, not something derived again by each consumer: :func:`partition` builds a
:class:`Partition` from the joint graph once (``gb.compile`` keeps it on the Program), and
everything downstream (the memory plan, code generation, ``explain``, the diagrams) reads
its node lists and saved set. A memory policy that recomputes instead of saving builds a
new partition from changed node lists with :meth:`Partition.from_lists`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
        schedule the forward values it needs, see :attr:`saved`).
    saved : list[Node]
        For the backward schedule: non-leaf forward values whose data it reads, which the
        forward schedule must keep alive. Empty for the forward schedule.
    """

    name: str
    nodes: list[Node]
    reads: list[Node] = field(default_factory=list)
    saved: list[Node] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes)


def data_inputs(node: Node) -> Iterable[Node]:
    """The operands ``node`` reads the data of (all but its op's ``shape_only_inputs``)."""
    skip = type(node.op).shape_only_inputs
    if not skip:
        return node.inputs
    return (x for k, x in enumerate(node.inputs) if k not in skip)


@dataclass(frozen=True)
class Partition:
    """The forward/backward split of a joint graph.

    Attributes
    ----------
    forward, backward : tuple[Node, ...]
        Non-leaf nodes of each schedule, each in a valid evaluation order; the forward
        schedule runs first. Effectful nodes keep their relative order across both.
    saved : tuple[Node, ...]
        Forward values whose data the backward schedule reads: kept alive across the split.
    shape_only : tuple[Node, ...]
        Forward values the backward schedule reads only for their shape (``like=`` operands,
        a mean's element count) and not otherwise: nothing of them is kept but the shape.
    """

    forward: tuple[Node, ...]
    backward: tuple[Node, ...]
    saved: tuple[Node, ...]
    shape_only: tuple[Node, ...] = ()

    @classmethod
    def from_lists(cls, forward: Sequence[Node], backward: Sequence[Node]) -> Partition:
        """The partition with these node lists; the saved set follows from them.

        Raises ``ValueError`` when a forward node reads a backward one (it could not run)."""
        fwd_set = set(forward)
        bwd_set = set(backward)
        for n in forward:
            if any(i in bwd_set for i in n.inputs):
                raise ValueError(f"forward node {n!r} reads a value the backward schedule computes")
        saved: dict[Node, None] = {}
        for n in backward:
            for i in data_inputs(n):
                if i in fwd_set:
                    saved.setdefault(i, None)
        shape_only: dict[Node, None] = {}
        for n in backward:
            for i in n.inputs:
                if i in fwd_set and i not in saved:
                    shape_only.setdefault(i, None)
        return cls(tuple(forward), tuple(backward), tuple(saved), tuple(shape_only))

    def schedules(self) -> tuple[Schedule, Schedule]:
        """The two :class:`Schedule` views (with the values each reads from outside)."""
        fwd_reads: dict[Node, None] = {}
        for n in self.forward:
            for i in n.inputs:
                if is_leaf(i):
                    fwd_reads.setdefault(i, None)
        computed = set(self.backward)
        bwd_reads: dict[Node, None] = {}
        for n in self.backward:
            for i in n.inputs:
                if i not in computed:
                    bwd_reads.setdefault(i, None)
        return (Schedule("forward", list(self.forward), list(fwd_reads)),
                Schedule("backward", list(self.backward), list(bwd_reads), list(self.saved)))


def partition(order: Sequence[Node]) -> Partition:
    """Split a topological order of the joint graph into forward and backward.

    Backward holds every gradient node (``node.provenance`` set by ``gb.grad``/``gb.vjp``)
    and everything computed from one (parameter updates, for instance); forward holds the
    rest. A gradient rule's term that reads only forward values (``1 - tanh(x)**2``) thus
    runs in backward, so the forward pass saves the activation rather than the term.

    Effects keep their order: once an effectful node falls in backward, every effectful node
    after it in ``order`` (and what depends on it) moves to backward too, so no effect runs
    before one that preceded it.
    """
    order = list(order)
    seeds = [n for n in order if n.provenance]
    backward_set = depends_on(order, seeds)
    effects = [n for n in order if type(n.op).effectful]
    first = next((k for k, n in enumerate(effects) if n in backward_set), None)
    if first is not None and any(n not in backward_set for n in effects[first:]):
        backward_set = depends_on(order, seeds + effects[first:])
    fwd = [n for n in order if not is_leaf(n) and n not in backward_set]
    bwd = [n for n in order if not is_leaf(n) and n in backward_set]
    return Partition.from_lists(fwd, bwd)


def split_schedules(order: list[Node]) -> tuple[Schedule, Schedule]:
    """The forward and backward :class:`Schedule` of :func:`partition` ``(order)``."""
    return partition(order).schedules()
