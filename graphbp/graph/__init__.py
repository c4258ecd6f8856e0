"""Graph data structures: nodes, static types, build context, traversal."""

from .context import Provenance, checkpoint, provenance, scope
from .node import Node
from .source import SourceLocation
from .traverse import depends_on, toposort, users
from .types import Shape, TensorType, broadcast_shapes

__all__ = [
    "Node",
    "Provenance",
    "Shape",
    "SourceLocation",
    "TensorType",
    "broadcast_shapes",
    "checkpoint",
    "depends_on",
    "provenance",
    "scope",
    "toposort",
    "users",
]
