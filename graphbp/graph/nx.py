"""Export a graph to networkx, for analyses graphbp does not ship (paths, cuts, centrality)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .node import Node
from .traverse import toposort

if TYPE_CHECKING:  # networkx is imported on first use: most programs never export
    import networkx as nx


def _roots(target: Any) -> list[Node]:
    if isinstance(target, Node):
        return [target]
    outputs = getattr(target, "outputs", None)
    if outputs is not None:  # a Program: its outputs and the new values of its updates
        return list(outputs) + [v for _, v in getattr(target, "updates", [])]
    return list(target)


def to_networkx(target: Node | Sequence[Node] | Any) -> "nx.MultiDiGraph":
    """The graph ``target`` reaches as a ``networkx.MultiDiGraph``.

    Nodes are ``"n0", "n1", ...`` in topological order (stable from run to run) with the
    attributes ``op`` (name), ``params``, ``shape``, ``dtype``, ``name``, ``scope``,
    ``origin`` (``file:line``), ``kind`` (input, param, constant, forward or gradient) and
    ``provenance`` (a list of rule descriptions). An edge ``u -> v`` with key/attribute
    ``index`` says ``u`` is argument ``index`` of ``v`` (a multigraph, since ``x * x``
    reads ``x`` twice). ``node`` holds the graphbp node itself.
    """
    import networkx as nx

    order = toposort(_roots(target))
    ids = {n: f"n{i}" for i, n in enumerate(order)}
    g = nx.MultiDiGraph()
    for n in order:
        kind = n.op.leaf_kind or ("gradient" if n.provenance else "forward")
        params = {k: v for k, v in n.op.params().items() if kind not in ("param", "constant")}
        g.add_node(
            ids[n], op=n.op.name, params=params, shape=n.shape, dtype=n.dtype.name, name=n.name,
            scope="/".join(n.scope), origin=str(n.origin) if n.origin else None, kind=kind,
            provenance=[p.describe() for p in n.provenance], node=n,
        )
        for i, inp in enumerate(n.inputs):
            g.add_edge(ids[inp], ids[n], key=i, index=i)
    return g
