"""``check_numerics=True``: stop at the first non-finite value and name the op that made it.

The executor calls :func:`check_inputs` once per call (fed values and parameters, before any
work) and :func:`check_value` after each op it evaluates, in schedule order, so the first
value that fails is the first non-finite value the program produced. Both raise
:class:`~graphbp.errors.NumericsError` before parameter updates are applied, so a
diverging step leaves the parameters as they were.

For a value in the backward schedule the message names the gradient node and the forward
op whose gradient rule built it (``node.provenance``), with the user's line of that op.
The fast path is one reduction per value: a sum is finite only if every element is.

Values a ``where`` discards are not errors: ``where(z > 0, sqrt(z), 0)`` computes
``sqrt``'s gradient at ``z = 0`` (``0 / 0``) and ``log`` of the untaken branch, and the
where throws them away. A value is *guarded* when every use of it flows, through
elementwise ops, into a branch of a ``where`` (:func:`guarded_nodes`, a static fact of the
graph). A non-finite guarded value is held back; the where that reads it raises, naming the
op that made it, only if the non-finite elements reach its output. The generated code runs
guarded steps with NumPy's floating-point warnings off, so masked values print no warnings.

When the failing op was made by a rewrite pass (``log1p`` from the user's ``log(x + 1)``),
the message says which rewrite made it from which op of the user's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import GraphbpError, GraphError, NumericsError
from ..graph.node import Node
from ..graph.types import TensorType, format_shape


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


def guarded_nodes(order: Sequence[Node], roots: Iterable[Node]) -> set[Node]:
    """Nodes whose every use flows (through elementwise ops) into a branch of a ``where``:
    their non-finite elements may be discarded, so they are judged at the where."""
    from ..ops.elementwise import Where

    if not any(isinstance(n.op, Where) for n in order):
        return set()  # the common case: nothing is discarded, no user table to build
    users: dict[Node, list[Node]] = {}
    for n in order:
        for i in dict.fromkeys(n.inputs):
            users.setdefault(i, []).append(n)
    kept = set(roots)
    guarded: set[Node] = set()
    for n in reversed(order):
        us = users.get(n)
        if not us or n in kept or not n.inputs or not isinstance(n.type, TensorType) or n.dtype.kind != "f":
            continue
        if all((isinstance(u.op, Where) and u.inputs[0] is not n)
               or (u.op.elementwise and u in guarded and u.shape == n.shape) for u in us):
            guarded.add(n)
    return guarded


class Checker:
    """The per-value check the generated code calls under ``check_numerics=True``.

    ``checker(k, value, operands, ranges)`` checks the value just computed for ``order[k]``;
    ``ranges`` are the operands' ranges read before the op ran, given when the op writes
    into an operand's buffer. Held-back guarded values live in thread-local storage, so
    one program can run on several threads."""

    def __init__(self, order: Sequence[Node], roots: Iterable[Node], rewrite_log: Sequence[Any] = ()) -> None:
        self.order = list(order)
        self.guarded = guarded_nodes(self.order, roots)
        self.made_by = {e.after: e for e in rewrite_log if e.before}
        self._held = threading.local()

    @staticmethod
    def ranges(operands: Sequence[Any]) -> tuple[str, ...]:
        """The operands' dtype, shape and range, read now (before a buffer is overwritten)."""
        return tuple(_range(np.asarray(a)) for a in operands)

    def __call__(self, k: int, value: Any, operands: tuple = (), ranges: tuple | None = None) -> None:
        node = self.order[k]
        if isinstance(value, tuple):  # a multi-output node (scan, cond): each of its outputs
            for v in value:
                self(k, v, operands, ranges)
            return
        value = np.asarray(value)
        held = self._held.__dict__
        if node in self.guarded:
            if is_finite(value):
                held.pop(node, None)
            else:
                held[node] = self.describe(node, value, operands, ranges)
            return
        if is_finite(value):
            return
        first = self._first_held(node, held)
        if first is not None:
            raise NumericsError(f"{first}\n  not discarded by {node.op.name}"
                                + (f" built at {node.origin}" if node.origin else "")
                                + f", whose value is {_summary(value)}")
        raise NumericsError(self.describe(node, value, operands, ranges))

    def _first_held(self, node: Node, held: dict) -> str | None:
        """The message of the earliest held-back value feeding ``node`` through guarded ones."""
        index = {n: k for k, n in enumerate(self.order)}
        found: list[tuple[int, str]] = []
        stack, seen = [node], set()
        while stack:
            for i in stack.pop().inputs:
                if i in self.guarded and i not in seen:
                    seen.add(i)
                    if i in held:
                        found.append((index.get(i, 0), held[i]))
                    stack.append(i)
        return min(found)[1] if found else None

    def describe(self, node: Node, value: np.ndarray, operands: Sequence[Any], ranges: tuple | None) -> str:
        text = describe_nonfinite(node, value, operands, ranges)
        entry = self.made_by.get(node)
        if entry is not None:
            src = entry.before[0]
            where = f" built at {src.origin}" if src.origin else ""
            text = text.replace("\n", f"\n  {node.op.name} was made by the rewrite [{entry.pass_name}] {entry.rule} "
                                      f"from your {src.op.name}({', '.join(i.op.name for i in src.inputs)}){where}\n", 1)
        return text


def check_value(node: Node, value: np.ndarray, operands: Sequence[np.ndarray] = ()) -> None:
    """Raise :class:`NumericsError` if ``value`` (just computed for ``node``) is not finite."""
    if not is_finite(value):
        raise NumericsError(describe_nonfinite(node, value, operands))


def describe_nonfinite(node: Node, value: np.ndarray, operands: Sequence[np.ndarray],
                       ranges: Sequence[str] | None = None) -> str:
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
    described = ranges if ranges is not None else [_range(np.asarray(a)) for a in operands]
    for inp, desc in zip(node.inputs, described):
        lines.append(f"  operand {inp.name or inp.op.name}: {desc}")
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
