"""The graph node: one value produced by one op applied to input nodes.

A graph is exactly what its output nodes reach; there is no graph object holding state.
Nodes are immutable after construction and compare by identity (``==`` is not overloaded,
so nodes can be dict keys and list members; use ``gb.equal`` for elementwise equality).
This package sits below render and does not import it: a notebook shows a node's diagram
through ``gb.to_dot(node)`` (a ``graphviz.Digraph``, which Jupyter draws) and a compiled
program through the program itself. (The NumPy-style operators build through the public
op builders, imported when first used.)
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from .context import Provenance, current_labels
from .source import SourceLocation, user_location
from .types import Shape, TensorType

if TYPE_CHECKING:
    from ..ops.base import Op

_serials = itertools.count()


class Node:
    """A symbolic value: ``op(*inputs)`` with a static :class:`TensorType`.

    Attributes
    ----------
    op : Op
        The operation (holds its parameters, kernel, shape rule and VJP rule).
    inputs : tuple[Node, ...]
        Operands, in order.
    type : TensorType
        Static shape (``None`` for unknown dims) and dtype.
    name : str | None
        A user-visible name (inputs and parameters always have one).
    scope : tuple[str, ...]
        The ``gb.scope`` path the node was built in.
    origin : SourceLocation | None
        The user's file and line that built it (errors and diagrams point here).
    provenance : tuple[Provenance, ...]
        Empty for forward nodes; for gradient nodes, the forward node(s) and rule(s)
        that produced them (several once passes merge or fuse nodes).
    """

    __slots__ = ("op", "inputs", "type", "name", "scope", "origin", "provenance", "serial", "__weakref__")

    __array_ufunc__ = None  # make ``ndarray + node`` defer to Node.__radd__

    def __init__(
        self,
        op: "Op",
        inputs: tuple["Node", ...],
        type: TensorType,
        *,
        name: str | None = None,
        origin: SourceLocation | None = None,
        scope: tuple[str, ...] | None = None,
        provenance: tuple[Provenance, ...] | None = None,
    ) -> None:
        self.op = op
        self.inputs = inputs
        self.type = type
        self.name = name
        if origin is None or scope is None or provenance is None:
            at, path, prov = current_labels()
            if scope is None:
                scope = path
            if origin is None:
                origin = at or user_location(2)
            if provenance is None:
                provenance = prov
        self.scope = scope
        self.origin = origin
        self.provenance = provenance
        self.serial = next(_serials)  # creation order: a deterministic tie-break for schedules

    # -- static facts ---------------------------------------------------------------
    @property
    def shape(self) -> Shape:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.ndim

    @property
    def is_gradient(self) -> bool:
        """True for nodes created by ``gb.grad``/``gb.vjp``."""
        return bool(self.provenance)

    @property
    def value(self) -> np.ndarray:
        """The array held by a parameter or constant node (parameters are updated in place)."""
        getter = getattr(self.op, "value", None)
        if getter is None:
            raise AttributeError(f"{self.label()} is computed by {self.op.name}; only parameters and constants hold a value")
        return getter

    @value.setter
    def value(self, new: Any) -> None:
        if self.op.leaf_kind != "param":
            raise AttributeError(f"only parameters can be assigned; {self.label()} is a {self.op.name}")
        self.op.assign(new)

    def label(self) -> str:
        """Short human name: the node's name or its op, with type."""
        head = self.name if self.name else self.op.name
        return f"{head}: {self.type}"

    def describe(self) -> str:
        """One line for error messages: op, type, and where the user built it."""
        where = f" (built at {self.origin})" if self.origin else ""
        return f"{self.label()}{where}"

    def __repr__(self) -> str:
        args = ", ".join(i.name or i.op.name for i in self.inputs)
        head = f"{self.name} = " if self.name else ""
        return f"<Node {head}{self.op.name}({args}) -> {self.type}>"

    def __bool__(self) -> bool:
        raise TypeError(
            f"the truth value of symbolic {self.label()} is unknown until the graph runs; "
            "use gb.where(...) for data-dependent choices"
        )

    def __iter__(self):
        raise TypeError(f"symbolic {self.label()} is not iterable; index it or use gb.split")

    def __len__(self) -> int:
        if not self.shape or self.shape[0] is None:
            raise TypeError(f"len() of {self.label()} is not known statically")
        return self.shape[0]

    # -- NumPy-style operators (built through the public builders) -------------------
    def __add__(self, other):
        from .. import ops
        return ops.add(self, other)

    def __radd__(self, other):
        from .. import ops
        return ops.add(other, self)

    def __sub__(self, other):
        from .. import ops
        return ops.subtract(self, other)

    def __rsub__(self, other):
        from .. import ops
        return ops.subtract(other, self)

    def __mul__(self, other):
        from .. import ops
        return ops.multiply(self, other)

    def __rmul__(self, other):
        from .. import ops
        return ops.multiply(other, self)

    def __truediv__(self, other):
        from .. import ops
        return ops.divide(self, other)

    def __rtruediv__(self, other):
        from .. import ops
        return ops.divide(other, self)

    def __pow__(self, other):
        from .. import ops
        return ops.power(self, other)

    def __rpow__(self, other):
        from .. import ops
        return ops.power(other, self)

    def __matmul__(self, other):
        from .. import ops
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        from .. import ops
        return ops.matmul(other, self)

    def __neg__(self):
        from .. import ops
        return ops.negative(self)

    def __pos__(self):
        return self

    def __abs__(self):
        from .. import ops
        return ops.abs(self)

    def __lt__(self, other):
        from .. import ops
        return ops.less(self, other)

    def __le__(self, other):
        from .. import ops
        return ops.less_equal(self, other)

    def __gt__(self, other):
        from .. import ops
        return ops.greater(self, other)

    def __ge__(self, other):
        from .. import ops
        return ops.greater_equal(self, other)

    def __getitem__(self, index):
        from .. import ops
        return ops.getitem(self, index)

    @property
    def T(self) -> "Node":
        from .. import ops
        return ops.transpose(self)

    def astype(self, dtype) -> "Node":
        from .. import ops
        return ops.cast(self, dtype)

    def reshape(self, *shape) -> "Node":
        from .. import ops
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        return ops.reshape(self, shape)

    def sum(self, axis=None, keepdims: bool = False) -> "Node":
        from .. import ops
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> "Node":
        from .. import ops
        return ops.mean(self, axis=axis, keepdims=keepdims)

    # Identity semantics on purpose (see module docstring).
    __hash__ = object.__hash__
