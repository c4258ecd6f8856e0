"""Collectives: ops whose value depends on every process of a group, not just this one.

``AllreduceMean`` averages its operand elementwise over the ranks of a process group. It
is an ordinary op in the gradient graph (drawn, explained and saved like any other), but
running it is an effect: every rank must run the same allreduces in the same order, so
passes never fold, merge (CSE), drop or reorder it (``effectful = True``).

The op names its group by a string rather than holding a communicator object, so graph
files stay plain data: ``"self"`` is the one-process group (the mean of one value: a copy,
no MPI needed) and ``"world"`` is every process of the MPI job
(:func:`graphbp.distributed.world`), resolved when the op runs in the loading process.

``AllreduceStart`` and ``AllreduceWait`` are the same mean split in two, so the
communication can overlap the rest of the backward pass: the start launches a
nonblocking allreduce of ``x`` into its own output buffer and returns at once; the wait
completes it (``wait(start(x), x)`` is ``allreduce_mean(x)``). The wait reads ``x`` too,
although it computes nothing from it: MPI reads the send buffer until the collective
completes, and that operand keeps the memory plan from reusing the buffer before then.
Their ``schedule`` facts (``"early"``, ``"late"``) let the scheduler start each allreduce
as soon as its bucket is ready and wait as late as its readers allow
(``graphbp.runtime.overlap``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType
from .base import Op, apply, dtype_error, shape_error

GROUPS = ("self", "world")
"""The process groups an :class:`AllreduceMean` can name."""


@dataclasses.dataclass(frozen=True)
class AllreduceMean(Op):
    """The elementwise mean of ``x`` over the ranks of ``group``, the same on every rank.

    The mean is linear and every rank receives the same result, so for a total loss that
    is the mean of the ranks' losses its VJP is itself: each rank's cotangent is the mean
    of every rank's output cotangent.
    """

    name: ClassVar[str] = "allreduce_mean"
    effectful: ClassVar[bool] = True
    vjp_formula: ClassVar[str] = "allreduce_mean(g): the mean over ranks is linear and shared, its VJP is itself"
    group: str

    def __post_init__(self) -> None:
        _check_group(self.name, self.group)

    def infer(self, x: TensorType) -> TensorType:
        return _float_operand(x)

    def compute(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        from ..distributed.comm import communicator  # resolved where it runs: MPI loads lazily

        return communicator(self.group).allreduce_mean(x, out)

    def vjp(self, node: Node, g: Node) -> tuple[Node]:
        return (allreduce_mean(g, self.group),)


@dataclasses.dataclass(frozen=True)
class AllreduceStart(Op):
    """Launch the mean of ``x`` over ``group`` without waiting for it (see the module
    docstring). Its value, once :class:`AllreduceWait` has run, is the mean; only the wait
    may read it (the executor's buffer is still being written until then)."""

    name: ClassVar[str] = "allreduce_start"
    effectful: ClassVar[bool] = True
    schedule: ClassVar[str] = "early"
    vjp_formula: ClassVar[str] = "allreduce_mean(g): the started mean is the mean"
    group: str

    def __post_init__(self) -> None:
        _check_group(self.name, self.group)

    def infer(self, x: TensorType) -> TensorType:
        return _float_operand(x)

    def compute(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        from ..distributed.comm import communicator

        return communicator(self.group).start_allreduce_mean(x, out)

    def vjp(self, node: Node, g: Node) -> tuple[Node]:
        return (allreduce_mean(g, self.group),)


@dataclasses.dataclass(frozen=True)
class AllreduceWait(Op):
    """Complete the allreduce :class:`AllreduceStart` launched into ``started`` (in place)
    and return the mean. ``sent`` is the start's operand, read only so that it stays
    alive (and unwritten) while MPI reads it."""

    name: ClassVar[str] = "allreduce_wait"
    effectful: ClassVar[bool] = True
    schedule: ClassVar[str] = "late"
    nondiff_inputs: ClassVar[tuple[int, ...]] = (1,)
    vjp_formula: ClassVar[str] = "g (to the started value; the send buffer gets none)"
    group: str

    def __post_init__(self) -> None:
        _check_group(self.name, self.group)

    def infer(self, started: TensorType, sent: TensorType) -> TensorType:
        if started.shape != sent.shape:
            raise shape_error(f"the started value {started} and the sent operand {sent} must have one shape")
        if started.dtype != sent.dtype:
            raise dtype_error(f"the started value {started} and the sent operand {sent} must have one dtype")
        return started

    def compute(self, started: np.ndarray, sent: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        from ..distributed.comm import communicator

        done = communicator(self.group).wait_allreduce_mean(started)
        if out is None or out is done:
            return done
        np.copyto(out, done)
        return out

    def vjp(self, node: Node, g: Node) -> tuple[Node, None]:
        return (g, None)


def _float_operand(x: TensorType) -> TensorType:
    if x.dtype.kind != "f":
        raise dtype_error(f"averaging over ranks needs a float operand, got {x.dtype}")
    return x


def _check_group(op: str, group: str) -> None:
    if group not in GROUPS:
        raise ValueError(f"{op}: group must be one of {GROUPS}, got {group!r}")


def allreduce_mean_overlapped(x: Node, group: str = "world", *, name: str | None = None) -> Node:
    """The mean of ``x`` over ``group`` as a start/wait pair the scheduler can spread
    apart, overlapping the communication with the work between them."""
    started = apply(AllreduceStart(group), x, name=None if name is None else f"{name}_start")
    return apply(AllreduceWait(group), started, x, name=name)


def allreduce_mean(x: Node, group: str = "world", *, name: str | None = None) -> Node:
    """One allreduce-mean node over ``group`` (see :func:`graphbp.distributed.allreduce_mean`
    for the bucketed form over a list of gradients)."""
    return apply(AllreduceMean(group), x, name=name)
