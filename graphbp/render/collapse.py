"""Keeping large graphs readable: collapse clusters into boxes, hide shape ops, fold scalars.

:func:`plan` decides, for a :class:`~.views.ViewSpec`, which items are drawn on their own,
which are drawn as part of a group box, and which are not drawn at all. An optimiser's
update clusters (one per parameter, see :mod:`.views`) are collapsed into boxes by default,
as a training step's diagram is about the model: ``expand_updates=True`` draws their
arithmetic. When the picture would exceed ``max_nodes`` boxes it collapses, coarsest-last:

1. each gradient cluster into one box (``∂ matmul · 5 ops``);
2. ``gb.scope`` clusters, deepest level first, up to the top level;
3. runs of consecutive sibling scopes with identical contents (``layer0 … layer31 ×32``);
4. as a last resort, consecutive remaining boxes in topological order into segments.

Everything is ordered by the spec's topological item order, so plans are deterministic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from ..graph.node import Node
from .classify import is_leaf_node, is_scalar_constant, is_shape_op
from .views import ViewSpec

DEFAULT_MAX_NODES = 250


@dataclass
class Group:
    key: Hashable
    kind: str  # grad | scope | update | run | chunk
    title: str
    cluster: tuple  # where the box sits
    members: list[Node] = field(default_factory=list)
    repeats: int = 1


@dataclass
class Plan:
    group_of: dict[Node, Hashable] = field(default_factory=dict)
    groups: dict[Hashable, Group] = field(default_factory=dict)
    hidden: set[Node] = field(default_factory=set)
    folded: set[Node] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def drawn_count(self, spec: ViewSpec) -> int:
        n = 0
        seen_groups: set[Hashable] = set()
        for it in spec.items:
            node = it.node
            if node in self.hidden or node in self.folded:
                continue
            g = self.group_of.get(node)
            if g is None:
                n += 1
            elif g not in seen_groups:
                seen_groups.add(g)
                n += 1
        return n


def plan(
    spec: ViewSpec,
    *,
    collapse: str | int | Sequence[str] | None = None,
    hide_shape_ops: bool = False,
    fold_constants: bool = True,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    expand_updates: bool = False,
) -> Plan:
    """Decide what is drawn. See the module docstring for the collapse ladder."""
    p = Plan()
    drawn = {it.node for it in spec.items}
    if fold_constants:
        for it in spec.items:
            n = it.node
            if is_scalar_constant(n) and n not in spec.subject.output_index:
                p.folded.add(n)
    if hide_shape_ops:
        for it in spec.items:
            n = it.node
            if is_shape_op(n) and n.inputs and n not in spec.subject.output_index and n.inputs[0] in drawn:
                p.hidden.add(n)
    if not expand_updates:
        _collapse_updates(spec, p)
    if collapse is not None:
        _apply_request(spec, p, collapse)
    if max_nodes is None:
        return p
    before = p.drawn_count(spec)
    if before <= max_nodes:
        return p
    for step in _ladder(spec):
        step(spec, p)
        if p.drawn_count(spec) <= max_nodes:
            break
    if any(g.kind == "scope" for g in p.groups.values()):
        _collapse_runs(spec, p, only_runs=True)  # a run of identical layers reads best as one box
    if p.drawn_count(spec) > max_nodes:
        _chunk(spec, p, max_nodes)
    p.notes.append(
        f"collapsed: {before} boxes drawn as {p.drawn_count(spec)} (max_nodes={max_nodes}; "
        "pass max_nodes=None to draw every node)"
    )
    return p


def _apply_request(spec: ViewSpec, p: Plan, collapse: str | int | Sequence[str]) -> None:
    if collapse == "scope":
        _collapse_scopes(spec, p, depth=1)
    elif collapse == "grad":
        _collapse_grads(spec, p)
    elif collapse == "layers":
        _collapse_runs(spec, p, only_runs=True)
    elif isinstance(collapse, int) and not isinstance(collapse, bool):
        if collapse < 1:
            raise ValueError(f"collapse depth must be >= 1, got {collapse}")
        _collapse_scopes(spec, p, depth=collapse)
    elif isinstance(collapse, (list, tuple)) and all(isinstance(c, str) for c in collapse):
        wanted = {tuple(c.split("/")) for c in collapse}
        _collapse_scopes(spec, p, depth=None, only=wanted)
    else:
        raise ValueError(
            f"collapse must be None, 'scope', 'grad', 'layers', a scope depth (int) or a list of "
            f"scope names, got {collapse!r}"
        )


def _ladder(spec: ViewSpec):
    steps = []
    if any(info.kind == "grad" for info in spec.clusters.values()):
        steps.append(_collapse_grads)
    depth = max((len(key[2]) for key, info in spec.clusters.items() if info.kind == "scope"), default=0)
    for d in range(depth, 0, -1):
        steps.append(lambda s, p, d=d: _collapse_scopes(s, p, depth=d))
    if depth:
        steps.append(lambda s, p: _collapse_runs(s, p, only_runs=False))
    return steps


def _assign(p: Plan, fresh: Group, node: Node) -> None:
    """Put ``node`` in group ``fresh.key`` (created from ``fresh`` if new; coarser groups
    absorb finer ones)."""
    key = fresh.key
    g = p.groups.get(key)
    if g is None:
        g = fresh
        p.groups[key] = g
    old = p.group_of.get(node)
    if old is not None and old != key and old in p.groups:
        p.groups[old].members.remove(node)
        if not p.groups[old].members:
            del p.groups[old]
    p.group_of[node] = key
    g.members.append(node)


def _collapse_grads(spec: ViewSpec, p: Plan) -> None:
    for it in spec.items:
        for i, key in enumerate(it.cluster):
            info = spec.clusters.get(key)
            if info is not None and info.kind == "grad":
                if p.group_of.get(it.node) is not None and p.groups[p.group_of[it.node]].kind != "grad":
                    break  # already inside a coarser box
                gkey = ("box",) + (key,)
                parent = it.cluster[:i]
                _assign(p, Group(gkey, "grad", info.label, parent), it.node)
                break


def _collapse_updates(spec: ViewSpec, p: Plan) -> None:
    """Each parameter's optimiser arithmetic becomes one box (``update of W1 · 14 ops``)."""
    for it in spec.items:
        for i, key in enumerate(it.cluster):
            info = spec.clusters.get(key)
            if info is not None and info.kind == "update":
                _assign(p, Group(("box", key), "update", info.label, it.cluster[:i]), it.node)
                break


def _collapse_scopes(spec: ViewSpec, p: Plan, depth: int | None, only: set | None = None) -> None:
    for it in spec.items:
        for i, key in enumerate(it.cluster):
            info = spec.clusters.get(key)
            if info is None or info.kind != "scope":
                continue
            scope = key[2]
            if (depth is not None and len(scope) != depth) or (only is not None and scope not in only):
                continue
            current = p.group_of.get(it.node)
            if current is not None and p.groups[current].kind in ("run", "chunk"):
                break
            gkey = ("box", key)
            parent = it.cluster[:i]
            title = "/".join(scope)
            _assign(p, Group(gkey, "scope", title, parent), it.node)
            break


def _signature(spec: ViewSpec, g: Group) -> tuple:
    return tuple((n.op.name, n.type.dtype.name, n.type.shape) for n in g.members)


_DIGITS = re.compile(r"\d+")


def _collapse_runs(spec: ViewSpec, p: Plan, only_runs: bool) -> None:
    """Merge consecutive sibling scope boxes with equal contents and names equal up to
    digits (``layer3``, ``layer4``, ...) into one box; needs at least three in a row.

    Tries the shallowest scope level first. With ``only_runs`` the scopes that are not part
    of a run stay expanded; otherwise every scope at that level becomes a box.
    """
    depth = max((len(key[2]) for key, info in spec.clusters.items() if info.kind == "scope"), default=0)
    for d in range(1, depth + 1):
        trial = _copy(p)
        _collapse_scopes(spec, trial, depth=d)
        runs = _find_runs(spec, trial)
        if not runs:
            continue
        target = p if only_runs else trial
        for run in runs:
            _merge_run(target, run)
        if not only_runs:
            p.group_of, p.groups = trial.group_of, trial.groups
        return


def _copy(p: Plan) -> Plan:
    groups = {k: Group(g.key, g.kind, g.title, g.cluster, list(g.members), g.repeats) for k, g in p.groups.items()}
    return Plan(dict(p.group_of), groups, p.hidden, p.folded, p.notes)


def _find_runs(spec: ViewSpec, p: Plan) -> list[list[Group]]:
    boxes = [g for g in _groups_in_order(spec, p) if g.kind == "scope"]
    runs: list[list[Group]] = []
    run: list[Group] = []
    for g in boxes + [None]:
        if run and g is not None and _same_layer(spec, run[-1], g):
            run.append(g)
            continue
        if len(run) >= 3:
            runs.append(run)
        run = [g] if g is not None else []
    return runs


def _same_layer(spec: ViewSpec, a: Group, b: Group) -> bool:
    return (
        a.cluster == b.cluster
        and _DIGITS.sub("#", a.title) == _DIGITS.sub("#", b.title)
        and _signature(spec, a) == _signature(spec, b)
    )


def _merge_run(p: Plan, run: list[Group]) -> Hashable:
    first, last = run[0], run[-1]
    key = ("run", first.key)
    merged = Group(key, "run", f"{first.title} … {last.title}", first.cluster, [], len(run))
    p.groups[key] = merged
    for g in run:
        for n in g.members:
            old = p.group_of.get(n)
            if old is not None and old != key and old in p.groups:
                p.groups[old].members.remove(n)
                if not p.groups[old].members:
                    del p.groups[old]
            p.group_of[n] = key
            merged.members.append(n)
    return key


def _groups_in_order(spec: ViewSpec, p: Plan) -> list[Group]:
    out, seen = [], set()
    for it in spec.items:
        k = p.group_of.get(it.node)
        if k is not None and k not in seen and k in p.groups:
            seen.add(k)
            out.append(p.groups[k])
    return out


def _chunk(spec: ViewSpec, p: Plan, max_nodes: int) -> None:
    """Last resort: merge consecutive boxes (single nodes or groups) of the same side
    into segments so that at most ``max_nodes`` boxes remain."""
    units: list[tuple[Hashable, tuple, list[Node]]] = []
    index: dict[Hashable, int] = {}
    for it in spec.items:
        n = it.node
        if n in p.hidden or n in p.folded:
            continue
        key = p.group_of.get(n, ("node", n))
        if key in index:
            units[index[key]][2].append(n)
            continue
        side = it.cluster[:1] if it.cluster and spec.clusters[it.cluster[0]].kind == "side" else ()
        index[key] = len(units)
        units.append((key, side, [n]))
    target = max(1, max_nodes - 2)
    size = max(2, math.ceil(len(units) / target))
    chunk_no = 0
    i = 0
    while i < len(units):
        side = units[i][1]
        j = i
        batch: list[Node] = []
        while j < len(units) and j - i < size and units[j][1] == side:
            batch.extend(units[j][2])
            j += 1
        if j - i > 1:
            key = ("chunk", chunk_no)
            ops = [n for n in batch if not is_leaf_node(n)]
            title = f"segment {chunk_no}: {len(ops)} ops"
            p.groups[key] = Group(key, "chunk", title, side, [])
            for n in batch:
                old = p.group_of.get(n)
                if old is not None and old in p.groups and old != key:
                    del p.groups[old]
                p.group_of[n] = key
                p.groups[key].members.append(n)
            chunk_no += 1
        i = j
