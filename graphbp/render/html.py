"""``gb.render(target, "graph.html")``: one self-contained, interactive HTML explorer.

The explorer reuses the static pipeline (view -> collapse plan -> scene -> Graphviz SVG) and
adds only what a browser needs on top:

* each node and cluster of the SVG gets an ``id`` (``joint_n12``, ``joint_cluster_3``) that
  :meth:`~.scene.Scene.ids` maps back to graph nodes, so one JSON table (:mod:`.htmldata`)
  describes every node once (type, bytes, FLOPs, step, user line, provenance, inputs);
* a small inline script (``static/explorer.js``) does pan/zoom, search, provenance
  highlighting, collapsing clusters in place and the view tabs; inline CSS styles it.

Nothing is fetched: no CDN, no server, no network. The same graph gives the same bytes
(topological order everywhere, Graphviz is deterministic, JSON keys in insertion order).
With scripts off every view's SVG is shown one under the other, as a static page.

Clusters collapse *in place*: the layout is computed once with every cluster expanded and
the script hides a collapsed cluster's members behind its frame. Groups that the
``max_nodes`` plan had to merge to keep Graphviz fast are boxes in the layout itself; the
side panel lists their members.
"""

from __future__ import annotations

import html
import json
from collections.abc import Hashable, Sequence
from importlib import resources
from typing import Any

from ..graph.node import Node
from . import styles
from .collapse import DEFAULT_MAX_NODES, plan
from .dot import _default_title, _title_label, build_scene, layout_notes
from .htmldata import node_table
from .output import layout_scene, run_dot
from .subject import Subject, is_program, subject_of
from .views import VIEWS, ViewSpec, build_view

VIEW_LABELS = {"forward": "Forward", "backward": "Backward", "joint": "Joint", "optimization": "Optimisation",
               "equations": "Equations"}


def to_html(
    target: Any,
    views: Sequence[str] | None = None,
    *,
    optimized: bool = True,
    collapse: str | int | Sequence[str] | None = None,
    hide_shape_ops: bool = False,
    max_nodes: int | None = DEFAULT_MAX_NODES,
    title: str | None = None,
    equations: bool = True,
    expand_updates: bool = False,
) -> str:
    """The explorer page for ``target`` (Program, node or list of nodes) as a string.

    Parameters
    ----------
    views : sequence of str, optional
        Tabs to include, among ``forward``, ``backward``, ``joint`` and ``optimization``
        (default: the first three, plus ``optimization`` for a Program).
    collapse : None, "scope", "grad", "layers", int or list of str
        Clusters that start collapsed (same meaning as in :func:`graphbp.to_dot`); the reader
        expands them in place with a click.
    max_nodes : int or None
        Layout budget per view: above it the static collapse ladder merges groups into boxes
        (Graphviz's layout time grows quickly with size).
    expand_updates : bool
        Start with each parameter's optimiser update unfolded (folded by default, as in the
        static views; a click unfolds it either way).
    equations : bool
        Add an "Equations" tab: the schedules as LaTeX (:func:`graphbp.to_latex`), typeset
        in the page by the bundled KaTeX (about 270 KB of script; ``False`` leaves it out).
    """
    subject = subject_of(target, optimized=optimized)
    if views is None:
        views = ["forward", "backward", "joint"] + (["optimization"] if is_program(target) else [])
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise ValueError(f"unknown view(s) {', '.join(bad)}; choose among {', '.join(VIEWS)}")
    nodes, index = node_table(subject)
    sections: list[str] = []
    view_data: list[dict[str, Any]] = []
    for view in views:
        if view == "optimization":
            svg = _optimization_svg(target, max_nodes)
            data: dict[str, Any] = {"id": view, "label": VIEW_LABELS[view], "nodes": {}, "clusters": {}, "collapsed": []}
        else:
            svg, data = _graph_view(subject, view, index, collapse, hide_shape_ops, max_nodes, expand_updates)
        view_data.append(data)
        sections.append(_section(view, svg))
    latex = ""
    if equations:
        from .latex import to_latex

        latex = to_latex(target)  # the graph as built: every rule names the user's forward op
        sections.append(_equations_section(latex))
        view_data.append({"id": "equations", "label": VIEW_LABELS["equations"], "nodes": {}, "clusters": {},
                          "collapsed": []})
    payload = {"title": title or _page_title(subject), "nodes": nodes, "views": view_data}
    return _page(payload, sections, katex=bool(latex))


def _graph_view(s: Subject, view: str, index: dict[Node, int], collapse: Any, hide_shape_ops: bool,
                max_nodes: int | None, expand_updates: bool) -> tuple[str, dict[str, Any]]:
    spec = build_view(s, view)
    start_collapsed = _requested_clusters(spec, collapse, expand_updates)
    # laid out unfolded (optimiser updates too), so folding and unfolding never move anything
    p = plan(spec, hide_shape_ops=hide_shape_ops, max_nodes=max_nodes, expand_updates=True)
    scene = build_scene(spec, p)
    scene.title = _title_label(_default_title(spec), p.notes + layout_notes(scene))
    ids, cluster_ids = scene.ids()
    svg_nodes: dict[str, list[int]] = {}
    for key, dn in scene.nodes.items():
        sid = f"{view}_{ids[key]}"
        dn.attrs["id"] = sid
        members = p.groups[key].members if key in p.groups else [key]
        svg_nodes[sid] = [index[n] for n in members if n in index]
    clusters: dict[str, dict[str, Any]] = {}
    collapsed: list[str] = []
    for path, cid in cluster_ids.items():
        key = path[-1]
        sid = f"{view}_{cid}"
        scene.clusters.setdefault(key, {})["id"] = sid
        info = spec.clusters.get(key)
        inside = [f"{view}_{ids[k]}" for k, dn in scene.nodes.items() if dn.cluster[: len(path)] == path]
        parent = f"{view}_{cluster_ids[path[:-1]]}" if len(path) > 1 else None
        clusters[sid] = {"label": _plain(info.label) if info else "", "kind": info.kind if info else "",
                         "parent": parent, "members": inside}
        if key in start_collapsed:
            collapsed.append(sid)
    scene.graph_attrs["id"] = view
    svg = layout_scene(scene, "svg").decode("utf-8")
    data = {"id": view, "label": VIEW_LABELS[view], "nodes": svg_nodes, "clusters": clusters, "collapsed": collapsed}
    return svg, data


def _requested_clusters(spec: ViewSpec, collapse: Any, expand_updates: bool) -> set[Hashable]:
    """The cluster keys that ``collapse`` (and, unless ``expand_updates``, the optimiser
    updates) would draw as boxes in the static renderer: these start folded."""
    request = plan(spec, collapse=collapse, fold_constants=False, max_nodes=None, expand_updates=expand_updates)
    wanted: set[Hashable] = set()
    item_of = {it.node: it for it in spec.items}
    for g in request.groups.values():
        depth = len(g.cluster)
        for n in g.members:
            path = item_of[n].cluster
            if len(path) > depth:
                wanted.add(path[depth])
    return wanted


def _optimization_svg(target: Any, max_nodes: int | None) -> str:
    from .optview import optimization_dot

    g = optimization_dot(target, max_nodes=max_nodes)
    g.attr(id="optimization")
    return run_dot(g.source, "svg").decode("utf-8")


def _plain(label: str) -> str:
    """Text of a cluster label (side labels are HTML-like ``<<B>...</B>>``)."""
    if label.startswith("<<B>") and label.endswith("</B>>"):
        return html.unescape(label[4:-5])
    return label


def _page_title(s: Subject) -> str:
    return f"graphbp explorer · {len(s.forward)} forward + {len(s.backward)} backward ops"


def _strip_svg(svg: str) -> str:
    """Drop the XML prolog, DOCTYPE and per-element comments: the SVG is inlined in HTML."""
    start = svg.find("<svg")
    body = svg[start:] if start >= 0 else svg
    lines = [ln for ln in body.splitlines() if not (ln.startswith("<!--") and ln.endswith("-->"))]
    return "\n".join(lines)


def _section(view: str, svg: str) -> str:
    return (f'<section class="view" id="view-{view}" data-view="{view}">'
            f'<h2 class="static-heading">{html.escape(VIEW_LABELS[view])} view</h2>'
            f'<div class="viewport">{_strip_svg(svg)}</div></section>')


def _equations_section(latex: str) -> str:
    """The LaTeX source, open; the script typesets it above with the bundled KaTeX (MathML
    output) and folds the source away, so without scripts the reader still has the text."""
    return ('<section class="view" id="view-equations" data-view="equations">'
            '<h2 class="static-heading">Equations (LaTeX)</h2><div id="equations"></div>'
            '<details open id="latex-details"><summary>LaTeX source (amsmath)</summary>'
            f'<pre class="latex" id="latex-source">{html.escape(latex)}</pre></details></section>')


def _asset(name: str) -> str:
    return resources.files("graphbp.render").joinpath("static", *name.split("/")).read_text(encoding="utf-8")


def _page(payload: dict[str, Any], sections: list[str], katex: bool) -> str:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(payload["title"])
    legend = "".join(f'<span class="swatch" style="background:{fill};border-color:{strong}"></span>'
                     for fill, strong in styles.PALETTE[:4])
    legend += (f'<span class="swatch" title="recomputed in the backward pass, not saved (remat)" '
               f'style="background:{styles.REMAT["fillcolor"]};border-color:{styles.REMAT["color"]};'
               'border-style:dashed"></span>')
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" class="no-js"><head><meta charset="utf-8">\n'
        f"<title>{title}</title>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<style>\n{_asset('explorer.css')}</style>\n</head>\n<body>\n"
        f'<header><h1>{title}</h1>'
        '<nav id="tabs" role="tablist"></nav>'
        '<input id="search" type="search" placeholder="search name or op (Enter: next)" autocomplete="off">'
        '<span id="search-count"></span>'
        '<button id="fit" type="button" title="fit the diagram to the window">fit</button>'
        f'<span class="legend" title="gradient clusters are coloured by their forward op">{legend}</span>'
        "</header>\n"
        '<noscript><p class="noscript">Scripts are off: every view is shown below as a static diagram '
        "(hover a node for its details).</p></noscript>\n"
        '<main><div id="views">\n' + "\n".join(sections) + "\n</div>\n"
        '<aside id="panel"><p class="hint">Click a node: its type, shape, bytes and FLOPs; for a gradient '
        "node the forward op and rule it came from; for a forward op every gradient node derived from it "
        "and the activations it saves. Click a cluster's title to fold or unfold it. Drag to pan, "
        "wheel to zoom.</p></aside></main>\n"
        f'<script type="application/json" id="gb-data">{data}</script>\n'
        + (f"<script>/* KaTeX 0.19.1, MIT licence (graphbp/render/static/katex/LICENSE) */\n"
           f"{_asset('katex/katex.min.js')}\n</script>\n" if katex else "")
        + f"<script>\n{_asset('explorer.js')}</script>\n"
        "</body></html>\n"
    )
