"""``check_numerics=True``: stop at the first non-finite value and name the op that made it.

The executor calls :func:`check_inputs` once per call (fed values and parameters, before any
work) and :func:`check_value` after each op it evaluates, in schedule order, so the first
value that fails is the first non-finite value the program produced. Both raise
:class:`~graphbp.errors.NumericsError` before parameter updates are applied, so a
diverging step leaves the parameters as they were.

For a value in the backward schedule the message names the gradient node and the forward
op whose gradient rule built it (``node.provenance``), with the user's line of that op.
The fast path is one reduction per value: a sum is finite only if every element is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import GraphbpError, GraphError, NumericsError
from ..graph.node import Node
from ..graph.types import format_shape


def is_finite(value: np.ndarray) -> bool:
    """True when every element is finite (integers and booleans always are)."""
    if value.dtype.kind not in "fc":
        return True
    with np.errstate(all="ignore"):
        total = np.add.reduce(value, axis=None)
    if np.isfinite(total):
        return True
    return bool(np.isfinite(value).all())  # the sum may overflow on large finite values


def check_inputs(inputs: Sequence[Node], feeds: Sequence[np.ndarray], params: Sequence[Node]) -> None:
    """Raise if a fed value or a parameter already holds a non-finite value."""
    for node, value in zip(inputs, feeds):
        if not is_finite(value):
            raise NumericsError(
                f"check_numerics: input {node.op.input_name!r} was fed {_summary(value)}"
                + (f" (input built at {node.origin})" if node.origin else "")
            )
    for node in params:
        value = node.op.value
        if not is_finite(value):
            raise NumericsError(
                f"check_numerics: parameter {node.name!r} holds {_summary(value)} before the call"
                + (f" (built at {node.origin})" if node.origin else "")
            )


def check_value(node: Node, value: np.ndarray, operands: Sequence[np.ndarray] = ()) -> None:
    """Raise :class:`NumericsError` if ``value`` (just computed for ``node``) is not finite."""
    if not is_finite(value):
        raise NumericsError(describe_nonfinite(node, value, operands))


def describe_nonfinite(node: Node, value: np.ndarray, operands: Sequence[np.ndarray]) -> str:
    """The message: which op, which operand values, which user line, which gradient rule."""
    lines = []
    if node.provenance:
        p = node.provenance[0]
        fwd = p.forward
        lines.append(
            f"check_numerics: first non-finite value in the backward schedule, at gradient node "
            f"{node.op.name}: {node.type} ({p.describe()})"
        )
        lines.append(
            f"  produced by the gradient rule of forward op {fwd.op.name}: {fwd.type}"
            + (f", built at {fwd.origin}" if fwd.origin else "")
        )
    else:
        lines.append(f"check_numerics: first non-finite value produced by {node.op.name}: {node.type}")
        if node.origin:
            lines.append(f"  built at {node.origin}")
    if node.name:
        lines.append(f"  node name: {node.name}")
    lines.append(f"  value: {_summary(value)}")
    for inp, arr in zip(node.inputs, operands):
        lines.append(f"  operand {inp.name or inp.op.name}: {_range(np.asarray(arr))}")
    lines.append("  parameters were not updated")
    return "\n".join(lines)


def compute_error(node: Node, operands: Sequence[np.ndarray], exc: Exception) -> GraphbpError:
    """Wrap an exception raised by an op's kernel so it names the op, operands and user line
    (and, for a gradient node, the forward op whose rule built it)."""
    ops_desc = ", ".join(
        f"{i.name or i.op.name}: {np.asarray(a).dtype.name}{format_shape(np.shape(a))}"
        for i, a in zip(node.inputs, operands)
    )
    head = f"{node.op.name} failed while running: {type(exc).__name__}: {exc}"
    lines = [head, f"  operands: {ops_desc}"]
    if node.provenance:
        p = node.provenance[0]
        lines.insert(0, f"while running the gradient of {p.forward.op.name}"
                        + (f" built at {p.forward.origin}:" if p.forward.origin else ":"))
        lines.append(f"  generated gradient node: {node.op.name} ({p.describe()})")
    elif node.origin:
        lines.append(f"  built at {node.origin}")
    kind = NumericsError if isinstance(exc, FloatingPointError) else GraphError
    return kind("\n".join(lines))


def _summary(value: np.ndarray) -> str:
    with np.errstate(all="ignore"):
        nan = int(np.isnan(value).sum())
        pos = int(np.isposinf(value).sum()) if value.dtype.kind == "f" else 0
        neg = int(np.isneginf(value).sum()) if value.dtype.kind == "f" else 0
    bad = np.argwhere(~np.isfinite(value))
    first = tuple(int(i) for i in bad[0]) if len(bad) else ()
    kinds = ", ".join(f"{n} {k}" for n, k in ((nan, "nan"), (pos, "+inf"), (neg, "-inf")) if n)
    return f"{value.dtype.name}{format_shape(value.shape)} with {kinds} (first at index {first})"


def _range(arr: np.ndarray) -> str:
    desc = f"{arr.dtype.name}{format_shape(arr.shape)}"
    if arr.size and arr.dtype.kind in "fiub":
        with np.errstate(all="ignore"):
            desc += f" in [{float(arr.min()):.6g}, {float(arr.max()):.6g}]"
    return desc
