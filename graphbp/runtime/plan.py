"""The static memory plan of one shape signature: lowering, liveness, allocation.

Planning walks the step list (forward schedule, then backward, then the parameter updates
that can be written in place) once per feed-shape signature:

1. every node is lowered (:mod:`.lowering`) to an ``out``/``view``/``const``/``call`` kind
   (:func:`lower_all`; small ops on constants fold to plan-time constants);
2. update values that can be written straight into their parameter are placed as early as
   their operands and the parameter's last reader allow (:func:`deferred_updates`,
   :func:`place_updates`), so each gradient dies once its update is written;
3. :mod:`.liveness` finds the storage roots each value holds and the step each root dies;
4. :mod:`.allocate` gives buffers to the ``out`` values, in place over dying operands where
   the lowering allows it.

Buffers are raw byte arrays allocated once per signature; each value is a typed view of
one, built once, so a steady-state call allocates nothing but the (small) outputs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from ..graph.cost import bytes_poly
from ..graph.node import Node
from ..graph.types import TensorType
from ..ops.leaves import Constant, Input, Param
from .allocate import allocate, nbytes
from .liveness import liveness, storage_roots
from .lowering import Lowered, lower
from .options import DEFAULT, RuntimeOptions
from .schedule import Partition, data_inputs


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
    saved_before : int or None
        With rematerialisation: bytes the backward would keep without it (``saved`` is after).
    recomputed, recompute_flops : int
        Values the backward recomputes instead of reading saved, and their FLOPs.
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
    saved_before: int | None = None
    recomputed: int = 0
    recompute_flops: int = 0

    def with_remat(self, report, types: dict[Node, TensorType]) -> MemoryPlan:
        """This plan with the rematerialisation figures of ``report`` (a ``RematReport``) at
        the plan's concrete types."""
        if report is None or not report.recomputed:
            return self
        before = sum(nbytes(types[n]) if n in types else bytes_poly(n.type).at(report.reference_rows)
                     for n in report.saved_nodes_before)  # a value dropped from the plan: no type here
        flops = sum(c.op.flops([types[i] for i in c.inputs], types[c]).at(1) for c in report.recomputed)
        return dataclasses.replace(self, saved_before=before, recomputed=len(report.recomputed),
                                   recompute_flops=flops)

    def __str__(self) -> str:
        mib = 1 << 20
        return (
            f"memory plan for {self.signature}: forward peak {self.forward_peak / mib:.2f} MiB, "
            f"backward peak {self.backward_peak / mib:.2f} MiB, saved for backward "
            f"{self.saved / mib:.2f} MiB; {self.n_buffers} buffers, {self.buffers / mib:.2f} MiB "
            f"(naive {self.naive / mib:.2f} MiB), {self.n_inplace} in-place of {self.n_values} values"
        ) + ("" if self.saved_before is None else (
            f"; remat: saved {self.saved_before / mib:.2f} -> {self.saved / mib:.2f} MiB, "
            f"{self.recomputed} values recomputed ({self.recompute_flops / 1e6:.3g} MFLOP)"))


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
    options: RuntimeOptions = DEFAULT

    @functools.cached_property
    def viewed(self) -> frozenset:
        """Storage roots some other value (a view, a fallback result) also holds."""
        return frozenset(r for u, h in self.holds.items() for r in h if r is not u)


def make_plan(
    partition: Partition,
    outputs: Sequence[Node],
    updates: Sequence[tuple[Node, Node]],
    types: dict[Node, TensorType],
    signature: tuple,
    *,
    allow_deferred: bool = True,
    fold_constants: bool = True,
    options: RuntimeOptions = DEFAULT,
) -> Planned:
    """Lower, order and allocate the steps of one shape signature: the partition's forward
    nodes, then its backward nodes with the deferred parameter updates placed among them.

    With ``fold_constants``, a small op whose operands are all constants (a scale such as
    ``1 / batch`` built from a plan-time count) is computed once here instead of per call."""
    keep = set(outputs) | {v for _, v in updates}  # returned or committed: stay computed
    forward, backward = partition.forward, partition.backward
    lows = lower_all(list(forward) + list(backward), types, keep, options.fold_max_size if fold_constants else None)
    every = [Step(n, low) for n, low in lows.items()]  # forward, then backward
    # what each value holds depends on its lowering, not on where its step lands: found once
    holds = storage_roots(every)
    deferred = deferred_updates(lows, outputs, updates, types, holds) if allow_deferred else {}
    if deferred:
        steps = [st for st in every if st.node not in deferred]
        n_forward = sum(1 for n in forward if n not in deferred)
        steps = place_updates(steps, n_forward, [Step(n, low, deferred=True) for n, low in lows.items()
                                                 if n in deferred], deferred, keep, holds)
    else:
        steps, n_forward = every, len(forward)
    live = liveness(steps, keep, holds)
    alloc = allocate(steps, n_forward, types, live, set(outputs))
    bwd_nodes = {st.node for st in steps[n_forward:]}
    saved = set()  # forward values the backward reads
    for st in steps[n_forward:]:
        if st.low.kind == "const":
            continue
        n = st.node
        for i in data_inputs(n) if type(n.op).shape_only_inputs else n.inputs:
            if i.inputs and i not in bwd_nodes:
                saved.add(i)
    saved_roots = {r for i in saved for r in live.holds_of(i) if r.inputs}
    report = MemoryPlan(
        signature=signature,
        forward_peak=alloc.forward_peak,
        backward_peak=alloc.backward_peak,
        saved=sum(nbytes(types[r]) for r in saved_roots),
        buffers=sum(alloc.sizes),
        naive=alloc.naive,
        n_buffers=len(alloc.sizes),
        n_inplace=alloc.n_inplace,
        n_values=len(steps),
    )
    return Planned(steps, n_forward, types, live.holds, live.last, alloc.static, alloc.buffer_of, alloc.sizes,
                   alloc.fresh, alloc.temp_buffers, deferred, report, options)


def lower_all(nodes: Sequence[Node], types: dict[Node, TensorType], keep: set[Node],
              fold_max_size: int | None) -> dict[Node, Lowered]:
    """The lowering of each node (in schedule order). A view that may copy (a reshape of a
    strided operand) runs per call as a ``call``; unless ``fold_max_size`` is None, ops on
    constants with at most that many elements become plan-time constants (``keep`` values,
    returned or committed, stay computed)."""
    lows: dict[Node, Lowered] = {}
    contiguous: dict[Node, bool] = {}
    for n in nodes:
        low = lower(n, [types[i] for i in n.inputs], types[n])
        if fold_max_size is not None and low.kind == "out" and n.inputs and n not in keep:
            low = _fold(n, lows, types[n], fold_max_size) or low
        if low.kind == "view" and low.may_copy and not _contig(n.inputs[0], contiguous):
            low = dataclasses.replace(low, kind="call")  # may copy: evaluate per call, keep the operand alive
        lows[n] = low
        contiguous[n] = low.kind == "out" or (low.kind == "const" and bool(low.value.flags.c_contiguous)) or (
            low.kind == "view" and low.keeps_layout and _contig(n.inputs[0], contiguous))
    return lows


def deferred_updates(lows: dict[Node, Lowered], outputs: Sequence[Node], updates: Sequence[tuple[Node, Node]],
                     types: dict[Node, TensorType], holds: dict[Node, frozenset] | None = None) -> dict[Node, Node]:
    """Update values that can be computed straight into their parameter, after all else
    (value -> parameter): an ``out`` step read by nothing else, whose in-place-safe operands
    are the only way it reads the parameter, and that reads no other updated parameter.
    ``holds`` is :func:`storage_roots` of the lowered steps when the caller has it."""
    if holds is None:
        holds = storage_roots([Step(n, low) for n, low in lows.items()])
    out_set = set(outputs)
    updated = {p for p, _ in updates}
    value_count: dict[Node, int] = {}
    for _, v in updates:
        value_count[v] = value_count.get(v, 0) + 1
    read = set()  # update values some step reads
    for n in lows:
        for i in n.inputs:
            if i in value_count:
                read.add(i)
    deferred: dict[Node, Node] = {}
    for p, v in updates:
        low = lows.get(v)
        if (low is None or low.kind != "out" or v in out_set or v in read or value_count[v] > 1
                or types[v].shape != p.shape or types[v].dtype != p.dtype):
            continue
        if any(i is p for i in v.inputs) and not any(v.inputs[k] is p for k in low.inplace):
            continue  # p is read in a way that is unsafe to overwrite
        if any(r in updated and r is not p for i in v.inputs for r in holds.get(i, (i,))):
            continue  # reads another parameter that is updated too
        deferred[v] = p
    return deferred


def place_updates(steps: list[Step], n_forward: int, updates: list[Step], deferred: dict[Node, Node],
                  keep: set[Node], holds: dict[Node, frozenset] | None = None) -> list[Step]:
    """``steps`` with each deferred update inserted as early as it is safe.

    An update goes after its operands and after the last step reading its parameter
    (through any view of it), in the backward schedule; the backward steps that serve one
    update alone (``lr * dW``, ``dW`` itself) move up to run as soon as their operands exist. A weight gradient then dies as soon as it is final instead of living to
    the end of the step (W8: 64 gradients of 4 MiB each), which is what lets the backward
    peak fall with rematerialisation. An update whose parameter an output or a committed
    value holds stays at the end; effectful steps and outputs do not move."""
    if not updates:
        return steps
    steps = _early(steps, n_forward, _update_only(steps, n_forward, updates, keep))
    if holds is None:
        holds = storage_roots(steps)
    params = set(deferred.values())
    # the values that hold an updated parameter (itself, views of it): the reads that matter
    reading = {v: [r for r in h if r in params] for v, h in holds.items() if not params.isdisjoint(h)}
    reading.update((p, [p]) for p in params)
    last_read: dict[Node, int] = {}
    made: dict[Node, int] = {}
    for s, st in enumerate(steps):
        n = st.node
        made[n] = s
        if st.low.kind == "const":
            continue
        for i in data_inputs(n) if type(n.op).shape_only_inputs else n.inputs:
            if i in reading:
                for r in reading[i]:
                    last_read[r] = s
    end = len(steps)
    for v in keep:
        for r in reading.get(v, ()):
            last_read[r] = end
    after: dict[int, list[Step]] = {}
    for st in updates:
        p = deferred[st.node]
        s = max([n_forward - 1, last_read.get(p, -1)] + [made.get(i, -1) for i in st.node.inputs])
        after.setdefault(min(s, end), []).append(st)
    out = list(after.get(-1, ()))
    for s, st in enumerate(steps):
        out.append(st)
        out += after.get(s, ())
    return out + after.get(end, [])


def _update_only(steps: list[Step], n_forward: int, updates: list[Step], keep: set[Node]) -> set[Node]:
    """The backward steps that serve one update alone (``lr * dW``, ``dW = h.T @ g`` and its
    ``h.T``), plus scalars computed from forward values and leaves only (the cast of the
    learning rate). Not the cotangent chain: every update depends on it.

    One walk from the end: a step's readers all come after it, so when the walk reaches it,
    ``served`` holds the update its readers serve (or ``many``)."""
    many = object()
    served: dict[Node, object] = {}
    get = served.get
    for st in updates:
        for i in st.node.inputs:
            served[i] = st.node if get(i, st.node) is st.node else many
    bwd: set[Node] | None = None
    out: set[Node] = set()
    for st in reversed(steps[n_forward:]):
        n = st.node
        one = get(n)
        free = n not in keep and not n.op.effectful
        owner = one if one is not None and free else many
        for i in n.inputs:  # n's operands serve what n serves (or several updates)
            served[i] = owner if get(i, owner) is owner else many
        if owner is not many:
            out.add(n)
        elif free and isinstance(n.type, TensorType) and n.type.size() == 1:
            if bwd is None:
                bwd = {st.node for st in steps[n_forward:]}
            if not any(i in bwd for i in n.inputs):
                out.add(n)
    return out


def _early(steps: list[Step], n_forward: int, movable: set[Node]) -> list[Step]:
    """``steps`` with the ``movable`` backward steps each right after the last step making
    one of its operands (in their old relative order, so still topological)."""
    if not movable:
        return steps
    fixed: list[Step] = []
    anchor: dict[Node, int] = {}  # a step -> the fixed step it runs after (its own index if fixed)
    after: dict[int, list[Step]] = {}
    for st in steps:  # operands come first, so their anchors are known
        n = st.node
        if n in movable:
            k = n_forward - 1
            for i in n.inputs:
                a = anchor.get(i, -1)
                if a > k:
                    k = a
            anchor[n] = k
            if k in after:
                after[k].append(st)
            else:
                after[k] = [st]
        else:
            anchor[n] = len(fixed)
            fixed.append(st)
    out = list(after.get(-1, ()))
    for k, st in enumerate(fixed):
        out.append(st)
        out += after.get(k, ())
    return out


def _fold(n: Node, lows: dict[Node, Lowered], t: TensorType, max_size: int) -> Lowered | None:
    """``n`` computed now when every operand is a constant (leaf or folded), else None."""
    if n.op.effectful:  # a collective runs on every call, on every rank
        return None
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
    if size is None or size > max_size:
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


def materialize(plan: Planned, names: dict[Node, str]) -> dict[str, np.ndarray]:
    """Allocate the buffers and build every static value (typed buffer views, parameter and
    constant arrays, precomputed views) under its generated name."""
    raw = [np.empty(max(n, 1), np.uint8) for n in plan.buffer_sizes]
    arrays: dict[Node, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    typed: dict[tuple, np.ndarray] = {}  # values sharing a buffer at one type share its view

    def view(buf: int, t: TensorType) -> np.ndarray:
        key = (buf, t.shape, t.dtype)
        v = typed.get(key)
        if v is None:
            v = typed[key] = raw[buf][: nbytes(t)].view(t.dtype).reshape(t.shape)
        return v

    buffer_of, types, static = plan.buffer_of, plan.types, plan.static
    for st in plan.steps:
        n, low = st.node, st.low
        if low.temps:
            for j, (tb, tt) in enumerate(zip(plan.temp_buffers.get(n, ()), low.temps)):
                out[f"{names[n]}_t{j}"] = view(tb, tt)
        if st.deferred:
            continue
        kind = low.kind
        if kind == "out":
            b = buffer_of.get(n)
            if b is None:
                continue
            a = view(b, types[n])
        elif kind == "const":
            a = low.value
        elif kind == "view" and static[n]:
            x = n.inputs[0]
            base = arrays.get(x)
            a = low.view(x.op.value if base is None else base)  # not computed: a parameter or constant
        else:
            continue
        arrays[n] = out[names[n]] = a
    return out


def is_feed(v: Node) -> bool:
    return isinstance(v.op, Input)
