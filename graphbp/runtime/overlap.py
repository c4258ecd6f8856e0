"""Scheduling split collectives: start each as early as it can, wait as late as it can.

A nonblocking collective is two nodes (``allreduce_start`` and ``allreduce_wait``,
graphbp/ops/collective.py) whose op facts say where they belong: ``schedule = "early"``
and ``"late"``. The topological order a graph comes in knows nothing of that; for a
data-parallel backward it typically computes every gradient before the first bucket's
allreduce starts, leaving nothing to overlap. :func:`overlap_order` reorders one schedule:

1. Starts are taken cheapest first: the one whose not-yet-scheduled ancestors cost the
   fewest FLOPs goes next, preceded by those ancestors (in their old relative order). In a
   backward pass that is the last layers' bucket, then the next, as the gradients appear.
2. Everything else follows in its old order.
3. Each wait moves down to just before the first node reading it.

The result is a function of the graph alone (FLOP estimates, the given order), so every
rank compiling the same program starts the same collectives in the same order, which MPI
requires; waits may complete in any order. Effectful nodes of other kinds (a random draw)
must keep their order relative to the collectives, so a schedule holding one is left as
it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..graph.node import Node
from .schedule import Partition


def overlap_partition(p: Partition) -> Partition:
    """``p`` with both schedules in :func:`overlap_order` (``p`` itself if nothing moves)."""
    forward, backward = overlap_order(p.forward), overlap_order(p.backward)
    if forward == list(p.forward) and backward == list(p.backward):
        return p
    return Partition.from_lists(forward, backward)


def overlap_order(nodes: Sequence[Node]) -> list[Node]:
    """The nodes (a valid evaluation order) with early nodes hoisted and late ones sunk."""
    nodes = list(nodes)
    kinds = [type(n.op).schedule for n in nodes]
    if all(k == "any" for k in kinds):
        return nodes
    if any(k == "any" and type(n.op).effectful for n, k in zip(nodes, kinds)):
        return nodes  # another effect must keep its place among the collectives
    position = {n: k for k, n in enumerate(nodes)}
    late = {n for n, k in zip(nodes, kinds) if k == "late"}
    cost = {n: _flops(n) for n in nodes}
    ancestors = {n: _ancestors(n, position) for n, k in zip(nodes, kinds) if k == "early"}

    order: list[Node] = []
    placed: set[Node] = set()
    waiting = sorted(ancestors, key=position.__getitem__)
    while waiting:
        def remaining(e: Node) -> float:
            return sum(cost[a] for a in ancestors[e] if a not in placed)

        best = min(waiting, key=lambda e: (remaining(e), position[e]))
        waiting.remove(best)
        for a in sorted(ancestors[best] - placed, key=position.__getitem__):
            order.append(a)
            placed.add(a)
        order.append(best)
        placed.add(best)
    order += [n for n in nodes if n not in placed and n not in late]

    # Sink each wait to just before its first reader (the end when nothing here reads it).
    at = {n: k for k, n in enumerate(order)}
    first_reader = {n: len(order) for n in late if n not in placed}
    for u in order:
        for i in u.inputs:
            if i in first_reader:
                first_reader[i] = min(first_reader[i], at[u])
    before: dict[int, list[Node]] = {}
    for n in sorted(first_reader, key=position.__getitem__):
        before.setdefault(first_reader[n], []).append(n)
    out: list[Node] = []
    for k, n in enumerate(order):
        out += before.get(k, [])
        out.append(n)
    out += before.get(len(order), [])
    return out


def _ancestors(node: Node, position: dict[Node, int]) -> set[Node]:
    """``node``'s ancestors within the schedule."""
    seen: set[Node] = set()
    stack = [i for i in node.inputs if i in position]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(i for i in n.inputs if i in position and i not in seen)
    return seen


def _flops(n: Node) -> float:
    """The node's FLOP estimate with unknown dims at 256 rows (a ranking, not a count)."""
    return float(n.op.flops([i.type for i in n.inputs], n.type).at(256))
