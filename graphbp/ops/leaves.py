"""Leaf ops: graph inputs, parameters (trainable state) and constants."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from ..errors import DTypeError, GraphError, ShapeError
from ..graph.cost import Poly
from ..graph.node import Node
from ..graph.source import user_location
from ..graph.types import TensorType, format_shape
from .base import Op


class Leaf(Op):
    """An op with no inputs whose value comes from outside the schedule."""

    def infer(self, *types: TensorType) -> TensorType:  # pragma: no cover - leaves are typed at creation
        raise GraphError(f"{self.name} nodes are typed when created")

    def flops(self, in_types, out_type):
        """Nothing is computed: the value is fed or held."""
        return Poly()


@dataclasses.dataclass(frozen=True)
class Input(Leaf):
    """A value fed at call time. Its shape may have unknown (``None``) dims."""

    name: ClassVar[str] = "input"
    leaf_kind: ClassVar[str | None] = "input"
    input_name: str
    type: TensorType

    def vjp(self, node, g):
        return ()


@dataclasses.dataclass(frozen=True, eq=False)
class Param(Leaf):
    """Mutable state read by compiled programs at call time and updated in place.

    Compares by identity: two parameters with equal values are still different state.
    """

    name: ClassVar[str] = "param"
    leaf_kind: ClassVar[str | None] = "param"
    param_name: str
    value: np.ndarray
    trainable: bool = True

    def assign(self, new: Any) -> None:
        """Copy ``new`` into the held array in place (programs keep pointing at it).

        Like a feed, ``new`` is cast only when the cast is lossless (float16 into float32,
        int32 into int64); a float64 array for a float32 parameter is a ``DTypeError``."""
        arr = np.asarray(new)
        if arr.shape != self.value.shape:
            raise ShapeError(
                f"param {self.param_name!r}: cannot assign shape {format_shape(arr.shape)} "
                f"to a parameter of shape {format_shape(self.value.shape)}"
            )
        if arr.dtype != self.value.dtype and not (arr.dtype.kind in "fiub" and np.can_cast(arr.dtype, self.value.dtype, "safe")):
            raise DTypeError(  # the feed rule: only lossless casts are automatic
                f"param {self.param_name!r}: cannot assign {arr.dtype} to a {self.value.dtype} parameter "
                f"(only lossless casts are automatic; convert with .astype(np.{self.value.dtype.name}))"
            )
        self.value[...] = arr

    def vjp(self, node, g):
        return ()

    __eq__ = object.__eq__
    __hash__ = object.__hash__


@dataclasses.dataclass(frozen=True, eq=False)
class Constant(Leaf):
    """A fixed array baked into the graph (read-only)."""

    name: ClassVar[str] = "constant"
    leaf_kind: ClassVar[str | None] = "constant"
    value: np.ndarray

    def vjp(self, node, g):
        return ()

    __eq__ = object.__eq__
    __hash__ = object.__hash__


def input(name: str, shape, dtype: Any = "float32") -> Node:
    """A graph input fed at call time.

    Parameters
    ----------
    name : str
        The feed name (``f(x=...)``) and the label shown in errors and diagrams.
    shape : tuple of int or None
        ``None`` marks a dim known only when the program is called (a batch size).
    dtype : dtype-like, default ``"float32"``
    """
    if not isinstance(name, str) or not name:
        raise GraphError(f"input name must be a non-empty string, got {name!r}")
    t = TensorType(shape, dtype)
    return Node(Input(name, t), (), t, name=name, origin=user_location(2))


def param(name: str, value: Any, *, trainable: bool = True, dtype: Any = None) -> Node:
    """A parameter holding ``value`` (copied; float arrays default to their own dtype).

    ``node.value`` is the live array: compiled programs read it at each call and optimizer
    updates write it in place.
    """
    if not isinstance(name, str) or not name:
        raise GraphError(f"param name must be a non-empty string, got {name!r}")
    arr = np.array(value, dtype=dtype, copy=True)
    if arr.dtype == object:
        raise DTypeError(f"param {name!r}: value of dtype object is not a numeric array")
    t = TensorType(arr.shape, arr.dtype)
    return Node(Param(name, arr, trainable), (), t, name=name, origin=user_location(2))


def constant(value: Any, dtype: Any = None, name: str | None = None) -> Node:
    """A constant node; Python scalars default to NumPy's dtype for them."""
    arr = np.array(value, dtype=dtype)
    if arr.dtype == object:
        raise DTypeError("constant: value of dtype object is not a numeric array")
    arr.setflags(write=False)
    t = TensorType(arr.shape, arr.dtype)
    from .base import _labels

    origin, scope, prov = _labels()
    return Node(Constant(arr), (), t, name=name, origin=origin, scope=scope, provenance=prov)


def is_leaf(node: Node) -> bool:
    return isinstance(node.op, Leaf)
