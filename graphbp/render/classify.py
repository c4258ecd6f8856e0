"""What a node is, for drawing: leaf kind, pure shape op, shape-only operands, fused contents.

Every question is answered from the facts each op declares on its class (``view``,
``shape_only_inputs``, ``parts()``), never from op names or class lists, so a new op is
drawn right without touching this module.
"""

from __future__ import annotations

from ..graph.context import Provenance
from ..graph.node import Node
from ..graph.subgraph import Subgraph
from ..ops.leaves import Constant, Leaf


def is_leaf_node(node: Node) -> bool:
    return isinstance(node.op, Leaf)


def leaf_kind(node: Node) -> str | None:
    """``"input"``, ``"param"``, ``"constant"`` or ``None`` for computed nodes."""
    return node.op.leaf_kind


def is_shape_op(node: Node) -> bool:
    """True for ops that only re-view their input (``op.view``): hidden on request."""
    return node.op.view


def shape_only_input(node: Node, index: int) -> bool:
    """True when input ``index`` is read only for its runtime shape (a ``like`` operand)."""
    return index in node.op.shape_only_inputs


def is_scalar_constant(node: Node) -> bool:
    """A constant with one element: drawn inside its consumers' labels, not as a box."""
    if not isinstance(node.op, Constant):
        return False
    return node.type.size() == 1


def constant_text(node: Node) -> str:
    """The value of a one-element constant, or its type."""
    value = getattr(node.op, "value", None)
    if value is not None and getattr(value, "size", 0) == 1:
        item = value.reshape(()).item()
        if isinstance(item, float):
            return f"{item:.6g}"
        return str(item)
    return f"const {node.type}"


def absorbed_ops(node: Node) -> list[str]:
    """Display names of the ops a fused node absorbed (empty for ordinary nodes)."""
    return list(node.op.parts())


def grad_origin(node: Node) -> Node | None:
    """The forward node whose rule produced a gradient node (its first provenance record)."""
    return node.provenance[0].forward if node.provenance else None


def provenance_text(node: Node, limit: int = 2) -> str:
    """``"vjp of matmul, input 0"``, plus ``"+N more"`` when passes merged several records."""
    records: tuple[Provenance, ...] = node.provenance
    if not records:
        return ""
    seen: list[str] = []
    for r in records:
        text = r.describe()
        if text not in seen:
            seen.append(text)
    head = "; ".join(seen[:limit])
    return head if len(seen) <= limit else f"{head} (+{len(seen) - limit} more)"


def rules_of(node: Node) -> list[str]:
    """The distinct rules in a node's provenance, in record order."""
    out: list[str] = []
    for r in node.provenance:
        if r.rule not in out:
            out.append(r.rule)
    return out


def op_detail(node: Node) -> str:
    """The op's parameters worth showing (``axis=(1,)``), skipping arrays and types."""
    try:
        params = node.op.params()
    except Exception:  # an op without dataclass fields
        return ""
    parts = []
    for key, value in params.items():
        if key in ("type", "value", "input_name", "param_name", "dtype") and is_leaf_node(node):
            continue
        if hasattr(value, "shape") and hasattr(value, "dtype") or isinstance(value, Subgraph):
            continue  # arrays, and bodies (drawn as clusters of their own)
        if isinstance(value, (tuple, list)) and value and not isinstance(value[0], (int, float, str, type(None))):
            continue
        if key == "keepdims" and value is False:
            continue
        if value is None or key in ("absorbed", "n"):
            continue
        text = repr(value)
        if len(text) > 28:
            text = text[:25] + "..."
        parts.append(f"{key}={text}")
    return ", ".join(parts)
