"""The static memory plan of one shape signature: liveness, buffer reuse, in-place updates.

Planning walks the step list (forward schedule, then backward, then the parameter updates
that can be written in place) once per feed-shape signature:

1. every node is lowered (:mod:`.lowering`) to an ``out``/``view``/``const``/``call`` kind;
2. each value records the *storage roots* it keeps alive: itself, or for a view the roots of
   its operand, or for a fallback ``call`` (which may return a view) itself plus its operands';
3. a root dies at the last step that reads any value holding it (outputs and update values
   live to the end; activations the backward reads live into the backward schedule);
4. a greedy scan gives each ``out`` value a buffer: the buffer of an operand that dies right
   here when the op is elementwise over equal shapes (in place), else the best-fitting free
   buffer, else a new one. Buffers return to the pool after their root's last use.

Buffers are raw byte arrays allocated once per signature; each value is a typed view of
one, built once, so a steady-state call allocates nothing but the (small) outputs.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType
from ..ops.leaves import Constant, Input, Param
from .lowering import Lowered, lower


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Byte counts of one shape signature's plan (see :meth:`Program.memory_plan`).

    Attributes
    ----------
    signature : tuple
        The feed shapes the plan is for.
    forward_peak, backward_peak : int
        Largest total size of computed values alive at once during each schedule (saved
        activations count in both).
    saved : int
        Bytes of forward values kept alive for the backward schedule.
    buffers : int
        Bytes of the preallocated buffers (values share them when their lifetimes do not
        overlap); per-call outputs and fallback results are not included.
    naive : int
        Bytes an interpreter keeping every computed value would hold.
    n_buffers, n_inplace, n_values : int
        Buffer count, values written over a dying operand, computed values.
    """

    signature: tuple
    forward_peak: int
    backward_peak: int
    saved: int
    buffers: int
    naive: int
    n_buffers: int
    n_inplace: int
    n_values: int

    def __str__(self) -> str:
        mib = 1 << 20
        return (
            f"memory plan for {self.signature}: forward peak {self.forward_peak / mib:.2f} MiB, "
            f"backward peak {self.backward_peak / mib:.2f} MiB, saved for backward "
            f"{self.saved / mib:.2f} MiB; {self.n_buffers} buffers, {self.buffers / mib:.2f} MiB "
            f"(naive {self.naive / mib:.2f} MiB), {self.n_inplace} in-place of {self.n_values} values"
        )


@dataclasses.dataclass
class Step:
    node: Node
    low: Lowered
    deferred: bool = False  # a parameter update written straight into the parameter


@dataclasses.dataclass
class Planned:
    """Everything code generation needs: steps, storage decisions and the memory report."""

    steps: list[Step]
    n_forward: int
    types: dict[Node, TensorType]
    holds: dict[Node, frozenset]
    last: dict[Node, int]
    static: dict[Node, bool]
    buffer_of: dict[Node, int]
    buffer_sizes: list[int]
    fresh_outputs: set[Node]
    temp_buffers: dict[Node, list[int]]
    deferred_param: dict[Node, Node]
    report: MemoryPlan

    @functools.cached_property
    def viewed(self) -> frozenset:
        """Storage roots some other value (a view, a fallback result) also holds."""
        return frozenset(r for u, h in self.holds.items() for r in h if r is not u)


def _nbytes(t: TensorType) -> int:
    return int(t.nbytes() or 0)  # a multi-output value's TupleType sums its items


def make_plan(
    forward: Sequence[Node],
    backward: Sequence[Node],
    outputs: Sequence[Node],
    updates: Sequence[tuple[Node, Node]],
    types: dict[Node, TensorType],
    signature: tuple,
    *,
    allow_deferred: bool = True,
    fold_constants: bool = True,
) -> Planned:
    """Lower, order and allocate the steps of one shape signature.

    With ``fold_constants``, a small op whose operands are all constants (a scale such as
    ``1 / batch`` built from a plan-time count) is computed once here instead of per call."""
    lows: dict[Node, Lowered] = {}
    keep = set(outputs) | {v for _, v in updates}  # returned or committed: stay computed
    contiguous: dict[Node, bool] = {}
    for n in list(forward) + list(backward):
        in_types = [types[i] for i in n.inputs]
        low = lower(n, in_types, types[n])
        if fold_constants and low.kind == "out" and n.inputs and n not in keep:
            low = _fold(n, lows, types[n]) or low
        if n.op.__class__.__name__ == "Reshape" and low.kind == "view" and not _contig(n.inputs[0], contiguous):
            low = Lowered("call", low.emit)  # may copy: evaluate per call, keep the operand alive
        lows[n] = low
        contiguous[n] = low.kind == "out" or (low.kind == "const" and bool(low.value.flags.c_contiguous)) or (
            low.kind == "view" and _contig(n.inputs[0], contiguous)
                                              and n.op.__class__.__name__ != "Transpose"
                                              and types[n].shape == types[n.inputs[0]].shape)

    holds: dict[Node, frozenset] = {}

    def holds_of(v: Node) -> frozenset:
        h = holds.get(v)
        if h is None:  # a leaf
            h = holds[v] = frozenset((v,))
        return h

    for n in list(forward) + list(backward):
        low = lows[n]
        if low.kind == "view":
            holds[n] = holds_of(n.inputs[0])
        elif low.kind == "call":
            holds[n] = frozenset((n,)).union(*(holds_of(i) for i in n.inputs))
        else:
            holds[n] = frozenset((n,))

    # Parameter updates that can be computed straight into the parameter, after all else.
    out_set = set(outputs)
    updated = {p for p, _ in updates}
    readers: dict[Node, int] = {}
    for n in list(forward) + list(backward):
        for i in n.inputs:
            readers[i] = readers.get(i, 0) + 1
    value_count: dict[Node, int] = {}
    for _, v in updates:
        value_count[v] = value_count.get(v, 0) + 1
    deferred: dict[Node, Node] = {}
    if allow_deferred:
        for p, v in updates:
            low = lows.get(v)
            if (low is None or low.kind != "out" or v in out_set or readers.get(v) or value_count[v] > 1
                    or types[v].shape != p.shape or types[v].dtype != p.dtype):
                continue
            if any(i is p for i in v.inputs) and not any(v.inputs[k] is p for k in low.inplace):
                continue  # p is read in a way that is unsafe to overwrite
            if any(r in updated and r is not p for i in v.inputs for r in holds_of(i)):
                continue  # reads another parameter that is updated too
            deferred[v] = p
    steps = [Step(n, lows[n]) for n in forward if n not in deferred]
    n_forward = len(steps)
    steps += [Step(n, lows[n]) for n in backward if n not in deferred]
    steps += [Step(n, lows[n], deferred=True) for n in list(forward) + list(backward) if n in deferred]

    end = len(steps)
    last: dict[Node, int] = {}
    for s, st in enumerate(steps):
        last.setdefault(st.node, s)
        for i in st.node.inputs:
            last[i] = s
    for v in list(outputs) + [v for _, v in updates]:
        last[v] = end
    death: dict[Node, int] = {}
    for v, s in last.items():
        for r in holds_of(v):
            death[r] = max(death.get(r, -1), s)

    static: dict[Node, bool] = {}
    for v in holds:
        if not v.inputs and v in holds and isinstance(v.op, (Param, Constant)):
            static[v] = True
    buffer_of: dict[Node, int] = {}
    sizes: list[int] = []
    free = _Pool()
    fresh: set[Node] = set()
    temp_buffers: dict[Node, list[int]] = {}
    dying: dict[int, list[Node]] = {}
    for r, s in death.items():
        dying.setdefault(s, []).append(r)
    live = 0
    live_set: set[Node] = set()
    fwd_peak = bwd_peak = 0
    n_inplace = 0
    naive = 0
    for s, st in enumerate(steps):
        n, low = st.node, st.low
        size = _nbytes(types[n])
        if low.kind == "out" and not st.deferred:
            naive += size
            if n in out_set:
                fresh.add(n)
            else:
                buf = None
                for k in low.inplace:
                    x = n.inputs[k]
                    if (x in buffer_of and holds_of(x) == frozenset((x,)) and death.get(x) == s
                            and buffer_of[x] >= 0):
                        buf = buffer_of[x]
                        buffer_of[x] = -1 - buf  # transferred: not released when x dies
                        n_inplace += 1
                        break
                if buf is None:
                    buf = free.take(sizes, size)
                sizes[buf] = max(sizes[buf], size)
                buffer_of[n] = buf
            live_set.add(n)
            live += size
        elif low.kind == "call":
            naive += size
            live_set.add(n)
            live += size
        elif low.kind == "const":
            static[n] = True
        scratch = []
        for t in low.temps:  # taken after the output, released right after this step
            tb = free.take(sizes, _nbytes(t))
            sizes[tb] = max(sizes[tb], _nbytes(t))
            scratch.append(tb)
            live += _nbytes(t)
        temp_buffers[n] = scratch
        if low.kind == "view":
            static[n] = all(static.get(r, False) for r in holds_of(n))
        elif low.kind == "out":
            static[n] = n not in fresh
        if s < n_forward:
            fwd_peak = max(fwd_peak, live)
        else:
            bwd_peak = max(bwd_peak, live)
        for tb, t in zip(temp_buffers.get(n, ()), low.temps):
            free.put(tb, sizes[tb])
            live -= _nbytes(t)
        for r in dying.get(s, ()):
            if r in live_set:
                live_set.discard(r)
                live -= _nbytes(types[r])
            b = buffer_of.get(r)
            if b is not None and b >= 0:
                free.put(b, sizes[b])
    for n in holds:
        static.setdefault(n, False)
    saved_roots = set()
    bwd_nodes = {st.node for st in steps[n_forward:]}
    for st in steps[n_forward:]:
        for i in st.node.inputs:
            if i not in bwd_nodes and i.inputs:
                saved_roots |= {r for r in holds_of(i) if r.inputs}
    report = MemoryPlan(
        signature=signature,
        forward_peak=fwd_peak,
        backward_peak=bwd_peak,
        saved=sum(_nbytes(types[r]) for r in saved_roots),
        buffers=sum(sizes),
        naive=naive,
        n_buffers=len(sizes),
        n_inplace=n_inplace,
        n_values=len(steps),
    )
    for n, b in list(buffer_of.items()):
        if b < 0:
            buffer_of[n] = -1 - b
    return Planned(steps, n_forward, types, holds, last, static, buffer_of, sizes, fresh, temp_buffers, deferred,
                   report)


#: Largest constant-operand result (elements) folded at plan time; bigger ones stay per call.
FOLD_MAX_SIZE = 4096


def _fold(n: Node, lows: dict[Node, Lowered], t: TensorType) -> Lowered | None:
    """``n`` computed now when every operand is a constant (leaf or folded), else None."""
    values = []
    for i in n.inputs:
        low = lows.get(i)
        if low is not None and low.kind == "const":
            values.append(low.value)
        elif not i.inputs and isinstance(i.op, Constant):
            values.append(i.op.value)
        else:
            return None
    size = t.size()
    if size is None or size > FOLD_MAX_SIZE:
        return None
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(n.op.compute(*values))
    except Exception:  # the kernel rejects these values: leave the failure to the call
        return None
    if value.shape != t.shape or value.dtype != t.dtype:
        return None
    value = np.array(value)  # own, contiguous, never written
    value.setflags(write=False)
    return Lowered("const", value=value)


def _contig(v: Node, known: dict[Node, bool]) -> bool:
    if v in known:
        return known[v]
    if isinstance(v.op, (Param, Constant)):
        return bool(v.op.value.flags.c_contiguous)
    return False  # feeds may be any strided array


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


def materialize(plan: Planned, names: dict[Node, str]) -> dict[str, np.ndarray]:
    """Allocate the buffers and build every static value (typed buffer views, parameter and
    constant arrays, precomputed views) under its generated name."""
    raw = [np.empty(max(n, 1), np.uint8) for n in plan.buffer_sizes]
    arrays: dict[Node, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    for st in plan.steps:
        for i in st.node.inputs:
            if i not in arrays and not i.inputs and isinstance(i.op, (Param, Constant)):
                arrays[i] = i.op.value
        n, low = st.node, st.low
        t = plan.types[n]
        for j, (tb, tt) in enumerate(zip(plan.temp_buffers.get(n, ()), low.temps)):
            out[f"{names[n]}_t{j}"] = raw[tb][: _nbytes(tt)].view(tt.dtype).reshape(tt.shape)
        if st.deferred:
            continue
        if low.kind == "const":
            arrays[n] = low.value
        elif low.kind == "out" and n in plan.buffer_of:
            b = raw[plan.buffer_of[n]]
            arrays[n] = b[: _nbytes(t)].view(t.dtype).reshape(t.shape)
        elif low.kind == "view" and plan.static[n]:
            arrays[n] = low.view(arrays[n.inputs[0]])
        else:
            continue
        out[names[n]] = arrays[n]
    return out


def is_feed(v: Node) -> bool:
    return isinstance(v.op, Input)
