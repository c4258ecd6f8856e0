"""Collectives: ops whose value depends on every process of a group, not just this one.

``AllreduceMean`` averages its operand elementwise over the ranks of a process group. It
is an ordinary op in the gradient graph (drawn, explained and saved like any other), but
running it is an effect: every rank must run the same allreduces in the same order, so
passes never fold, merge (CSE), drop or reorder it (``effectful = True``).

The op names its group by a string rather than holding a communicator object, so graph
files stay plain data: ``"self"`` is the one-process group (the mean of one value: a copy,
no MPI needed) and ``"world"`` is every process of the MPI job
(:func:`graphbp.distributed.world`), resolved when the op runs in the loading process.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType
from .base import Op, apply, dtype_error

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
        if self.group not in GROUPS:
            raise ValueError(f"allreduce_mean: group must be one of {GROUPS}, got {self.group!r}")

    def infer(self, x: TensorType) -> TensorType:
        if x.dtype.kind != "f":
            raise dtype_error(f"averaging over ranks needs a float operand, got {x.dtype}")
        return x

    def compute(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        from ..distributed.comm import communicator  # resolved where it runs: MPI loads lazily

        return communicator(self.group).allreduce_mean(x, out)

    def vjp(self, node: Node, g: Node) -> tuple[Node]:
        return (allreduce_mean(g, self.group),)


def allreduce_mean(x: Node, group: str = "world", *, name: str | None = None) -> Node:
    """One allreduce-mean node over ``group`` (see :func:`graphbp.distributed.allreduce_mean`
    for the bucketed form over a list of gradients)."""
    return apply(AllreduceMean(group), x, name=name)
