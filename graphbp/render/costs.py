"""Static cost estimates for diagrams and ``explain``: bytes, FLOPs and peak live memory.

Shapes may have unknown (``None``) dims, usually the batch. Rather than inventing a size,
every quantity is kept as a polynomial in one symbol, "a row" (one unit of an unknown dim):
``f32(?, 128)`` is 512 B/row, ``f32(128, 10)`` is 5 KiB, and their sum prints as both.
Several unknown dims are all taken to be the same symbol (an approximation the text says).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..graph.node import Node
from ..graph.cost import Poly, bytes_poly, format_bytes, human, size_poly  # noqa: F401 - re-exported

# The batch size at which two polynomials are compared when a peak must be chosen and the
# caller gave none: large enough that per-row terms dominate, as they do in training.
REFERENCE_ROWS = 64


def flops(node: Node) -> Poly:
    """A rough FLOP count, as the op prices itself (:meth:`graphbp.ops.base.Op.flops`)."""
    return node.op.flops(tuple(i.type for i in node.inputs), node.type)


def total_flops(nodes: Iterable[Node]) -> Poly:
    total = Poly()
    for n in nodes:
        total = total + flops(n)
    return total


@dataclass(frozen=True)
class Liveness:
    """Peak of the activations alive at once when the schedules run in order.

    ``peak`` is the live bytes at step ``peak_step`` (an index into the run order), chosen by
    comparing steps at ``rows`` rows. Leaves (inputs, parameters, constants) are not counted:
    they live outside the program's buffers.
    """

    peak: Poly
    peak_step: int
    peak_node: Node | None
    rows: int


def liveness_peak(run: Sequence[Node], keep: Iterable[Node], rows: int | None = None) -> Liveness:
    """Walk ``run`` (forward then backward nodes); a value lives from its step to its last
    read, or to the end when it is in ``keep`` (program outputs and update values)."""
    rows = REFERENCE_ROWS if rows is None else rows
    step = {n: i for i, n in enumerate(run)}
    last = dict(step)
    end = len(run)
    for i, n in enumerate(run):
        for x in n.inputs:
            if x in step:
                last[x] = i
    for k in keep:
        if k in step:
            last[k] = end
    frees: dict[int, list[Node]] = {}
    for n, i in last.items():
        frees.setdefault(i, []).append(n)
    live = Poly()
    best, best_step, best_node = Poly(), -1, None
    for i, n in enumerate(run):
        live = live + bytes_poly(n.type)
        if live.at(rows) > best.at(rows):
            best, best_step, best_node = live, i, n
        for dead in frees.get(i, ()):
            live = live - bytes_poly(dead.type)
    return Liveness(best, best_step, best_node, rows)
