"""Buffer allocation for one planned step list, given its :class:`~.liveness.Liveness`.

A greedy scan in step order gives each ``out`` value a buffer: the buffer of an operand
that dies right here when the lowering allows writing over it (in place), else the
best-fitting free buffer, else a new one. Buffers return to the pool after their root's
last use; a lowering's scratch buffers are taken after its output and released right
after the step. Outputs get a fresh array per call (``fresh``): the caller keeps them.
The scan also measures the live bytes of each schedule (the memory report's peaks).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..graph.node import Node
from ..graph.types import TensorType
from ..ops.leaves import Constant, Param
from .liveness import Liveness

if TYPE_CHECKING:
    from .plan import Step


SMALL_BYTES = 8
"""Values this small (scalars: a loss, a seed times a coefficient) get a buffer of their own.
Sharing one saves nothing, and it would pin the order of the small steps around a merged
forward/backward loop (``blocking.plan_merge`` hoists them; a shared buffer can forbid it)."""


def nbytes(t: TensorType) -> int:
    return int(t.nbytes() or 0)  # a multi-output value's TupleType sums its items


@dataclasses.dataclass
class Allocation:
    """Where each value lives.

    Attributes
    ----------
    buffer_of : dict[Node, int]
        The buffer of each planned ``out`` value (outputs excluded).
    sizes : list[int]
        Bytes of each buffer.
    fresh : set[Node]
        ``out`` values written into a new array per call (the program's outputs).
    temp_buffers : dict[Node, list[int]]
        The scratch buffers of each step's lowering.
    static : dict[Node, bool]
        Values whose array is fixed for the plan's lifetime (parameters, constants,
        planned buffers, plan-time constants and views of them); the rest are per call.
    forward_peak, backward_peak, naive, n_inplace : int
        For the memory report.
    """

    buffer_of: dict[Node, int]
    sizes: list[int]
    fresh: set[Node]
    temp_buffers: dict[Node, list[int]]
    static: dict[Node, bool]
    forward_peak: int
    backward_peak: int
    naive: int
    n_inplace: int


def allocate(steps: Sequence[Step], n_forward: int, types: dict[Node, TensorType], live: Liveness,
             outputs: set[Node]) -> Allocation:
    """Give buffers to the ``out`` values of ``steps`` (the first ``n_forward`` are forward)."""
    holds, death = live.holds, live.death
    static: dict[Node, bool] = {v: True for v in holds if not v.inputs and isinstance(v.op, (Param, Constant))}
    buffer_of: dict[Node, int] = {}
    sizes: list[int] = []
    free = _Pool()
    private: set[int] = set()
    fresh: set[Node] = set()
    temp_buffers: dict[Node, list[int]] = {}
    dying: dict[int, list[Node]] = {}
    for r, s in death.items():
        dying.setdefault(s, []).append(r)
    live_bytes = 0
    live_size: dict[Node, int] = {}  # computed values alive now -> their bytes
    fwd_peak = bwd_peak = n_inplace = naive = 0
    # one step is a few microseconds of the first call of a deep graph: names bound once,
    # byte counts once per type object (nodes of one shape share one)
    buffer_get, death_get, static_get, dying_get, holds_get = (
        buffer_of.get, death.get, static.get, dying.get, holds.get)
    type_bytes: dict[int, int] = {}
    for s, st in enumerate(steps):
        n, low = st.node, st.low
        kind = low.kind
        if kind == "out" and not st.deferred:
            t = types[n]
            size = type_bytes.get(id(t))
            if size is None:
                size = type_bytes[id(t)] = nbytes(t)
            naive += size
            if n in outputs:
                fresh.add(n)
                static[n] = False
            else:
                buf = None
                for k in low.inplace:
                    x = n.inputs[k]
                    b = buffer_get(x)
                    h = holds_get(x)  # x must hold only its own storage (no view or fallback result shares it)
                    if b is not None and b >= 0 and death_get(x) == s and (not h or (len(h) == 1 and x in h)):
                        buf = b
                        buffer_of[x] = -1 - buf  # transferred: not released when x dies
                        n_inplace += 1
                        break
                if buf is None and size <= SMALL_BYTES:
                    sizes.append(size)  # private: never pooled (see SMALL_BYTES)
                    buf = len(sizes) - 1
                    private.add(buf)
                elif buf is None:
                    buf = free.take(sizes, size)
                if sizes[buf] < size:
                    sizes[buf] = size
                buffer_of[n] = buf
                static[n] = True
            live_size[n] = size
            live_bytes += size
        elif kind == "out":
            static[n] = True  # a deferred update: written into its parameter
        elif kind == "call":
            t = types[n]
            size = type_bytes.get(id(t))
            if size is None:
                size = type_bytes[id(t)] = nbytes(t)
            naive += size
            live_size[n] = size
            live_bytes += size
        elif kind == "const":
            static[n] = True
        elif kind == "view":
            static[n] = all([static_get(r, False) for r in holds_get(n) or (n,)])
        scratch = None
        if low.temps:
            scratch = temp_buffers[n] = []
            for t in low.temps:
                tn = nbytes(t)
                tb = free.take(sizes, tn)
                if sizes[tb] < tn:
                    sizes[tb] = tn
                scratch.append(tb)
                live_bytes += tn
        if s < n_forward:
            if live_bytes > fwd_peak:
                fwd_peak = live_bytes
        elif live_bytes > bwd_peak:
            bwd_peak = live_bytes
        if scratch:
            for tb, t in zip(scratch, low.temps):
                free.put(tb, sizes[tb])
                live_bytes -= nbytes(t)
        gone = dying_get(s)
        if gone:
            for r in gone:
                size = live_size.pop(r, None)
                if size is not None:
                    live_bytes -= size
                b = buffer_get(r)
                if b is not None and b >= 0 and b not in private:
                    free.put(b, sizes[b])
    for n in holds:
        if n not in static:
            static[n] = False
    for n, b in buffer_of.items():
        if b < 0:
            buffer_of[n] = -1 - b
    return Allocation(buffer_of, sizes, fresh, temp_buffers, static, fwd_peak, bwd_peak, naive, n_inplace)


class _Pool:
    """Free buffers by size: best fit in O(log n) (deep chains free thousands of them)."""

    def __init__(self) -> None:
        self.by_size: dict[int, list[int]] = {}
        self.sizes_sorted: list[int] = []

    def put(self, buf: int, size: int) -> None:
        lst = self.by_size.get(size)
        if lst is None:
            lst = self.by_size[size] = []
            bisect.insort(self.sizes_sorted, size)
        lst.append(buf)

    def take(self, sizes: list[int], need: int) -> int:
        """The smallest free buffer holding ``need`` bytes, else the largest (grown), else new."""
        if self.sizes_sorted:
            i = bisect.bisect_left(self.sizes_sorted, need)
            size = self.sizes_sorted[i] if i < len(self.sizes_sorted) else self.sizes_sorted[-1]
            lst = self.by_size[size]
            buf = lst.pop()
            if not lst:
                del self.by_size[size]
                self.sizes_sorted.remove(size)
            return buf
        sizes.append(0)
        return len(sizes) - 1
