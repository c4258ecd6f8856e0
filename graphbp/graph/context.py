"""Build-time context: the name scope and the gradient provenance stamped on new nodes.

These are context variables, not a global graph: they only label nodes while a ``with``
block (``gb.scope``) or a gradient rule runs, and they are restored on exit, per thread.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .node import Node
    from .source import SourceLocation

Labels = tuple["SourceLocation | None", tuple[str, ...], tuple["Provenance", ...]]
"""What a node built now is labelled with: (origin, scope, provenance)."""

# One variable for the three labels: a pass enters a stamp per node it tries rules on, and
# every node reads them when built, so one set/reset/get instead of three each.
_LABELS: contextvars.ContextVar[Labels] = contextvars.ContextVar("graphbp_labels", default=(None, (), ()))


@dataclass(frozen=True, slots=True, eq=False)
class Provenance:
    """Why a gradient node exists.

    ``forward`` is the forward node whose rule produced it; ``rule`` is one of ``"vjp"``
    (the op's chain-rule rule, for input ``input_index``), ``"unbroadcast"`` (a broadcast
    operand's gradient summed back to its shape), ``"accumulate"`` (partial gradients from
    several consumers summed), ``"seed"`` (the initial cotangent), ``"zeros"`` (a ``wrt``
    the output does not depend on) or ``"remat"`` (a copy of ``forward`` recomputed in the
    backward schedule instead of saved, see ``graphbp/runtime/remat.py``).
    """

    forward: "Node"
    rule: str
    input_index: int | None = None

    def describe(self) -> str:
        op = self.forward.op.name
        if self.rule == "vjp":
            return f"vjp of {op}, input {self.input_index}"
        if self.rule == "unbroadcast":
            return f"unbroadcast to input {self.input_index} of {op}"
        if self.rule == "accumulate":
            return f"accumulate gradient of {op}"
        if self.rule == "remat":
            return f"recomputed {op} (not saved)"
        return f"{self.rule} for {op}"


CHECKPOINT_SCOPE = "@checkpoint"
"""The scope component :func:`checkpoint` adds (``@`` keeps it apart from user scope names)."""


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
    """Group the nodes built inside the block under ``name`` (nested scopes join with ``/``)."""
    if not name or "/" in name or name.startswith("@"):
        raise ValueError(f"scope name must be non-empty and contain no '/' nor a leading '@', got {name!r}")
    origin, path, prov = _LABELS.get()
    token = _LABELS.set((origin, path + (name,), prov))
    try:
        yield
    finally:
        _LABELS.reset(token)


@contextlib.contextmanager
def checkpoint() -> Iterator[None]:
    """Recompute the nodes built inside the block in the backward pass instead of saving them
    (like ``jax.checkpoint``): only the region's inputs are kept for the backward pass.

    The mark is a scope component (:data:`CHECKPOINT_SCOPE`), so it survives the rewrite
    passes, graph files and drawings (the region draws as a cluster) like any scope; the
    runtime's rematerialisation (``graphbp/runtime/remat.py``) reads it."""
    origin, path, prov = _LABELS.get()
    token = _LABELS.set((origin, path + (CHECKPOINT_SCOPE,), prov))
    try:
        yield
    finally:
        _LABELS.reset(token)


@contextlib.contextmanager
def provenance(*records: Provenance) -> Iterator[None]:
    """Stamp ``records`` on every node built inside the block (used by the autodiff pass)."""
    origin, path, _ = _LABELS.get()
    token = _LABELS.set((origin, path, tuple(records)))
    try:
        yield
    finally:
        _LABELS.reset(token)


@contextlib.contextmanager
def scope_path(path: tuple[str, ...]) -> Iterator[None]:
    """Set the whole scope path (gradient nodes inherit their forward node's scope)."""
    origin, _, prov = _LABELS.get()
    token = _LABELS.set((origin, tuple(path), prov))
    try:
        yield
    finally:
        _LABELS.reset(token)


class stamp:  # noqa: N801 - used like the function-style context managers beside it
    """Build nodes as if at ``origin`` in ``scope`` with ``provenance`` (``None`` leaves each as is).

    Passes and autodiff use it so the nodes they make carry the user's line, scope and
    provenance from construction on: nodes are never edited after they are built. A class
    rather than a generator: the rewrite engine enters one per node it tries rules on."""

    __slots__ = ("_origin", "_scope", "_provenance", "_token")

    def __init__(self, *, origin: "SourceLocation | None" = None, scope: tuple[str, ...] | None = None,
                 provenance: tuple[Provenance, ...] | None = None) -> None:
        self._origin = origin
        self._scope = None if scope is None else tuple(scope)
        self._provenance = None if provenance is None else tuple(provenance)

    def __enter__(self) -> None:
        origin, path, prov = _LABELS.get()
        self._token = _LABELS.set((origin if self._origin is None else self._origin,
                                   path if self._scope is None else self._scope,
                                   prov if self._provenance is None else self._provenance))

    def __exit__(self, *exc: object) -> None:
        _LABELS.reset(self._token)


set_labels = _LABELS.set
"""``set_labels((origin, scope, provenance))``: label the nodes built from now on with exactly
these, until ``reset_labels(token)``. :class:`stamp` for a caller that sets all three for
each node it visits (the rewrite engine), without a context-manager object per node."""

reset_labels = _LABELS.reset


def current_origin() -> "SourceLocation | None":
    """The origin :func:`stamp` set, or ``None`` (then the caller's user line is used)."""
    return _LABELS.get()[0]


def current_scope() -> tuple[str, ...]:
    return _LABELS.get()[1]


def current_provenance() -> tuple[Provenance, ...]:
    return _LABELS.get()[2]


def current_labels() -> Labels:
    """(origin, scope, provenance) as :func:`current_origin` and the others give them, at once."""
    return _LABELS.get()
