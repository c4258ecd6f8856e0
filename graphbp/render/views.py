"""Which nodes each view shows, in which cluster, with which role.

A view is a :class:`ViewSpec`: items in topological order, each with a role and a cluster
path, plus the cluster labels and the forward-op -> gradient-cluster links. Collapsing
(:mod:`.collapse`) and drawing (:mod:`.dot`) work on any spec, so the three graph views
share one renderer.

An optimiser's update arithmetic (``Subject.update_owner``) is drawn in one ``update``
cluster per parameter (``update of W1``), plus one for what several parameters share (the
step count, the learning rate); :func:`~.collapse.plan` collapses them by default.

Cluster keys are tuples that include the side (``"forward"``/``"backward"``), so the same
``gb.scope`` can appear once on each side of the joint view.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from ..graph.node import Node
from ..graph.subgraph import Subgraph
from . import styles
from .classify import absorbed_ops, grad_origin, is_leaf_node, leaf_kind
from .subject import Subject, node_title, origin_text, short_type

VIEWS = ("forward", "backward", "joint", "optimization")


@dataclass
class Item:
    node: Node
    role: str  # input | param | constant | op | grad | fwdref | update
    cluster: tuple[Hashable, ...] = ()


@dataclass
class ClusterInfo:
    kind: str  # side | scope | grad | update
    label: str
    attrs: dict[str, str]


@dataclass
class ViewSpec:
    view: str
    subject: Subject
    items: list[Item]
    clusters: dict[Hashable, ClusterInfo] = field(default_factory=dict)
    links: list[tuple[Node, Hashable]] = field(default_factory=list)
    grad_colour: dict[Node, int] = field(default_factory=dict)
    show_steps: bool = False
    show_saved: bool = False
    # loop carries inside drawn bodies: (value a step returns, placeholder the next reads, index)
    carries: list[tuple[Node, Node, int]] = field(default_factory=list)
    # nodes drawn inside the bodies of backward nodes (a reverse scan's): drawn as backward
    backward_inner: set[Node] = field(default_factory=set)


def _scope_path(spec: ViewSpec, side: str, scope: tuple[str, ...]) -> tuple:
    path = []
    for depth in range(1, len(scope) + 1):
        key = ("scope", side, scope[:depth])
        if key not in spec.clusters:
            spec.clusters[key] = ClusterInfo("scope", scope[depth - 1], dict(styles.SCOPE_CLUSTER))
        path.append(key)
    return tuple(path)


def _grad_key(spec: ViewSpec, side: str, fwd: Node) -> Hashable:
    key = ("grad", side, fwd)
    if key not in spec.clusters:
        if fwd not in spec.grad_colour:
            spec.grad_colour[fwd] = len(spec.grad_colour)
        where = origin_text(fwd)
        label = f"∂ {node_title(fwd)} → {short_type(fwd.type)}" + (f" · {where}" if where else "")
        spec.clusters[key] = ClusterInfo("grad", label, styles.grad_cluster_style(spec.grad_colour[fwd]))
    return key


UPDATE_SIDE = {"style": "rounded,filled", "fillcolor": "#f0fdfa", "color": "#99f6e4", "fontsize": "13"}
UPDATE_CLUSTER = {"style": "rounded,dashed", "color": "#0f766e", "fontsize": "10", "fontcolor": "#0f766e"}


def _update_path(spec: ViewSpec, side: str, n: Node) -> tuple | None:
    """The update cluster of optimiser arithmetic ``n`` (None for any other node)."""
    s = spec.subject
    if n not in s.update_owner:
        return None
    owner = s.update_owner[n]
    key = ("update", side, owner)
    if key not in spec.clusters:
        label = f"update of {node_title(owner)}" if owner is not None else "optimiser (shared by all updates)"
        spec.clusters[key] = ClusterInfo("update", label, dict(UPDATE_CLUSTER))
    return (key,)


def _role(node: Node, s: Subject) -> str:
    kind = leaf_kind(node)
    if kind is not None:
        return "grad" if node.provenance else kind
    if node.provenance:
        return "grad"
    if node in s.backward_set:
        return "update"
    return "op"


def _colour_forward_ops(spec: ViewSpec) -> None:
    """Number forward ops with gradient clusters in forward topological order, so the
    colour of a gradient cluster does not depend on which view draws it."""
    origins = {grad_origin(n) for n in spec.subject.order if n.provenance}
    for n in spec.subject.order:
        if n in origins and n not in spec.grad_colour:
            spec.grad_colour[n] = len(spec.grad_colour)


def forward_view(s: Subject) -> ViewSpec:
    """Inputs, parameters, constants and forward ops, clustered by ``gb.scope``."""
    spec = ViewSpec("forward", s, [])
    fwd = set(s.forward)
    needed = set(fwd)
    for n in s.forward:
        needed.update(i for i in n.inputs if is_leaf_node(i))
    for o in s.outputs:  # a leaf returned as an output is still part of the forward picture
        if is_leaf_node(o) and not o.provenance:
            needed.add(o)
    for n in s.order:
        if n in needed:
            path = _update_path(spec, "forward", n) or _scope_path(spec, "forward", n.scope)
            spec.items.append(Item(n, _role(n, s), path))
    return spec


def backward_view(s: Subject) -> ViewSpec:
    """Gradient nodes clustered by the forward op whose rule produced them; the forward
    values they read appear outside the clusters, highlighted as saved activations."""
    spec = ViewSpec("backward", s, [], show_saved=True)
    _colour_forward_ops(spec)
    bwd = s.backward_set
    reads: set[Node] = set()
    for n in s.backward:
        reads.update(i for i in n.inputs if i not in bwd)
    for o in s.outputs:
        if o.provenance and is_leaf_node(o):
            reads.add(o)
    for n in s.order:
        if n in bwd or (n in reads and n.provenance):
            spec.items.append(Item(n, _role(n, s), _backward_cluster(spec, "backward", n)))
        elif n in reads:
            role = leaf_kind(n) or "fwdref"
            spec.items.append(Item(n, role, _update_path(spec, "backward", n) or ()))
    return spec


def _backward_cluster(spec: ViewSpec, side: str, n: Node) -> tuple:
    update = _update_path(spec, side, n)
    if update is not None:
        return update
    path = _scope_path(spec, side, n.scope)
    fwd = grad_origin(n)
    return path + (_grad_key(spec, side, fwd),) if fwd is not None else path


def joint_view(s: Subject) -> ViewSpec:
    """Forward and backward side by side; saved activations highlighted with their bytes,
    dashed links from each forward op to its gradient cluster, schedule steps on nodes."""
    spec = ViewSpec("joint", s, [], show_steps=True, show_saved=True)
    _colour_forward_ops(spec)
    f_side, b_side = ("side", "forward", ()), ("side", "backward", ())
    nf, nb = len(s.forward), len(s.backward)
    spec.clusters[f_side] = ClusterInfo("side", f"forward schedule · {nf} ops", dict(styles.FORWARD_SIDE))
    spec.clusters[b_side] = ClusterInfo("side", f"backward schedule · {nb} ops", dict(styles.BACKWARD_SIDE))
    bwd = s.backward_set
    u_side, n_upd = ("side", "update", ()), len(s.update_owner)
    for n in s.order:
        grad_leaf = is_leaf_node(n) and bool(n.provenance)
        if (n in bwd or grad_leaf) and n not in s.update_owner:
            spec.items.append(Item(n, _role(n, s), (b_side,) + _backward_cluster(spec, "backward", n)))
        elif n in s.update_owner:  # optimiser arithmetic: its own column, whichever schedule runs it
            if u_side not in spec.clusters:
                spec.clusters[u_side] = ClusterInfo("side", f"optimiser updates · {n_upd} ops", dict(UPDATE_SIDE))
            spec.items.append(Item(n, _role(n, s), (u_side,) + _update_path(spec, "update", n)))
        else:
            spec.items.append(Item(n, _role(n, s), (f_side,) + _scope_path(spec, "forward", n.scope)))
    # Forward items first: Graphviz then lays the forward side out on the left.
    spec.items.sort(key=lambda it: it.cluster[0] != f_side)
    forward_drawn = [it.node for it in spec.items if it.cluster and it.cluster[0] == f_side]
    for key, info in spec.clusters.items():
        if info.kind == "grad" and not is_leaf_node(key[2]):
            match = resolve_forward(key[2], forward_drawn)
            if match is not None:
                spec.links.append((match, key))
    return spec


def resolve_forward(fwd: Node, candidates: list[Node]) -> Node | None:
    """The drawn node standing for forward node ``fwd``: itself, else (after rewrite passes
    rebuilt or fused it) the node built at the same user line that is, or absorbed, the
    same op, preferring one of the same type."""
    if fwd in set(candidates):
        return fwd
    same_line = [c for c in candidates if c.origin is not None and c.origin == fwd.origin
                 and (c.op.name == fwd.op.name or fwd.op.name in absorbed_ops(c))]
    typed = [c for c in same_line if c.type == fwd.type]
    pick = typed or same_line
    return pick[0] if pick else None


def add_bodies(spec: ViewSpec, backward: bool = False) -> None:
    """Draw the body of each higher-order node (``op.subgraphs()``) as a cluster beside it,
    labelled with the op and the body's role, linked from the node; nested bodies nest.
    A node already drawn (a constant shared with the outer graph) is not drawn twice.
    Each loop carry (``op.loop_carries``) is recorded for a back edge from the value a step
    returns to the placeholder the next step reads.

    ``backward``: expand only the bodies of backward nodes (a reverse scan), not those of
    the forward values the backward view shows as saved inputs."""
    s = spec.subject
    drawn = {it.node for it in spec.items}
    out: list[Item] = []
    work = [(it, not backward or it.node in s.backward_set or bool(it.node.provenance)) for it in spec.items]
    while work:
        it, expand = work.pop(0)
        out.append(it)
        if not expand:
            continue
        bodies = it.node.op.subgraphs()
        held_back = it.node in s.backward_set or bool(it.node.provenance) or it.node in spec.backward_inner
        fields = [k for k, v in it.node.op.params().items() if isinstance(v, Subgraph)] if bodies else []
        for k, body in enumerate(bodies):
            key = ("body", it.node, k)
            role = fields[k].replace("_", " ") if k < len(fields) else f"body {k}"
            spec.clusters[key] = ClusterInfo("body", f"{it.node.op.name} · {role}", dict(styles.BODY_CLUSTER))
            spec.links.append((it.node, key))
            inner = []
            for n in body.nodes():
                if n not in drawn:
                    drawn.add(n)
                    inner.append((Item(n, leaf_kind(n) or ("grad" if n.provenance else "op"), it.cluster + (key,)), True))
                    if held_back:
                        spec.backward_inner.add(n)
            spec.carries.extend((body.outputs[o], body.inputs[i], i) for o, i in it.node.op.loop_carries(k))
            work = inner + work  # bodies of bodies are expanded in turn, before the rest
    spec.items[:] = out


def build_view(s: Subject, view: str) -> ViewSpec:
    if view == "forward":
        spec = forward_view(s)
    elif view == "backward":
        spec = backward_view(s)
    elif view == "joint":
        spec = joint_view(s)
    else:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    add_bodies(spec, backward=view == "backward")
    return spec
