"""Checking the values fed to a program, before any work starts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import FeedError
from ..graph.node import Node
from ..graph.types import concrete_matches, format_shape


def bind_feeds(inputs: Sequence[Node], args: tuple, kwargs: dict[str, Any]) -> list[np.ndarray]:
    """Match positional and keyword feeds to ``inputs`` and check each one.

    Arrays whose dtype casts to the input's dtype without loss (``np.can_cast(..., "safe")``,
    e.g. int32 labels for an int64 input) are converted; anything else is a ``FeedError``.
    A Python number is accepted for a 0-d input when that input's dtype holds it exactly
    (``f(key=7)`` for an int64 key); lists and other objects are refused.
    """
    names = [i.op.input_name for i in inputs]
    if len(args) > len(inputs):
        raise FeedError(f"program takes {len(inputs)} inputs ({', '.join(names)}) but {len(args)} were given")
    values: list[Any] = list(args) + [_MISSING] * (len(inputs) - len(args))
    for key, val in kwargs.items():
        if key not in names:
            raise FeedError(f"unexpected feed {key!r}; the program's inputs are: {', '.join(names)}")
        i = names.index(key)
        if values[i] is not _MISSING:
            raise FeedError(f"input {key!r} fed twice (positionally and by name)")
        values[i] = val
    missing = [n for n, v in zip(names, values) if v is _MISSING]
    if missing:
        raise FeedError(f"missing feed(s) for input(s): {', '.join(missing)}")
    return [check_feed(node, v) for node, v in zip(inputs, values)]


def check_feed(node: Node, value: Any) -> np.ndarray:
    name = node.op.input_name
    where = f" (input built at {node.origin})" if node.origin else ""
    if isinstance(value, np.generic):
        value = np.asarray(value)
    elif isinstance(value, (bool, int, float)) and node.ndim == 0:
        value = _python_scalar(node, value, where)
    if not isinstance(value, np.ndarray):
        raise FeedError(
            f"input {name!r}: expected a NumPy array of {node.type}, got a {type(value).__name__}; "
            f"wrap it with np.asarray(..., dtype=np.{node.dtype.name}){where}"
        )
    if value.dtype.kind not in "fiubc":
        raise FeedError(f"input {name!r}: dtype {value.dtype} is not numeric; expected {node.type}{where}")
    if value.dtype != node.dtype:
        if value.dtype.kind in "fiub" and np.can_cast(value.dtype, node.dtype, "safe"):
            value = value.astype(node.dtype)
        else:
            raise FeedError(
                f"input {name!r}: expected dtype {node.dtype.name}, got {value.dtype.name} "
                f"(only lossless casts are automatic; convert with .astype(np.{node.dtype.name})){where}"
            )
    if not concrete_matches(node.shape, value.shape):
        raise FeedError(
            f"input {name!r}: expected shape {format_shape(node.shape)}, got {format_shape(value.shape)}{where}"
        )
    return value


def _python_scalar(node: Node, value: bool | int | float, where: str) -> np.ndarray:
    """A Python number for a 0-d input, accepted only when the input's dtype holds it exactly."""
    arr = None
    if isinstance(value, bool) == (node.dtype == np.bool_) and not (isinstance(value, float) and node.dtype.kind not in "fc"):
        try:
            arr = np.asarray(value, dtype=node.dtype)
        except (OverflowError, ValueError, TypeError):
            arr = None
        if arr is not None and not (arr.item() == value or value != value):  # NaN stays NaN
            arr = None
    if arr is None:
        raise FeedError(f"input {node.op.input_name!r}: {value!r} is not exactly representable as "
                        f"{node.dtype.name}{where}")
    return arr


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()
