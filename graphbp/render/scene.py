"""A drawing before it is DOT: boxes, arrows and nested clusters, emitted deterministically.

Views fill a :class:`Scene` in topological order; :meth:`Scene.to_digraph` then names
nodes ``n0, n1, ...`` and clusters ``cluster_0, ...`` in that order, so the same graph
always gives byte-identical DOT (no ``id()``, no set iteration anywhere on this path).
"""

from __future__ import annotations

import html
from collections.abc import Hashable
from dataclasses import dataclass, field

import graphviz

FONT = "Helvetica"


def esc(text: object) -> str:
    """Escape text for a Graphviz HTML-like label."""
    return html.escape(str(text), quote=True)


def html_label(title: str, *lines: tuple[str, str] | str, title_size: int = 11) -> str:
    """``<<B>title</B><BR/>line...>``: a bold title and small grey detail lines.

    Each line is plain text (escaped here) or a ``(text, colour)`` pair.
    """
    parts = [f'<FONT POINT-SIZE="{title_size}"><B>{esc(title)}</B></FONT>']
    for line in lines:
        if not line:
            continue
        text, colour = (line, "#4b5563") if isinstance(line, str) else line
        parts.append(f'<FONT POINT-SIZE="8" COLOR="{colour}">{esc(text)}</FONT>')
    return "<" + "<BR/>".join(parts) + ">"


@dataclass
class DrawNode:
    key: Hashable
    label: str
    attrs: dict[str, str]
    cluster: tuple[Hashable, ...] = ()


@dataclass
class DrawEdge:
    tail: Hashable
    head: Hashable
    attrs: dict[str, str]
    count: int = 1
    lhead: Hashable | None = None
    ltail: Hashable | None = None
    overlay: bool = False


#: When a scene's overlay edges would span more ranks than this in total (estimated by
#: :meth:`Scene.overlay_span`), they are drawn over a finished layout instead of being laid
#: out with it (see :meth:`Scene.layered`); docs/explorer.md gives the layout times that
#: chose it.
OVERLAY_SPAN_MAX = 2000


@dataclass
class Scene:
    """Nodes, edges and cluster styles of one diagram, in insertion (topological) order.

    An edge added with ``overlay=True`` (the joint view's arrows from the forward column to
    the backward column) takes no part in the ranking (``constraint=false``). Graphviz still
    threads such an edge through one virtual node per rank it spans, and the two columns
    rank independently, so on a large graph these edges span hundreds of ranks each: the
    layout's size grows with (edges x height), mincross and positioning never finish, and
    some cluster nestings make ``dot`` fail outright ("trouble in init_rank"). A
    :meth:`layered` scene is therefore laid out without them and gets them drawn as straight
    lines over the result (:func:`graphbp.render.output.layout_scene`).
    """

    title: str = ""
    graph_attrs: dict[str, str] = field(default_factory=dict)
    nodes: dict[Hashable, DrawNode] = field(default_factory=dict)
    edges: dict[tuple, DrawEdge] = field(default_factory=dict)
    clusters: dict[Hashable, dict[str, str]] = field(default_factory=dict)

    def add_node(self, key: Hashable, label: str, attrs: dict[str, str], cluster: tuple = ()) -> None:
        if key not in self.nodes:
            self.nodes[key] = DrawNode(key, label, dict(attrs), tuple(cluster))

    def add_edge(self, tail: Hashable, head: Hashable, attrs: dict[str, str] | None = None,
                 kind: str = "data", lhead: Hashable | None = None, ltail: Hashable | None = None,
                 overlay: bool = False) -> None:
        """Add an arrow; a repeated (tail, head, kind) arrow is counted, not duplicated.

        ``overlay``: the arrow does not shape the layout (see the class docstring)."""
        if tail == head:
            return
        k = (tail, head, kind)
        if k in self.edges:
            self.edges[k].count += 1
            return
        self.edges[k] = DrawEdge(tail, head, dict(attrs or {}), 1, lhead, ltail, overlay)

    def set_cluster(self, key: Hashable, attrs: dict[str, str]) -> None:
        self.clusters.setdefault(key, dict(attrs))

    def __len__(self) -> int:
        return len(self.nodes)

    def layered(self) -> bool:
        """Whether this scene is laid out in two passes: without its overlay edges first, then
        with them drawn straight over the result (when they would span too many ranks)."""
        return self.overlay_span() > OVERLAY_SPAN_MAX

    def overlay_span(self) -> int:
        """Estimated number of ranks the overlay edges span in total, i.e. how many virtual
        nodes ``dot`` would add for them: each box is ranked by its longest path from a source
        over the other edges (as each column ranks on its own), and an overlay edge spans the
        difference of its ends' ranks. Iterative; edges closing a cycle are left out."""
        overlay = [e for e in self.edges.values() if e.overlay]
        if not overlay:
            return 0
        succ: dict[Hashable, list[Hashable]] = {k: [] for k in self.nodes}
        indeg = dict.fromkeys(self.nodes, 0)
        for e in self.edges.values():
            if not e.overlay and e.attrs.get("constraint") != "false":
                succ[e.tail].append(e.head)
                indeg[e.head] += 1
        rank = dict.fromkeys(self.nodes, 0)
        ready = [k for k in self.nodes if indeg[k] == 0]
        while ready:
            k = ready.pop()
            for h in succ[k]:
                rank[h] = max(rank[h], rank[k] + 1)
                indeg[h] -= 1
                if indeg[h] == 0:
                    ready.append(h)
        return sum(abs(rank[e.tail] - rank[e.head]) for e in overlay)

    # -- emission --------------------------------------------------------------------
    def ids(self) -> tuple[dict[Hashable, str], dict[tuple, str]]:
        """The DOT names :meth:`to_digraph` gives: ``{node key: "n3"}`` and
        ``{cluster path: "cluster_2"}`` (the HTML explorer maps SVG elements back with them)."""
        ids, cluster_id, _, _ = self._layout()
        return ids, cluster_id

    def _layout(self) -> tuple[dict, dict, dict, dict]:
        ids = {key: f"n{i}" for i, key in enumerate(self.nodes)}
        # Cluster tree in first-appearance order.
        children: dict[tuple, list[tuple]] = {(): []}
        members: dict[tuple, list[DrawNode]] = {(): []}
        for dn in self.nodes.values():
            path = dn.cluster
            for depth in range(1, len(path) + 1):
                sub, parent = path[:depth], path[: depth - 1]
                if sub not in children:
                    children[sub] = []
                    members[sub] = []
                    children[parent].append(sub)
            members[path].append(dn)
        cluster_id: dict[tuple, str] = {}
        for path in _preorder(children):
            if path:
                cluster_id[path] = f"cluster_{len(cluster_id)}"
        return ids, cluster_id, children, members

    def to_digraph(self, name: str = "graphbp", *, overlay: bool = True) -> graphviz.Digraph:
        """The whole scene as DOT; ``overlay=False`` leaves the overlay edges out (the first
        pass of a :meth:`layered` layout)."""
        ids, cluster_id, children, members = self._layout()
        key_cluster = {path[-1]: cid for path, cid in cluster_id.items()}

        g = graphviz.Digraph(name=name)
        g.attr(rankdir="TB", fontname=FONT, fontsize="12", nodesep="0.22", ranksep="0.32",
               newrank="true", compound="true", labelloc="t", labeljust="l", outputorder="edgesfirst")
        if self.title:
            g.attr(label=self.title)
        if self.graph_attrs:
            g.attr(**self.graph_attrs)
        g.attr("node", fontname=FONT, fontsize="10", margin="0.08,0.04", height="0.3")
        g.attr("edge", fontname=FONT, fontsize="8", color="#6b7280", arrowsize="0.6")

        def emit(graph: graphviz.Digraph, path: tuple) -> None:
            for dn in members[path]:
                graph.node(ids[dn.key], label=dn.label, **dn.attrs)
            for sub in children[path]:
                with graph.subgraph(name=cluster_id[sub]) as c:
                    c.attr(fontname=FONT, **self.clusters.get(sub[-1], {}))
                    emit(c, sub)

        emit(g, ())
        for e in self.edges.values():
            if overlay or not e.overlay:
                g.edge(ids[e.tail], ids[e.head], **self._edge_attrs(e, key_cluster))
        return g

    def overlay_statements(self) -> str:
        """DOT statements of the overlay edges alone, for the second pass of a :meth:`layered`
        layout: straight lines without labels (their types are in the tooltips and the
        explorer's side panel) and without cluster clipping, which the second pass ignores."""
        ids = self._layout()[0]
        g = graphviz.Digraph()
        for e in self.edges.values():
            if e.overlay:
                attrs = {k: v for k, v in e.attrs.items() if k not in ("label", "constraint")}
                g.edge(ids[e.tail], ids[e.head], **attrs)
        return "".join(g.body)

    def _edge_attrs(self, e: DrawEdge, key_cluster: dict) -> dict[str, str]:
        attrs = dict(e.attrs)
        if e.count > 1:
            base = attrs.get("label", "")
            attrs["label"] = f"{base} ×{e.count}".strip()
        if e.lhead is not None and e.lhead in key_cluster:
            attrs["lhead"] = key_cluster[e.lhead]
        if e.ltail is not None and e.ltail in key_cluster:
            attrs["ltail"] = key_cluster[e.ltail]
        return attrs


def _preorder(children: dict[tuple, list[tuple]]) -> list[tuple]:
    """Cluster paths parent-first, siblings in first-appearance order (iterative)."""
    out: list[tuple] = []
    stack = [()]
    while stack:
        path = stack.pop()
        out.append(path)
        stack.extend(reversed(children[path]))
    return out
