"""The node table the HTML explorer's script reads: one row per graph node, drawn or not.

Rows are indexed by topological position in the :class:`~.subject.Subject`, so every view
(each its own SVG) refers to the same row for the same node, and provenance, inputs and
"derived from" links are plain row numbers. Keys are short because a 2,000-node graph
carries 2,000 rows; empty fields are left out. Everything is text already formatted for
display, so the script does no arithmetic on shapes or costs.
"""

from __future__ import annotations

import linecache
from typing import Any

from ..graph.node import Node
from ..graph.traverse import toposort_nested
from ..graph.types import TupleType
from .classify import absorbed_ops, leaf_kind, op_detail, provenance_text, rules_of
from .costs import bytes_poly, flops
from .subject import Subject, node_title, origin_text, short_type
from .views import resolve_forward


def node_table(s: Subject) -> tuple[list[dict[str, Any]], dict[Node, int]]:
    """``(rows, index)``: the rows in ``s.order``, then those of the nodes inside bodies
    (``op.subgraphs()``, nested ones included), and each node's row number.

    Row keys: ``t`` title, ``op`` op or leaf kind, ``k`` kind (input, param, constant, op,
    grad, update), ``ty`` type (``f32[?,128]``), ``sh`` shape, ``b`` bytes, ``f`` FLOPs,
    ``st`` schedule step, ``at`` user line (``model.py:12``), ``src`` that line's text,
    ``sc`` scope, ``pv`` provenance ``[[forward row, rule, input index], ...]``, ``why``
    provenance in words, ``in`` input rows, ``sv`` 1 when saved for the backward, ``out``
    output number, ``up`` row of the parameter this value updates, ``fu`` fused ops.
    """
    # the outer nodes first, then the nodes of loop and branch bodies (drawn in clusters)
    outer = set(s.order)
    order = list(s.order) + [n for n in toposort_nested(s.order) if n not in outer]
    index = {n: i for i, n in enumerate(order)}
    forward = [n for n in s.order if not n.provenance and n not in s.backward_set]
    resolved: dict[Node, int] = {}

    def stand_in(fwd: Node) -> int:
        """Row of the forward node a rule came from, or of the node that replaced it when
        rewrite passes fused or rebuilt it (-1: nothing drawn stands for it)."""
        if fwd not in resolved:
            match = fwd if fwd in index else resolve_forward(fwd, forward)
            resolved[fwd] = index.get(match, -1) if match is not None else -1
        return resolved[fwd]

    rows: list[dict[str, Any]] = []
    for n in order:
        row: dict[str, Any] = {"t": node_title(n), "op": leaf_kind(n) or n.op.name, "k": _kind(s, n),
                               "ty": short_type(n.type), "sh": _shape(n), "b": str(bytes_poly(n.type))}
        cost = flops(n)
        if not cost.is_zero:
            row["f"] = cost.format("FLOP")
        detail = op_detail(n)
        if detail and leaf_kind(n) is None:
            row["d"] = detail
        _put(row, "st", s.step.get(n))
        where = origin_text(n)
        if where:
            row["at"] = where
            _put(row, "src", linecache.getline(n.origin.filename, n.origin.lineno).strip())
        _put(row, "sc", "/".join(n.scope))
        if n.provenance:
            row["pv"] = [[stand_in(r.forward), r.rule, r.input_index] for r in n.provenance]
            row["why"] = provenance_text(n, limit=4)
            row["ru"] = rules_of(n)
        _put(row, "in", [index[i] for i in n.inputs if i in index])
        if n in s.saved_set:
            row["sv"] = 1
        _put(row, "out", s.output_index.get(n))
        if n in s.update_of:
            row["up"] = index.get(s.update_of[n], -1)
        _put(row, "fu", absorbed_ops(n))
        rows.append(row)
    return rows, index


def _put(row: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != "" and value != []:
        row[key] = value


def _kind(s: Subject, n: Node) -> str:
    kind = leaf_kind(n)
    if n.provenance:
        return "grad"
    if kind is not None:
        return kind
    if n in s.backward_set:
        return "update"
    return "op"


def _shape(n: Node) -> str:
    return _shape_text(n.type)


def _shape_text(t: Any) -> str:
    """``(?, 128)``; a multi-output node (``gb.scan``, ``gb.cond``) lists its items' shapes."""
    if isinstance(t, TupleType):
        return "(" + ", ".join(_shape_text(i) for i in t.items) + ")"
    return "(" + ", ".join("?" if d is None else str(d) for d in t.shape) + ("," if len(t.shape) == 1 else "") + ")"
