"""Rematerialisation: recompute forward values in the backward schedule instead of saving them.

A transformation of the :class:`~.schedule.Partition`, not an executor mode: it decides which
forward values the backward schedule reads directly (saved across the split) and which it
recomputes, builds the recomputations as new backward nodes (``Provenance(forward=<the node
copied>, rule="remat")``), rebuilds the backward nodes that read them, and returns a new
partition (``Partition.from_lists``, so the saved set follows). Plan, liveness, allocation
and code generation see ordinary nodes.

The decision is a minimum cut, as in PyTorch's AOTAutograd partitioner: each forward value
``n`` is an edge ``n.in -> n.out`` whose capacity is its bytes (unknown dims priced at a
reference batch); values the backward reads are tied to the sink; values that may not be
recomputed (expensive or effectful) are tied to the source. A cut edge is a saved value;
nodes on the sink side are recomputed. Only the frontier matters: the network holds the
values the backward reads and the recomputable values they depend on, stopping at the first
value that cannot be recomputed, so its size is that of the frontier, not of the graph.

With a memory budget, more is recomputed when the cheap plan does not fit: segment
checkpointing (the forward split into ``k`` pieces of equal bytes; the values crossing each
boundary are the only ones tied to the source, everything else may be recomputed), trying
``k`` around ``sqrt(n)`` and keeping the plan with the fewest recomputed FLOPs that fits.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import networkx as nx

from ..errors import GraphError
from ..graph.context import CHECKPOINT_SCOPE, Provenance
from ..graph.cost import bytes_poly, size_poly
from ..graph.node import Node
from ..graph.rewrite import rebuild
from .schedule import Partition

REMAT_MODES = ("none", "min_cut")
REFERENCE_ROWS = 256
"""Size given to unknown dims (the batch) when pricing bytes and FLOPs for the cut."""

FLOW = nx.algorithms.flow.shortest_augmenting_path
"""The max-flow algorithm of the cut: the fastest of networkx's on the pieces of a
10,000-node joint graph (``benchmarks/memory.py`` measures preflow_push,
shortest_augmenting_path, boykov_kolmogorov and edmonds_karp; docs/memory.md)."""

_SRC, _SNK = "source", "sink"


@dataclass(frozen=True)
class RematReport:
    """What rematerialisation did (``program.remat``; summarised by ``memory_plan()``).

    Byte and FLOP figures are at ``reference_rows`` for unknown dims. ``kept`` is what a
    budget bounds: saved bytes plus the largest set of recomputed values alive at once in
    the backward schedule (``recompute_peak``), since recomputing a whole segment holds it.
    """

    mode: str
    budget: int | None
    saved_before: int
    saved_after: int
    recompute_peak: int
    flops: int
    recomputed: tuple[Node, ...]
    saved_nodes_before: tuple[Node, ...]
    segments: int
    seconds: float
    reference_rows: int = REFERENCE_ROWS

    @property
    def kept(self) -> int:
        return self.saved_after + self.recompute_peak


def nbytes_at(n: Node, rows: int) -> int:
    return bytes_poly(n.type).at(rows)


def cheap(n: Node, rows: int) -> bool:
    """True when ``n`` is worth recomputing rather than saving: a view, an elementwise op, a
    reduction of small fan-in: at most a few FLOPs per element it reads or writes. Matmul,
    convolutions, loops and effectful ops fail (their op facts say so)."""
    op = n.op
    if op.effectful or op.subgraphs() or not n.inputs:
        return False
    if op.view:
        return True
    work = op.flops([i.type for i in n.inputs], n.type).at(rows)
    touched = sum(size_poly(i.type).at(rows) for i in n.inputs) + size_poly(n.type).at(rows)
    return work <= 4 * touched


def in_checkpoint(n: Node) -> bool:
    return CHECKPOINT_SCOPE in n.scope


def _data(n: Node) -> list[Node]:
    skip = type(n.op).shape_only_inputs
    return [x for k, x in enumerate(n.inputs) if k not in skip]


def _cut(partition: Partition, recomputable: Callable[[Node], bool], rows: int,
         forced: frozenset = frozenset()) -> set[Node]:
    """The forward values to recompute: the sink side of a minimum cut of the frontier.

    ``forced`` values are tied to the source (segment boundaries). Checkpoint-region values
    may not be saved (infinite capacity), so the cut falls on the region's inputs."""
    fwd = set(partition.forward)
    needed = list(partition.saved)
    free: dict[Node, bool] = {}  # region node -> may be recomputed
    stack = list(reversed(needed))
    while stack:  # the frontier: backward reads, back through recomputable values
        n = stack.pop()
        if n in free:
            continue
        free[n] = recomputable(n) and n not in forced
        if free[n]:
            stack.extend(i for i in _data(n) if i in fwd and i not in free)
    # The frontier falls apart where a value cannot be recomputed (each matmul of an MLP
    # starts a new piece): cutting each connected piece alone is the same cut, faster.
    parent = {n: n for n in free}

    def find(n: Node) -> Node:
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for n, f in free.items():
        if f:
            for i in _data(n):
                if i in fwd:
                    parent[find(i)] = find(n)
    pieces: dict[Node, list[Node]] = {}
    for n in free:
        pieces.setdefault(find(n), []).append(n)
    needed_set = set(needed)
    sink_side: set = set()
    for piece in pieces.values():
        if any(free[n] for n in piece):
            sink_side |= _cut_piece(piece, free, needed_set, fwd, rows)
    out: set[Node] = set()
    stack = list(needed)
    while stack:  # recompute what the backward needs and the sink side can rebuild
        n = stack.pop()
        if n in out or not (free.get(n) and (n, 0) in sink_side):
            continue
        out.add(n)
        stack.extend(i for i in _data(n) if i in fwd)
    return out


def _cut_piece(piece: list[Node], free: dict[Node, bool], needed: set[Node], fwd: set[Node], rows: int) -> set:
    """The sink side of the minimum cut of one connected piece of the frontier."""
    # Capacities are bytes scaled by more than the number of edges, plus one for a value
    # that cannot be recomputed: among cuts of equal bytes, the one saving the later values
    # (recomputing least) wins. Built reversed (sink -> source) so the side networkx returns
    # is the smallest sink side.
    scale = len(piece) + 1
    g = nx.DiGraph()
    g.add_node(_SRC)  # maybe nothing is tied to it: everything recomputable from leaves
    for n in piece:
        if free[n] and in_checkpoint(n):
            g.add_edge((n, 1), (n, 0))  # no capacity: infinite, a checkpointed value is never saved
        else:
            g.add_edge((n, 1), (n, 0), capacity=nbytes_at(n, rows) * scale + (not free[n]))
        if free[n]:
            g.add_edges_from(((n, 0), (i, 1)) for i in _data(n) if i in fwd)
        else:
            g.add_edge((n, 0), _SRC)
        if n in needed:
            g.add_edge(_SNK, (n, 1))
    _, (sink_side, _) = nx.minimum_cut(g, _SNK, _SRC, flow_func=FLOW)
    return sink_side


def _apply(partition: Partition, recompute: set[Node]) -> tuple[Partition, dict[Node, Node], list[Node]]:
    """Copies of ``recompute`` in the backward schedule, and the backward nodes rebuilt to
    read them. Returns the new partition, the map old backward node -> new, and the copies.

    Copies, and backward nodes computed from forward values and copies only (a rule's
    ``1 - y**2``), are placed right before their first other reader rather than where the
    old order had them, so a recomputed segment lives only while its gradients run."""
    if not recompute:
        return partition, {}, []
    copy: dict[Node, Node] = {}
    for n in partition.forward:  # topological: a copy's recomputed inputs are copied first
        if n in recompute:
            skip = type(n.op).shape_only_inputs
            ins = tuple(i if k in skip else copy.get(i, i) for k, i in enumerate(n.inputs))
            copy[n] = rebuild(n, ins, provenance=(Provenance(n, "remat"),))
    rank = {c: k for k, c in enumerate(copy.values())}
    new: dict[Node, Node] = {}
    lazy: set[Node] = set(rank)
    computed: set[Node] = set()
    for k, b in enumerate(partition.backward):
        skip = type(b.op).shape_only_inputs
        ins = tuple(new.get(i, i) if k in skip or i not in copy else copy[i] for k, i in enumerate(b.inputs))
        nb = b if ins == b.inputs else rebuild(b, ins)
        new[b] = nb
        rank[nb] = len(partition.forward) + k
        computed.add(nb)
        if nb is not b and not nb.op.effectful and all(i in lazy or i not in computed for i in nb.inputs):
            lazy.add(nb)
    backward = _schedule([new[b] for b in partition.backward], lazy, rank, set(copy.values()))
    part = Partition.from_lists(partition.forward, backward)
    copies = set(copy.values())
    return part, {b: nb for b, nb in new.items() if nb is not b}, [c for c in backward if c in copies]


def _schedule(nodes: list[Node], lazy: set[Node], rank: dict[Node, int], copies: set[Node]) -> list[Node]:
    """The backward order: ``nodes`` (a valid order) list-scheduled so that recomputed values
    die early. Lazy values run on demand, right before the first node reading them; among
    the nodes ready to run, one reading an already recomputed value goes first (a weight
    gradient reading a recomputed activation), else the first in the old order. Effectful
    nodes keep their order."""
    eager = [n for n in nodes if n not in lazy]
    pos = {n: k for k, n in enumerate(eager)}
    reach: dict[Node, set[Node]] = {}  # eager node -> the copies it reads through lazy values
    deps: dict[Node, set[Node]] = {}
    prev_effect = None
    for n in eager:
        seen: set[Node] = set()
        found: set[Node] = set()
        d: set[Node] = set()
        stack = list(n.inputs)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            if i in pos:
                d.add(i)
            elif i in lazy:
                if i in copies:
                    found.add(i)
                stack.extend(i.inputs)
        if n.op.effectful:
            if prev_effect is not None:
                d.add(prev_effect)
            prev_effect = n
        reach[n], deps[n] = found, d
    waiting = {n: len(d) for n, d in deps.items()}
    users: dict[Node, list[Node]] = {}
    readers: dict[Node, list[Node]] = {}
    for n in eager:
        for i in deps[n]:
            users.setdefault(i, []).append(n)
        for c in reach[n]:
            readers.setdefault(c, []).append(n)
    ready = [pos[n] for n in eager if not waiting[n]]
    hot: list[int] = []
    heapq.heapify(ready)
    out: list[Node] = []
    emitted: set[Node] = set()
    done: set[Node] = set()
    while ready or hot:
        k = heapq.heappop(hot) if hot else heapq.heappop(ready)
        n = eager[k]
        if n in done:
            continue
        done.add(n)
        wanted: dict[Node, None] = {}
        stack = [i for i in n.inputs if i in lazy and i not in emitted]
        while stack:
            c = stack.pop()
            if c not in wanted:
                wanted[c] = None
                stack.extend(i for i in c.inputs if i in lazy and i not in emitted)
        for c in sorted(wanted, key=rank.__getitem__):
            out.append(c)
            emitted.add(c)
            for r in readers.get(c, ()):
                if not waiting[r] and r not in done:
                    heapq.heappush(hot, pos[r])
        out.append(n)
        for u in users.get(n, ()):
            waiting[u] -= 1
            if not waiting[u]:
                heapq.heappush(hot if reach[u] & emitted else ready, pos[u])
    for n in nodes:  # lazy values nothing eager reads (outputs): at the end
        if n in lazy and n not in emitted:
            wanted = {}
            stack = [n]
            while stack:
                c = stack.pop()
                if c not in wanted and c not in emitted:
                    wanted[c] = None
                    stack.extend(i for i in c.inputs if i in lazy)
            for c in sorted(wanted, key=rank.__getitem__):
                out.append(c)
                emitted.add(c)
    return out


def _recompute_peak(backward: Sequence[Node], copies: list[Node], rows: int) -> int:
    """Largest total bytes of recomputed values alive at once (each from its step to its
    last reader) in the backward schedule."""
    if not copies:
        return 0
    cs = set(copies)
    last: dict[Node, int] = {}
    for k, n in enumerate(backward):
        for i in n.inputs:
            if i in cs:
                last[i] = k
    live = peak = 0
    dying: dict[int, int] = {}
    for k, n in enumerate(backward):
        if n in cs:
            live += nbytes_at(n, rows)
            peak = max(peak, live)
            dying[last.get(n, k)] = dying.get(last.get(n, k), 0) + nbytes_at(n, rows)
        live -= dying.pop(k, 0)
    return peak


def _segments(partition: Partition, k: int, rows: int) -> frozenset:
    """The values crossing the boundaries of ``k`` pieces of the forward of equal bytes."""
    fwd = partition.forward
    rank = {n: j for j, n in enumerate(fwd)}
    sizes = [nbytes_at(n, rows) for n in fwd]
    total = sum(sizes) or 1
    bounds, acc, target = [], 0, total / k
    for j, s in enumerate(sizes):
        acc += s
        if acc >= target * (len(bounds) + 1) and len(bounds) < k - 1:
            bounds.append(j)
    last_user: dict[Node, int] = {}
    for j, n in enumerate(fwd):
        for i in _data(n):
            if i in rank:
                last_user[i] = j
    return frozenset(n for n, j in rank.items() if any(j <= b < last_user.get(n, -1) for b in bounds))


def rematerialize(partition: Partition, mode: str = "none", *, budget: int | None = None,
                  rows: int = REFERENCE_ROWS) -> tuple[Partition, dict[Node, Node], RematReport]:
    """The partition with recomputation per ``mode`` (and ``budget`` bytes, see RematReport).

    ``"none"`` recomputes only ``gb.checkpoint`` regions; ``"min_cut"`` also every cheap value
    where that saves bytes. Returns the new partition, the map of rebuilt backward nodes
    (old -> new, for the program's outputs and updates) and the report.
    """
    if mode not in REMAT_MODES:
        raise GraphError(f"compile: remat= takes one of {REMAT_MODES}, got {mode!r}")
    if budget is not None and mode == "none":
        raise GraphError("compile: memory_budget= needs remat='min_cut' (remat='none' recomputes nothing)")
    start = time.perf_counter()
    before = sum(nbytes_at(n, rows) for n in partition.saved)

    def plan(recomputable: Callable[[Node], bool], forced: frozenset = frozenset(), segments: int = 0):
        recompute = _cut(partition, recomputable, rows, forced)
        part, mapping, copies = _apply(partition, recompute)
        report = RematReport(
            mode, budget, before, sum(nbytes_at(n, rows) for n in part.saved),
            _recompute_peak(part.backward, copies, rows),
            sum(c.op.flops([i.type for i in c.inputs], c.type).at(rows) for c in copies),
            tuple(copies), partition.saved, segments, 0.0, rows)
        return part, mapping, report

    def ckpt(n: Node) -> bool:
        return in_checkpoint(n) and not n.op.effectful and not n.op.subgraphs() and bool(n.inputs)

    if mode == "none":
        chosen = plan(ckpt)
    else:
        chosen = plan(lambda n: ckpt(n) or cheap(n, rows))
        if budget is not None and chosen[2].kept > budget:
            candidates = [chosen]
            anything = lambda n: not n.op.effectful and not n.op.subgraphs() and bool(n.inputs)  # noqa: E731
            n_fwd = len(partition.forward)
            root = max(2, round(math.sqrt(n_fwd / 2)))
            for k in sorted({max(2, min(n_fwd, round(root * f))) for f in (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4)}):
                candidates.append(plan(anything, _segments(partition, k, rows), k))
            fits = [c for c in candidates if c[2].kept <= budget]
            if not fits:
                smallest = min(c[2].kept for c in candidates)
                raise GraphError(
                    f"compile: no plan fits memory_budget={budget} B (at {rows} rows for unknown dims): "
                    f"saving everything the backward reads keeps {before} B; the smallest plan found "
                    f"(recomputing segments of the forward) keeps {smallest} B. Pass memory_budget>={smallest}.")
            chosen = min(fits, key=lambda c: (c[2].flops, c[2].kept))
    part, mapping, report = chosen
    from dataclasses import replace

    return part, mapping, replace(report, seconds=time.perf_counter() - start)
