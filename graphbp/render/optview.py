"""The optimisation view: what the rewrite passes did, as one overlay picture per step.

Before and after are drawn in one graph: nodes the passes kept are drawn normally, nodes
they removed are greyed and labelled with what the pass did to them: merged into another
node, rewritten by a named rule, fused, rebuilt (the same op over rewritten inputs),
re-derived (a gradient node derived again from a rewritten forward op, as ``stabilize``
does), or unused after the pass (its users were rewritten away); new nodes get a green border, and a fused node is one box listing the ops
it absorbed (the absorbed originals are not drawn again). The rewrite log
(``program.rewrite_log``) and per-pass snapshots (``program.pass_snapshots``) written by
the pass pipeline say which rule did what; without them the diff is structural only.
"""

from __future__ import annotations

from typing import Any

import graphviz

from ..errors import GraphError
from ..graph.node import Node
from ..graph.traverse import toposort
from . import styles
from .classify import absorbed_ops, constant_text, is_leaf_node, is_scalar_constant, leaf_kind, op_detail, provenance_text
from .scene import Scene, esc, html_label
from .subject import is_program, node_title, short_type


def stages(program: Any) -> list[tuple[str, list[Node]]]:
    """``[(name, roots), ...]``: the user's graph, then the graph after each pass."""
    snaps = getattr(program, "pass_snapshots", None) or {}
    if snaps:
        return [(name, list(roots)) for name, roots in snaps.items()]
    roots = list(getattr(program, "user_outputs", program.outputs)) + [v for _, v in getattr(program, "updates", [])]
    return [("input", roots)]


def pass_diagrams(program: Any, *, edge_labels: bool = True, max_nodes: int | None = 250) -> list[tuple[str, graphviz.Digraph]]:
    """One overlay diagram per pass, in pipeline order: ``[(pass name, Digraph), ...]``."""
    st = stages(program)
    return [(st[k + 1][0], optimization_dot(program, pass_index=k, edge_labels=edge_labels, max_nodes=max_nodes))
            for k in range(len(st) - 1)]


def pass_counts(program: Any) -> list[tuple[str, int, int]]:
    """``[(stage name, node count, op count)]`` for the input graph and after each pass."""
    out = []
    for name, roots in stages(program):
        order = toposort(roots)
        out.append((name, len(order), sum(1 for n in order if not is_leaf_node(n))))
    return out


def optimization_dot(program: Any, *, pass_index: int | None = None, edge_labels: bool = True,
                     max_nodes: int | None = 250) -> graphviz.Digraph:
    """Overlay of the graph before and after all passes (or only pass ``pass_index``)."""
    if not is_program(program):
        raise GraphError("the optimization view needs a compiled Program (gb.compile(...)), "
                         f"got a {type(program).__name__}")
    st = stages(program)
    if pass_index is None:
        (_, before), (after_name, after) = st[0], st[-1]
        names = {name for name, _ in st[1:]}
        heading = "optimisation: all passes" if len(st) > 1 else "optimisation: no passes ran (optimize=False)"
    else:
        if not 0 <= pass_index < len(st) - 1:
            raise ValueError(f"pass_index {pass_index} out of range: this program ran {len(st) - 1} passes")
        (_, before), (after_name, after) = st[pass_index], st[pass_index + 1]
        names = {after_name}
        heading = f"pass {pass_index + 1}/{len(st) - 1}: {after_name}"
    log = [e for e in (getattr(program, "rewrite_log", None) or []) if getattr(e, "pass_name", None) in names]
    by = after_name if pass_index is not None else "the passes"
    return _overlay(before, after, log, heading, edge_labels, max_nodes, by)


def _overlay(before: list[Node], after: list[Node], log: list, heading: str, edge_labels: bool,
             max_nodes: int | None, by: str = "the passes") -> graphviz.Digraph:
    b_order, a_order = toposort(before), toposort(after)
    b_set, a_set = set(b_order), set(a_order)
    union = toposort(list(before) + list(after))
    fate: dict[Node, tuple[str, Node | None, str]] = {}
    for e in log:
        target, rule = e.after, e.rule
        for i, r in enumerate(e.before):
            if r in a_set or r in fate:
                continue
            if absorbed_ops(target):
                fate[r] = ("fused", target, rule)
            elif i == 0 and "cse" in rule.lower():
                fate[r] = ("merged", target, rule)
            else:
                fate[r] = ("rewritten", target, rule)
    removed = [n for n in b_order if n not in a_set]
    new = [n for n in a_order if n not in b_set]
    for n in new:  # a fused node absorbed the removed ops built at its line that it names
        names = absorbed_ops(n)
        if not names:
            continue
        for r in removed:
            if (r.origin is not None and r.origin == n.origin and r.op.name in names
                    and bool(r.provenance) == bool(n.provenance) and r.type == n.type
                    and (r not in fate or fate[r][1] not in a_set)):
                fate[r] = ("fused", n, fate[r][2] if r in fate else "fusion")
    rebuilt = _rebuilt(removed, new, fate)
    removed = [n for n in removed if n not in rebuilt]
    new = [n for n in new if n not in set(rebuilt.values())]
    _explain_rest(removed, [n for n in new if n not in set(rebuilt.values())], fate, by)
    shown = [n for n in union if n not in rebuilt and not (n in fate and fate[n][0] == "fused")
             and not is_scalar_constant(n)]
    note = ""
    if max_nodes is not None and len(shown) > max_nodes:
        changed = set(removed) | set(new)
        near = set(changed)
        for n in union:
            if n in changed:
                near.update(n.inputs)
            elif any(i in changed for i in n.inputs):
                near.add(n)
        shown = [n for n in shown if n in near]
        note = f"showing only changed nodes and their neighbours ({len(shown)} of {len(union)})"
    ids = {n: i for i, n in enumerate(shown)}
    scene = Scene()
    merged_into: dict[Node, int] = {}
    for kind, target, _ in fate.values():
        if kind == "merged" and target is not None:
            merged_into[target] = merged_into.get(target, 0) + 1
    kinds = [k for k in ("rewritten", "merged", "fused", "rebuilt", "re-derived", "unused")
             if any(fate[n][0] == k for n in removed)]
    what = ", ".join(f"{sum(1 for n in removed if fate[n][0] == k)} {k}" for k in kinds)
    counts = (f"{len(b_order)} nodes before → {len(a_order)} after · {len(removed)} removed"
              + (f" ({what})" if what else "") + f" · {len(new)} new · {len(log)} rewrites logged")
    for n in shown:
        label, attrs = _look(n, fate, n in new, merged_into.get(n, 0), ids)
        scene.add_node(n, label, attrs)
    for n in shown:
        for x in n.inputs:
            if x not in ids:
                continue
            gone = n in fate or x in fate
            attrs = dict(styles.EDGE_FORWARD, label=short_type(x.type) if edge_labels else "")
            if gone:
                attrs.update(color="#d1d5db", fontcolor="#9ca3af", style="dashed")
            scene.add_edge(x, n, attrs)
        if n in fate and fate[n][0] == "merged" and fate[n][1] in ids:
            scene.add_edge(n, fate[n][1], {"color": "#0e7490", "style": "dotted", "constraint": "false",
                                           "label": "merged"}, kind="merge")
    if not removed and not new:
        heading += " (no changes)"
    lines = [f'<FONT POINT-SIZE="14"><B>{esc(heading)}</B></FONT>', f'<FONT POINT-SIZE="9">{esc(counts)}</FONT>']
    if note:
        lines.append(f'<FONT POINT-SIZE="9" COLOR="#6b7280">{esc(note)}</FONT>')
    scene.title = "<" + '<BR ALIGN="LEFT"/>'.join(lines) + '<BR ALIGN="LEFT"/>>'
    return scene.to_digraph()


def _explain_rest(removed: list[Node], new: list[Node], fate: dict, by: str) -> None:
    """Say what happened to removed nodes no log entry or exact pairing explains.

    A node the pass rebuilt has a new counterpart built at the same user line, of the same
    op class and type; a gradient node whose rule was run again on a rewritten forward op
    (``stabilize`` re-derives the gradient of what it changed) has new gradient nodes of
    the same forward line. Anything else was left without users by the rewrites around it."""
    twins: dict[tuple, list[Node]] = {}
    grad_lines: set = set()
    for n in new:
        twins.setdefault((type(n.op), n.origin, n.type, bool(n.provenance)), []).append(n)
        grad_lines.update(p.forward.origin for p in n.provenance)
    for r in removed:
        if r in fate:
            continue
        pool = twins.get((type(r.op), r.origin, r.type, bool(r.provenance)))
        if r.provenance and any(p.forward.origin in grad_lines for p in r.provenance):
            fate[r] = ("re-derived", pool[0] if pool else None, by)
        elif pool:
            fate[r] = ("rebuilt", pool.pop(0), by)
        else:
            fate[r] = ("unused", None, by)


def _rebuilt(removed: list[Node], new: list[Node], fate: dict) -> dict[Node, Node]:
    """Pair each removed node with the new node that is the same op over corresponding
    inputs: a pass that rewrites one node rebuilds everything downstream of it, and those
    copies are not changes worth drawing twice."""
    corr: dict[Node, Node] = {}
    equiv: dict[Node, Node] = {}
    for r, (_, target, _) in fate.items():
        if target is not None and (r.type == target.type or target not in equiv.values()):
            equiv[r] = target  # later (downstream) absorbed nodes win: they carry the output
    pool: dict[tuple, list[Node]] = {}
    for r in removed:
        if r not in fate:
            pool.setdefault((type(r.op), r.type, len(r.inputs)), []).append(r)
    pending = list(new)
    progress = True
    while progress:  # new nodes come in topological order, so one or two sweeps suffice
        progress = False
        rest = []
        for n in pending:
            match = None
            for r in pool.get((type(n.op), n.type, len(n.inputs)), ()):
                if r not in corr and _same_op(r, n) and all(_mapped(i, corr, equiv) is j for i, j in zip(r.inputs, n.inputs)):
                    match = r
                    break
            if match is None:
                rest.append(n)
            else:
                corr[match] = n
                progress = True
        pending = rest
    return corr


def _mapped(i: Node, corr: dict[Node, Node], equiv: dict[Node, Node]) -> Node:
    if i in corr:
        return corr[i]
    return equiv.get(i, i)


def _same_op(a: Node, b: Node) -> bool:
    try:
        return bool(a.op == b.op)
    except Exception:  # ops holding arrays compare elementwise
        return a.op is b.op


def _look(n: Node, fate: dict, is_new: bool, merged: int, ids: dict[Node, int]) -> tuple[str, dict[str, str]]:
    kind = leaf_kind(n)
    if kind == "input":
        attrs, title, lines = dict(styles.INPUT), node_title(n), [short_type(n.type)]
    elif kind == "param":
        attrs, title, lines = dict(styles.PARAM), node_title(n), [short_type(n.type)]
    elif kind == "constant":
        attrs, title, lines = dict(styles.CONSTANT), n.name or "constant", [short_type(n.type)]
    else:
        attrs = dict(styles.OP)
        title = n.op.name
        detail = op_detail(n)
        fused = absorbed_ops(n)
        lines = []
        if fused:
            attrs = dict(styles.FUSED)
            lines.append((f"fused {len(fused)} ops:", "#a16207"))
            for k in range(0, len(fused), 4):
                lines.append(" → ".join(fused[k:k + 4]))
        elif detail:
            lines.append(detail)
        consts = [constant_text(i) for i in n.inputs if is_scalar_constant(i)]
        if consts:
            lines.append("with " + ", ".join(consts))
        if n.provenance:
            lines.append((provenance_text(n), "#7f1d1d"))
    if n in fate:
        what, target, rule = fate[n]
        attrs.update(styles.PRUNED)
        if what == "merged":
            attrs.update(styles.MERGED)
            attrs["fontcolor"] = "#0e7490"
        text = {"merged": f"merged by {rule}", "rewritten": f"rewritten by {rule}", "fused": "fused",
                "rebuilt": f"rebuilt by {rule} (inputs rewritten)",
                "re-derived": f"re-derived by {rule} (gradient of the rewritten op)",
                "unused": f"unused after {rule} (its users were rewritten)"}[what]
        lines.append((text, "#6b7280"))
    elif is_new:
        attrs.update(styles.NEW)
        lines.append(("new", "#15803d"))
    if merged:
        lines.append((f"absorbs {merged} duplicate(s)", "#0e7490"))
        attrs.update(styles.MERGED)
    return html_label(title, *lines), attrs
