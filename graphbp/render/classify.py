"""What a node is, for drawing: leaf kind, pure shape op, shape-only operands, fused contents.

Every question is answered from op classes and op attributes, never from op-name strings
of user nodes, so renaming an op's display name does not change how it is drawn. Passes
written later (fusion) are read through ``getattr`` with fallbacks: a fused op may expose
what it absorbed as ``absorbed``, ``ops`` or ``names``.
"""

from __future__ import annotations

from ..graph.context import Provenance
from ..graph.node import Node
from ..graph.subgraph import Subgraph
from ..ops.leaves import Constant, Input, Leaf, Param
from ..ops import shape as _shape_ops

# Ops that only re-view their input's elements (no arithmetic): hidden on request.
_PURE_SHAPE = tuple(
    cls
    for cls in (
        getattr(_shape_ops, name, None)
        for name in ("Reshape", "Transpose", "ExpandDims", "Squeeze", "BroadcastTo", "SwapAxes")
    )
    if cls is not None
)


def is_leaf_node(node: Node) -> bool:
    return isinstance(node.op, Leaf)


def leaf_kind(node: Node) -> str | None:
    """``"input"``, ``"param"``, ``"constant"`` or ``None`` for computed nodes."""
    op = node.op
    if isinstance(op, Input):
        return "input"
    if isinstance(op, Param):
        return "param"
    if isinstance(op, Constant):
        return "constant"
    if isinstance(op, Leaf):
        return "constant"
    return None


def is_shape_op(node: Node) -> bool:
    """True for reshape/transpose/expand_dims/squeeze/broadcast_to: pure re-views."""
    flag = getattr(type(node.op), "pure_shape", None)
    if flag is not None:
        return bool(flag)
    return isinstance(node.op, _PURE_SHAPE)


def shape_only_input(node: Node, index: int) -> bool:
    """True when input ``index`` is read only for its runtime shape (a ``like`` operand)."""
    declared = getattr(type(node.op), "shape_only_inputs", None)
    if declared is not None:
        return index in declared
    op_name = node.op.name
    if op_name in ("reshape", "broadcast_to"):
        return index >= 1
    if op_name in ("full", "reduced_count"):
        return True
    return False


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
    op = node.op
    for attr in ("absorbed", "ops", "names", "body", "chain", "steps"):
        seq = getattr(op, attr, None)
        if isinstance(seq, (tuple, list)) and seq:
            return [_op_text(item) for item in seq]
    return []


def _op_text(item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Node):
        return item.op.name
    name = getattr(item, "name", None)
    if isinstance(name, str):
        return name
    if isinstance(item, (tuple, list)) and item:
        return _op_text(item[0])
    return type(item).__name__


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
        if value is None or key in ("absorbed", "absorbed_nodes", "program", "n_inputs", "n"):
            continue
        text = repr(value)
        if len(text) > 28:
            text = text[:25] + "..."
        parts.append(f"{key}={text}")
    return ", ".join(parts)
