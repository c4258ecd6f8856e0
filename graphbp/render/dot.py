"""Turn a view (and its collapse plan) into a :class:`~.scene.Scene` and a ``graphviz.Digraph``.

Labels, colours and edge styles are decided here from each item's role; the layout is left
to Graphviz. In the joint view the backward edges are emitted reversed with ``dir=back``,
so gradients flow upward beside the forward ops they differentiate and each saved
activation's arrow into the backward side runs roughly horizontally.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import graphviz

from ..graph.node import Node
from . import styles
from .classify import (
    absorbed_ops, constant_text, grad_origin, is_leaf_node, leaf_kind, is_shape_op, op_detail, provenance_text, rules_of,
    shape_only_input,
)
from .collapse import DEFAULT_MAX_NODES, Group, Plan, plan
from .costs import Poly, bytes_poly, format_bytes
from .scene import Scene, esc, html_label
from .subject import Subject, node_title, origin_text, short_type, subject_of
from .views import VIEWS, Item, ViewSpec, build_view


def to_dot(
    target: Any,
    view: str = "forward",
    *,
    optimized: bool = True,
    collapse: str | int | Sequence[str] | None = None,
    hide_shape_ops: bool = False,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    edge_labels: bool = True,
    fold_constants: bool = True,
    title: str | None = None,
    pass_index: int | None = None,
    expand_updates: bool = False,
) -> graphviz.Digraph:
    """Draw a graph as a ``graphviz.Digraph`` (``.source`` is the DOT text).

    Parameters
    ----------
    target : Program, Node or list of Node
        What to draw. Nodes are split into forward and backward exactly as ``gb.compile``
        would split them.
    view : {"forward", "backward", "joint", "optimization"}
        ``forward``: inputs, parameters, constants and ops, clustered by ``gb.scope``.
        ``backward``: gradient nodes labelled with the forward op and rule that produced
        them, clustered and coloured per forward op. ``joint``: both side by side, saved
        activations highlighted with their bytes, schedule steps on each node.
        ``optimization``: the program before and after its rewrite passes (Program only).
    optimized : bool, default True
        For a Program, draw the compiled graph (False: the graph as the user built it).
    collapse : None, "scope", "grad", "layers", int or list of str
        Draw whole clusters as single boxes: top-level scopes, gradient clusters, runs of
        identical layers, scopes down to a depth, or the named scopes (``"enc/layer1"``).
    hide_shape_ops : bool
        Draw reshape/transpose/expand_dims/squeeze/broadcast_to as plain edges.
    max_nodes : int or None, default 250
        If the picture would have more boxes, collapse (gradient clusters, then scopes,
        then repeated layers, then segments) until it fits, and say so in the title.
    edge_labels : bool
        Label edges with dtype and shape (``f32[?,128]``).
    fold_constants : bool
        Show one-element constants inside their consumers' labels instead of as boxes.
    pass_index : int, optional
        With ``view="optimization"``, draw the graph after that pass only.
    expand_updates : bool
        Draw the optimiser's arithmetic of each parameter (by default each parameter's
        update is one box, ``update of W1 · 14 ops``).
    """
    if view == "optimization":
        from .optview import optimization_dot

        return optimization_dot(target, pass_index=pass_index, edge_labels=edge_labels, max_nodes=max_nodes)
    return scene_of(target, view, optimized=optimized, collapse=collapse, hide_shape_ops=hide_shape_ops,
                    max_nodes=max_nodes, edge_labels=edge_labels, fold_constants=fold_constants, title=title,
                    expand_updates=expand_updates).to_digraph()


def scene_of(
    target: Any,
    view: str = "forward",
    *,
    optimized: bool = True,
    collapse: str | int | Sequence[str] | None = None,
    hide_shape_ops: bool = False,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    edge_labels: bool = True,
    fold_constants: bool = True,
    title: str | None = None,
    expand_updates: bool = False,
) -> Scene:
    """The :class:`~.scene.Scene` that :func:`to_dot` emits (forward, backward or joint view;
    same options). ``gb.render`` lays it out through :func:`~.output.layout_scene`, which
    draws a large joint view in two passes (see :meth:`Scene.layered`)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    subject = subject_of(target, optimized=optimized)
    spec = build_view(subject, view)
    p = plan(spec, collapse=collapse, hide_shape_ops=hide_shape_ops, fold_constants=fold_constants,
             max_nodes=max_nodes, expand_updates=expand_updates)
    scene = build_scene(spec, p, edge_labels=edge_labels)
    scene.title = _title_label(title if title is not None else _default_title(spec), p.notes + layout_notes(scene))
    return scene


def layout_notes(scene: Scene) -> list[str]:
    """The title line saying that a large joint view's cross arrows are drawn straight."""
    if not scene.layered():
        return []
    return [f"{len(scene)} boxes: the arrows from the forward to the backward column are drawn straight "
            "over the layout (routing them through it grows with their length: see docs/explorer.md)"]


def _default_title(spec: ViewSpec) -> str:
    s = spec.subject
    if spec.view == "forward":
        return f"forward graph · {len(s.forward)} ops"
    if spec.view == "backward":
        grads = sum(1 for n in s.backward if n.provenance)
        if not s.backward:
            return "backward (gradient) graph · no gradient nodes here: build them with gb.grad or gb.vjp"
        return f"backward (gradient) graph · {len(s.backward)} ops, {grads} from chain-rule rules" + _recomputed(s)
    saved = Poly()
    for n in s.saved:
        saved = saved + bytes_poly(n.type)
    return (f"joint forward + backward · {len(s.forward)} + {len(s.backward)} ops · "
            f"{len(s.saved)} saved activations, {saved}" + _recomputed(s))


def _recomputed(s) -> str:
    """The title's legend entry for rematerialised values (dashed cyan ``↻ recompute`` boxes)."""
    k = sum(1 for n in s.backward if "remat" in rules_of(n))
    return f" · {k} recomputed (↻ dashed cyan), not saved" if k else ""


def _title_label(title: str, notes: list[str]) -> str:
    lines = [f'<FONT POINT-SIZE="14"><B>{esc(title)}</B></FONT>']
    lines += [f'<FONT POINT-SIZE="9" COLOR="#6b7280">{esc(n)}</FONT>' for n in notes]
    return "<" + "<BR ALIGN=\"LEFT\"/>".join(lines) + "<BR ALIGN=\"LEFT\"/>>"


# -- scene building ------------------------------------------------------------------------
def build_scene(spec: ViewSpec, p: Plan, *, edge_labels: bool = True) -> Scene:
    s = spec.subject
    scene = Scene()
    joint = spec.view == "joint"
    item_of = {it.node: it for it in spec.items}

    def back(node: Node) -> bool:  # a reverse scan's body is drawn as part of the backward graph
        return _is_backward(s, node) or node in spec.backward_inner

    def rep(node: Node) -> Hashable | None:
        while node in p.hidden:
            node = node.inputs[0]
        if node in p.folded or node not in item_of:
            return None
        return p.group_of.get(node, node)

    for key, info in spec.clusters.items():
        attrs = dict(info.attrs)
        attrs["label"] = info.label if info.kind != "side" else f"<<B>{esc(info.label)}</B>>"
        scene.set_cluster(key, attrs)

    folded_by: dict[Node, list[str]] = {}
    for it in spec.items:
        consts = [i for i in it.node.inputs if i in p.folded]
        if consts:
            folded_by[it.node] = [_const_text(c) for c in consts]

    for it in spec.items:
        n = it.node
        if n in p.hidden or n in p.folded:
            continue
        gkey = p.group_of.get(n)
        if gkey is not None:
            g = p.groups[gkey]
            if gkey not in scene.nodes:
                label, attrs = _group_look(spec, g)
                scene.add_node(gkey, label, attrs, g.cluster)
            continue
        label, attrs = _node_look(spec, it, folded_by.get(n, []))
        scene.add_node(n, label, attrs, it.cluster)

    for it in spec.items:
        n = it.node
        if n in p.folded:
            continue
        head = rep(n)
        if head is None:
            continue
        for idx, x in enumerate(n.inputs):
            if x in p.folded:
                continue
            tail = rep(x)
            if tail is None or tail == head:
                continue
            if n in p.hidden:
                continue  # the hidden op's users draw the edge from its input
            if spec.view == "backward" and not back(n):
                continue  # forward values are drawn as the backward's inputs, not as a graph
            via = _via(x, p)
            attrs, kind = _edge_look(x, n, back(x), back(n), idx, edge_labels, via)
            if joint and back(n) and kind != "saved" and back(x):
                attrs = dict(attrs, dir="back")
                scene.add_edge(head, tail, attrs, kind=kind)
            else:
                cross = joint and back(n) and not back(x)
                if cross:
                    attrs = dict(attrs, constraint="false")  # the two sides lay out independently
                elif spec.view == "backward" and not back(x) and back(n):
                    # forward values and leaves must not push the gradient flow down: the
                    # seed's chain should start at the top, as it does when the program runs
                    attrs = dict(attrs, constraint="false")
                scene.add_edge(tail, head, attrs, kind=kind, overlay=cross)

    for fwd, cluster_key in spec.links:
        tail = rep(fwd)
        members = [it.node for it in spec.items if cluster_key in it.cluster and rep(it.node) is not None]
        if tail is None or not members:
            continue
        head = rep(members[-1])
        collapsed = head != members[-1]
        scene.add_edge(tail, head, dict(styles.EDGE_LINK), kind="link",
                       lhead=None if collapsed else cluster_key, overlay=joint)

    for new, old, k in spec.carries:  # from the value a step returns up to what the next reads
        tail, head = rep(new), rep(old)
        if tail is not None and head is not None:
            scene.add_edge(tail, head, dict(styles.EDGE_CARRY, label=f"carry {k}" if edge_labels else ""),
                           kind="carry")
    return scene


def _is_backward(s: Subject, node: Node) -> bool:
    return node in s.backward_set or bool(node.provenance)


def _via(x: Node, p: Plan) -> list[str]:
    """Names of hidden shape ops between a drawn value and its consumer (for the label)."""
    names: list[str] = []
    while x in p.hidden:
        names.append(x.op.name)
        x = x.inputs[0]
    return names[::-1]


def _const_text(c: Node) -> str:
    text = constant_text(c)
    return f"{c.name}={text}" if c.name else text


def _edge_look(x: Node, n: Node, x_back: bool, n_back: bool, idx: int, edge_labels: bool,
               via: list[str]) -> tuple[dict, str]:
    if shape_only_input(n, idx):
        return dict(styles.EDGE_SHAPE, label="shape" if edge_labels else ""), "shape"
    label = short_type(x.type) if edge_labels else ""
    if via and edge_labels:
        label += " via " + ", ".join(via)
    if n_back and not x_back:
        if is_leaf_node(x):
            return dict(styles.EDGE_FORWARD, label=label), "data"
        return dict(styles.EDGE_SAVED, label=label), "saved"
    if n_back:
        return dict(styles.EDGE_GRAD, label=label), "data"
    return dict(styles.EDGE_FORWARD, label=label), "data"


def _tooltip(n: Node) -> str:
    parts = [f"{node_title(n)}: {leaf_kind(n) or n.op}", f"type {n.type}"]
    where = origin_text(n)
    if where:
        parts.append(f"built at {where}")
    if n.scope:
        parts.append("scope " + "/".join(n.scope))
    if n.provenance:
        parts.append(provenance_text(n, limit=6))
    return "\\n".join(parts)


def _node_look(spec: ViewSpec, it: Item, consts: list[str]) -> tuple[str, dict[str, str]]:
    s = spec.subject
    n, role = it.node, it.role
    step = s.step.get(n) if spec.show_steps else None
    lines: list[Any] = []
    attrs: dict[str, str]
    if role == "input":
        title = node_title(n)
        lines = [short_type(n.type), "input"]
        attrs = dict(styles.INPUT)
    elif role == "param":
        title = node_title(n)
        trainable = getattr(n.op, "trainable", True)
        lines = [short_type(n.type), f"param · {format_bytes(n.type)}" + ("" if trainable else " · frozen")]
        attrs = dict(styles.PARAM)
    elif role == "constant":
        title = n.name or "constant"
        lines = [short_type(n.type)]
        attrs = dict(styles.CONSTANT)
    elif role == "fwdref":
        title = node_title(n)
        where = s.step.get(n, "")
        lines = [f"{short_type(n.type)} · from forward {where}".strip(), (f"saved · {format_bytes(n.type)}", "#b91c1c")]
        attrs = dict(styles.FORWARD_REF)
    elif role in ("grad", "update"):
        title = n.op.name
        detail = op_detail(n)
        lines = [detail] if detail else []
        rules = rules_of(n)
        if "unbroadcast" in rules:
            title = f"Σ unbroadcast · {title}"
        elif "accumulate" in rules:
            title = f"+ accumulate · {title}"
        elif "seed" in rules:
            title = f"seed · {title}"
        elif "remat" in rules:
            title = f"↻ recompute · {title}"
        if role == "update":
            target = s.update_of.get(n)
            lines.append(("update → " + (node_title(target) if target is not None else "parameter"), "#6d28d9"))
            attrs = dict(styles.UPDATE)
        else:
            attrs = _grad_attrs(spec, n)
            fill, strong = styles.palette(spec.grad_colour.get(grad_origin(n), 0))
            lines.append((provenance_text(n), strong))
    else:
        title = n.op.name
        if n.name:
            title = f"{n.name} = {title}"
        detail = op_detail(n)
        lines = [detail] if detail else []
        attrs = dict(styles.SHAPE_OP if is_shape_op(n) else styles.OP)
        fused = absorbed_ops(n)
        if fused:
            lines.insert(0, ("fused: " + " → ".join(fused), "#a16207"))
            attrs = dict(styles.FUSED)
    if consts:
        lines.append("with " + ", ".join(consts))
    if n in s.output_index and role not in ("input", "param", "constant"):
        lines.append((f"output {s.output_index[n]} · {short_type(n.type)}", "#15803d"))
        attrs.update(styles.OUTPUT)
    if spec.show_saved and n in s.saved_set and role == "op":
        lines.append((f"saved for backward · {format_bytes(n.type)}", "#b91c1c"))
        attrs.update(styles.SAVED)
    if step:
        title = f"{step} · {title}"
    attrs["tooltip"] = _tooltip(n)
    return html_label(title, *lines), attrs


def _grad_attrs(spec: ViewSpec, n: Node) -> dict[str, str]:
    fill, strong = styles.palette(spec.grad_colour.get(grad_origin(n), 0))
    rules = rules_of(n)
    if "accumulate" in rules:
        base = styles.ACCUMULATE
    elif "unbroadcast" in rules:
        base = styles.UNBROADCAST
    elif "seed" in rules:
        base = styles.SEED
    elif "zeros" in rules:
        return dict(styles.ZEROS)
    elif "remat" in rules:
        return dict(styles.REMAT)
    else:
        base = styles.GRAD
    return styles.merged(styles.GRAD, base, {"fillcolor": "#ffffff", "color": strong})


def _group_look(spec: ViewSpec, g: Group) -> tuple[str, dict[str, str]]:
    s = spec.subject
    ops = [n for n in g.members if not is_leaf_node(n)]
    params = [n for n in g.members if leaf_kind(n) == "param"]
    counts = Counter(n.op.name for n in ops)
    kinds = [f"{name} ×{c}" if c > 1 else name for name, c in counts.most_common(4)]
    more = len(counts) - len(kinds)
    lines: list[Any] = []
    if g.kind == "run":
        per = len(ops) // max(1, g.repeats)
        lines.append((f"×{g.repeats} identical layers · {per} ops each", "#4338ca"))
    lines.append(f"{len(ops)} ops: " + ", ".join(kinds) + (f", +{more} kinds" if more > 0 else ""))
    if params:
        total = Poly()
        for prm in params:
            total = total + bytes_poly(prm.type)
        lines.append(f"{len(params)} params · {total}")
    saved = [n for n in g.members if n in s.saved_set]
    if spec.show_saved and saved:
        total = Poly()
        for n in saved:
            total = total + bytes_poly(n.type)
        lines.append((f"{len(saved)} saved for backward · {total}", "#b91c1c"))
    if spec.show_steps:
        steps = [s.step[n] for n in ops if n in s.step]
        if steps:
            lines.append(f"steps {steps[0]}–{steps[-1]}" if len(steps) > 1 else f"step {steps[0]}")
    if g.kind == "grad":
        fwd = g.key[1][2]
        fill, strong = styles.palette(spec.grad_colour.get(fwd, 0))
        attrs = styles.merged(styles.GRAD, {"fillcolor": fill, "color": strong, "penwidth": "1.5"})
    elif g.kind == "run":
        attrs = dict(styles.RUN_BOX)
    elif g.kind == "chunk":
        attrs = dict(styles.CHUNK_BOX)
    elif g.kind == "update":
        attrs = dict(styles.SCOPE_BOX, color="#0f766e", shape="component")
    else:
        attrs = dict(styles.SCOPE_BOX)
    attrs["tooltip"] = f"{g.title}: {len(g.members)} nodes collapsed"
    return html_label(g.title, *lines), attrs
