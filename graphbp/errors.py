"""The exceptions graphbp raises.

Every error that concerns a node names the op, the operands' shapes and dtypes and the
user's file and line that built the node (see :func:`graphbp.graph.source.describe`).
The classes also derive from the closest builtin so generic ``except ValueError`` code
keeps working.
"""

from __future__ import annotations


class GraphbpError(Exception):
    """Base class of every graphbp error."""


class GraphError(GraphbpError, ValueError):
    """A graph is malformed or used in a way its structure does not allow."""


class ShapeError(GraphError):
    """Operand shapes do not fit an op's shape rule."""


class DTypeError(GraphError, TypeError):
    """Operand dtypes do not fit an op's dtype rule."""


class FeedError(GraphbpError, ValueError):
    """Values fed to a compiled program are missing, extra, or of the wrong shape or dtype."""


class GraphFormatError(GraphbpError, ValueError):
    """A saved graph or checkpoint file is malformed, truncated or of an unknown version."""


class NumericsError(GraphbpError, FloatingPointError):
    """A value became non-finite while ``check_numerics=True``."""


class UnusedParameterWarning(UserWarning):
    """``gb.grad`` or an optimiser was given a parameter the loss does not depend on."""


class DTypePromotionWarning(UserWarning):
    """An explicit NumPy array (not a Python scalar or list) widened a float tensor's dtype,
    e.g. a float64 array turned a float32 model into float64."""


__all__ = [
    "GraphbpError",
    "GraphError",
    "ShapeError",
    "DTypeError",
    "FeedError",
    "GraphFormatError",
    "NumericsError",
    "UnusedParameterWarning",
    "DTypePromotionWarning",
]
