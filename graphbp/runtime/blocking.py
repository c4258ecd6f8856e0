"""Cache blocking: run a long chain of large elementwise steps block by block.

On arrays much larger than the CPU caches, each NumPy call streams its operands through
memory, so a chain of k elementwise calls costs k round trips to RAM. When consecutive
steps of a schedule are all elementwise over the same large shape, the generated code runs
the whole chain on one block of rows at a time (``for i in range(0, n, rows)``): values used
only inside the chain live in block-sized scratch buffers that stay in cache, and values
that leave the chain (saved activations, outputs) are written through slices of their
planned buffers. Every step only reads and writes the positions of the current block, so
running them block by block computes exactly what running them one after the other does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType
from ..ops.elementwise import Multiply
from ..ops.reduce import Sum
from .plan import Planned, Step
from .schedule import data_inputs

# The thresholds (chain size, block sizes) are RuntimeOptions fields, read from plan.options.


CACHE_LINE = 64


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A scratch block starting on a cache line. ``np.empty`` gives 16-byte alignment; when
    a ufunc's operands sit at different offsets within their lines, its vector loads straddle
    two lines and an in-cache call can take twice as long (docs/performance.md, elementwise
    chains; ``benchmarks/ufunc_cost.py`` measures it)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + CACHE_LINE, np.uint8)
    start = -raw.ctypes.data % CACHE_LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _eligible(st: Step, plan: Planned) -> TensorType | None:
    n, low = st.node, st.low
    if low.kind != "out" or st.deferred or not getattr(n.op, "elementwise", False):
        return None
    t = plan.types[n]
    if t.ndim == 0 or (t.size() or 0) * t.dtype.itemsize < plan.options.block_min_bytes:
        return None
    for i in n.inputs:
        it = plan.types[i]
        if it.ndim == t.ndim and it.shape[0] not in (1, t.shape[0]):
            return None
        if it.ndim > t.ndim:
            return None
    return t


def _final_sum(st: Step, chain: Sequence[Step], plan: Planned) -> bool:
    """A full float ``sum`` of a chain value: summed block by block (per-block partials
    added in float64), so the summand is never written to a full-size buffer. A block is
    summed pairwise in its own dtype, as ``np.sum`` sums the whole array (float16 in
    float64): casting each block to float64 took twice the time of the sum itself."""
    n = st.node
    if not isinstance(n.op, Sum) or n.op.keepdims or st.deferred or st.low.kind != "out":
        return False
    src = n.inputs[0]
    return (len(n.op.axis) == src.ndim and plan.types[n].dtype.kind == "f"
            and plan.types[src].dtype == plan.types[n].dtype and any(c.node is src for c in chain))


def _dot_sum(k: int, items: Sequence[tuple[int, Step]], plan: Planned) -> Node | None:
    """For the full sum ``items[k]``: the product it sums when the block's sum can be one
    ``vdot`` of the two factors (a BLAS dot: multiply and add in one pass, a third of the
    float32 sum alone; its per-block error measured as small as the pairwise sum's). The
    product must be a multiply earlier in the region, of two same-shaped float32/float64
    operands (no broadcasting); the ``vdot`` runs just before it, where both hold their
    block."""
    s, st = items[k]
    n = st.node.inputs[0]
    prod = next((p for _, p in items[:k] if p.node is n), None)
    if prod is None or not isinstance(n.op, Multiply) or prod.low.kind != "out" or prod.deferred:
        return None
    t = plan.types[n]
    if t.dtype.kind != "f" or t.dtype.itemsize < 4:
        return None
    return n if all(plan.types[i] == t for i in n.inputs) else None


def _internal(items: Sequence[tuple[int, Step]], plan: Planned, keep: frozenset = frozenset()) -> set[Node]:
    """Region values no step after the region reads: they live in block-sized scratch."""
    last_step = max(s for s, _ in items)
    return {st.node for _, st in items if plan.last.get(st.node, -1) <= last_step and st.node not in plan.viewed
            and st.node not in plan.fresh_outputs and st.node not in keep}


def _layout_safe(items: Sequence[tuple[int, Step]], plan: Planned, internal: set[Node]) -> bool:
    """Whether blocking keeps the plan's buffer sharing correct.

    Run one after the other, two values that share a buffer have disjoint lifetimes; run
    block by block, block ``k`` of a value written in the region must cover exactly the
    bytes of block ``k`` of any other value in that buffer the region reads, or it would
    overwrite rows a later block still reads (a ``(n, 1)`` value dying into an ``(n, 4)``
    one, say). So every value in such a shared buffer must be a plain row-sliced array of
    the same row size."""
    nodes = {st.node for _, st in items}
    rows = plan.types[items[0][1].node].shape[0]
    written = [n for n in nodes if n not in internal and plan.buffer_of.get(n) is not None
               and n not in plan.fresh_outputs and not isinstance(n.op, Sum)]  # a sum is stored after the loop
    if not written:
        return True
    read = {i for _, st in items for i in st.node.inputs if i not in nodes}
    by_buffer: dict[int, set[Node]] = {}
    for v in list(written) + list(read):
        for r in plan.holds.get(v, (v,)):
            b = plan.buffer_of.get(r)
            if b is not None:
                by_buffer.setdefault(b, set()).add(v)
    for n in written:
        group = by_buffer.get(plan.buffer_of[n], set())
        if len(group) < 2:
            continue
        t = plan.types[n]
        for v in group:
            u = plan.types[v]
            if (plan.holds.get(v, (v,)) != frozenset((v,)) or u.ndim != t.ndim or u.shape[0] != rows
                    or u.shape[1:] != t.shape[1:] or u.dtype.itemsize != t.dtype.itemsize):
                return False
    return True


def find_regions(steps: Sequence[Step], plan: Planned, first: int) -> list[tuple[int, int]]:
    """Maximal runs (start, stop) of consecutive blockable steps of one leading dim: two or
    more, or one whose lowering is several calls over scratch buffers (``first`` is the
    step number of ``steps[0]``). Runs whose buffer sharing blocking would break are left
    whole-array (:func:`_layout_safe`)."""
    regions = []
    k = 0
    while k < len(steps):
        t = _eligible(steps[k], plan)
        if t is None:
            k += 1
            continue
        j = k + 1
        while j < len(steps):
            u = _eligible(steps[j], plan)
            if u is None or u.shape[0] != t.shape[0]:
                break
            j += 1
        if j < len(steps) and _final_sum(steps[j], steps[k:j], plan):
            j += 1
        if j - k >= 2 or steps[k].low.temps:  # one multi-call kernel (softplus) is a chain too
            items = list(enumerate(steps[k:j], start=first))
            if _layout_safe(items, plan, _internal(items, plan)):
                regions.append((k, j))
        k = j
    return regions


def emit_region(
    items: Sequence[tuple[int, Step]],
    plan: Planned,
    names: dict[Node, str],
    index: dict[Node, int],
    ns: dict,
    operands: Callable[[Node], list[str]],
    emit_stmt: Callable[[Step, list[str], str, list[str]], str],
    annotate: Callable[[Step, str], str],
    *,
    tag: str | None = None,
    merged: bool = False,
    keep: frozenset = frozenset(),
) -> list[str]:
    """The loop for one region: ``items`` are ``(step number, step)`` in execution order.

    Full ``sum`` steps of a chain value (:func:`_final_sum`) accumulate per block; nothing
    after them in the region may read the sum. Values whose last reader is in the region
    live in block-sized scratch (unless in ``keep``); the rest are written through slices of
    their buffers."""
    sums = set()
    for k, (_, st) in enumerate(items):
        if k and _final_sum(st, [c for _, c in items[:k]], plan):
            sums.add(st.node)
    internal = _internal(items, plan, keep) - sums
    dots: dict[Node, list[Node]] = {}  # product -> the sums of it, each one vdot per block before it
    for k, (_, st) in enumerate(items):
        prod = _dot_sum(k, items, plan) if st.node in sums else None
        if prod is not None:
            dots.setdefault(prod, []).append(st.node)
    dotted = {sm for sms in dots.values() for sm in sms}
    step_of = {st.node: st for _, st in items}
    # a product only its sums read is not computed at all
    readers: dict[Node, set[Node]] = {}
    for _, st in items:
        for i in st.node.inputs:
            readers.setdefault(i, set()).add(st.node)
    skipped = {p for p, sms in dots.items() if p in internal and readers.get(p, set()) <= set(sms)}
    steps = [st for _, st in items if st.node not in sums]
    nodes = [st.node for st in steps]
    in_region = set(nodes)
    rows = plan.types[nodes[0]].shape[0]
    row_elems = int(np.prod(plan.types[nodes[0]].shape[1:], dtype=np.int64))
    opts = plan.options
    block = max(1, (opts.merged_block_elements if merged else opts.block_elements) // max(row_elems, 1))
    tail = rows % block
    tag = tag or f"r{index[nodes[0]]}"
    # scratch slots: internal values and temps, reused after their last use in the region
    slot_of: dict[str, int] = {}
    slot_types: list[TensorType] = []
    free: dict[tuple, list[int]] = {}

    def take(t: TensorType) -> int:
        key = (t.shape[1:], t.dtype)
        lst = free.get(key)
        if lst:
            return lst.pop()
        slot_types.append(t)
        return len(slot_types) - 1

    plans = []
    for s, st in items:
        n, low = st.node, st.low
        if n in sums:
            plans.append((st, None))
            dying = [i for i in n.inputs if i in internal and plan.last.get(i) == s]
        else:
            temp_names = [f"{names[n]}_t{j}" for j in range(len(low.temps))]
            dying = [i for i in dict.fromkeys(n.inputs) if i in internal and plan.last.get(i) == s]
            reuse = None
            if n in internal:
                for k in low.inplace:
                    i = n.inputs[k]
                    if i in dying and plan.types[i] == plan.types[n] and names[i] in slot_of:
                        reuse = slot_of[names[i]]
                        dying.remove(i)
                        break
                slot_of[names[n]] = reuse if reuse is not None else take(plan.types[n])
            for tn, tt in zip(temp_names, low.temps):
                slot_of[tn] = take(tt)
            plans.append((st, temp_names))
            for tn, tt in zip(temp_names, low.temps):
                free.setdefault((tt.shape[1:], tt.dtype), []).append(slot_of[tn])
        for i in dying:
            t = plan.types[i]
            free.setdefault((t.shape[1:], t.dtype), []).append(slot_of[names[i]])
    full = {names[n] for n in nodes if n not in internal}
    for st in steps:
        for i in st.node.inputs:
            it = plan.types[i]
            if i not in in_region and it.ndim == plan.types[st.node].ndim and it.shape[0] == rows and rows != 1:
                full.add(names[i])
    for k, t in enumerate(slot_types):
        buf = _aligned_empty((block,) + t.shape[1:], t.dtype)
        ns[f"{tag}_s{k}"] = buf
        ns[f"{tag}_s{k}_tail"] = buf[:tail]

    def body(tail_block: bool, indent: str) -> list[str]:
        # each full-size array is sliced once per block (a slice costs as much as a small
        # call; a lowered kernel such as softplus's reads its operand twice)
        out = []
        suffix = "_tail" if tail_block else ""
        used: dict[str, None] = {}
        block_name = {nm: f"{tag}_b_{nm}" for nm in full}
        subst = {nm: f"{tag}_s{slot_of[nm]}{suffix}" for nm in slot_of}

        def rename(nm: str) -> str:
            """A value's name inside the loop: its block slice or its scratch slot."""
            if nm in block_name:
                used[nm] = None
                return block_name[nm]
            return subst.get(nm, nm)

        for st, temp_names in plans:
            n = st.node
            if n in dotted:
                continue  # summed where its product is made
            if n in dots:
                a, b = (rename(v) for v in operands(n))
                for sm in dots[n]:
                    out.append(annotate(step_of[sm], f"{indent}{names[sm]}_acc += float(vdot({a}, {b}))"))
                if n in skipped:
                    continue
            if temp_names is None:
                src = rename(names[n.inputs[0]])
                wide = ", float64" if plan.types[n].dtype.itemsize < 4 else ""
                stmt = f"{names[n]}_acc += float(add_reduce({src}, None{wide}))"
            else:
                stmt = emit_stmt(st, [rename(a) for a in operands(n)], rename(names[n]), [rename(t) for t in temp_names])
            out.append(annotate(st, f"{indent}{stmt}"))
        return [f"{indent}{block_name[nm]} = {nm}[i:j]" for nm in used] + out

    lines = [f"    # steps v{index[nodes[0]]}..v{index[nodes[-1]]}: elementwise over {rows} rows, run in blocks of "
             f"{block} rows so intermediates stay in cache"]
    for n in nodes:
        if n in plan.fresh_outputs:
            t = plan.types[n]
            ns.setdefault(t.dtype.name, t.dtype.type)
            lines.append(f"    {names[n]} = empty({t.shape!r}, {t.dtype.name})")
    for _, st in items:
        if st.node in sums:
            ns.setdefault("float64", np.float64)
            lines.append(f"    {names[st.node]}_acc = 0.0")
            t = plan.types[st.node]
            if st.node in plan.fresh_outputs:
                ns.setdefault(t.dtype.name, t.dtype.type)
                lines.append(f"    {names[st.node]} = empty({t.shape!r}, {t.dtype.name})")
    if rows - tail:
        lines.append(f"    for i in range(0, {rows - tail}, {block}):")
        lines.append(f"        j = i + {block}")
        lines += body(False, "        ")
    if tail:
        lines.append(f"    i, j = {rows - tail}, {rows}")
        lines += body(True, "    ")
    for _, st in items:
        if st.node in sums:
            lines.append(f"    {names[st.node]}[...] = {names[st.node]}_acc")
    return lines


@dataclasses.dataclass(frozen=True)
class Merge:
    """How ``step`` runs the last forward region and the first backward region as one loop.

    Execution order: ``fwd[:head]``; the ``hoisted`` steps (step numbers, between the two
    regions and independent of the forward region); the loop over ``fwd[head:fwd_stop]``
    and ``bwd[bwd_start:bwd_stop]``; the ``sunk`` forward steps (they read the forward
    region, typically a full sum, and the backward region does not read them); the rest of
    the backward. ``keep`` are forward-region values the sunk steps read: they are written
    to their buffers even though the plan's liveness ends inside the loop."""

    head: int
    fwd_stop: int
    bwd_start: int
    bwd_stop: int
    hoisted: tuple[int, ...]
    sunk: tuple[int, ...]
    keep: frozenset


def plan_merge(fwd: Sequence[Step], bwd: Sequence[Step], plan: Planned,
               is_local: Callable[[Node], bool]) -> Merge | None:
    """A :class:`Merge` when running the regions as one loop computes the same values.

    The forward region's values that only the backward region reads then never reach their
    full-size buffers (W4: the saved ``u`` and ``tanh`` stay in cache). The reordered steps
    keep the plan's buffers, so the new order is checked against them (:func:`_order_safe`):
    no buffer may be overwritten while a value in it is still to be read. ``bwd`` is the
    backward schedule up to the parameter updates that run last."""
    nf = plan.n_forward
    fr, br = find_regions(fwd, plan, 0), find_regions(bwd, plan, nf)
    if not fr or not br:
        return None
    (a, b), (c, d) = fr[-1], br[0]
    if plan.types[fwd[a].node].shape[0] != plan.types[bwd[c].node].shape[0]:
        return None
    f_nodes = {st.node for st in fwd[a:b]}
    hoisted, sunk = [], []
    late = set(f_nodes)  # values only complete after the loop
    for pos, st in list(enumerate(fwd[b:], start=b)) + list(enumerate(bwd[:c], start=nf)):
        if st.deferred:
            return None
        if any(i in late for i in st.node.inputs):
            if pos >= nf:
                return None  # a backward step the backward region may need
            sunk.append(pos)
            late.add(st.node)
        else:
            hoisted.append(pos)
    sums = {st.node for st in fwd[a:b] if isinstance(st.node.op, Sum)}
    sunk_nodes = {plan.steps[p].node for p in sunk}
    if any(i in sums or i in sunk_nodes for st in bwd[c:d] for i in st.node.inputs):
        return None  # a sum is complete only after the loop
    keep = frozenset(i for p in sunk for i in plan.steps[p].node.inputs if i in f_nodes and i not in sums)
    loop = list(range(a, b)) + list(range(nf + c, nf + d))
    items = [(p, plan.steps[p]) for p in loop]
    if not _layout_safe(items, plan, _internal(items, plan, keep)):
        return None
    order = list(range(a)) + hoisted + loop + sunk + list(range(nf + d, len(plan.steps)))
    if not _order_safe(order, plan, set(loop), keep, is_local):
        return None
    return Merge(a, b, c, d, tuple(hoisted), tuple(sunk), keep)


def _order_safe(order: list[int], plan: Planned, loop: set[int], keep: frozenset,
                is_local: Callable[[Node], bool]) -> bool:
    """Whether running the steps in ``order`` (step numbers, the loop's in planned order) is
    correct with the plan's buffers and ``del``s.

    Each buffer's values must have disjoint lifetimes (definition to last read) in the new
    order; the loop runs its steps block by block in that order on the same positions, so
    sequential disjointness is enough there too. Loop values no step outside the loop reads
    live in scratch blocks and are skipped. A local (per-call) value must keep its last
    reader, because the generated code ``del``s it there."""
    when = {p: t for t, p in enumerate(order)}
    end = len(order)
    last_new: dict[Node, int] = {}
    for p, st in enumerate(plan.steps):
        last_new.setdefault(st.node, when[p])  # a value nothing reads dies where it is made
        if st.low.kind == "const":
            continue  # reads nothing per call (as in the plan's liveness)
        for i in data_inputs(st.node):
            last_new[i] = max(last_new.get(i, -1), when[p])
    for v, p in plan.last.items():
        if p >= len(plan.steps):  # outputs and update values live to the end
            last_new[v] = end
        elif v.inputs and is_local(v) and v not in plan.fresh_outputs and when.get(p, -1) != last_new.get(v, -1):
            return False
    holders: dict[Node, list[Node]] = {}
    for v, h in plan.holds.items():
        for r in h:
            holders.setdefault(r, []).append(v)
    loop_end = max(when[p] for p in loop)
    spans: dict[int, list[tuple[int, int]]] = {}
    for p, st in enumerate(plan.steps):
        n, t = st.node, when[p]
        hi = max([last_new.get(v, -1) for v in holders.get(n, ())] + [last_new.get(n, -1), t])
        if p in loop and hi <= loop_end and n not in keep:
            continue  # scratch (a viewed or returned value is read after the loop: hi > loop_end)
        b = plan.buffer_of.get(n) if st.low.kind == "out" and not st.deferred else None
        if b is not None:
            spans.setdefault(b, []).append((t, hi))
        if p not in loop:
            for tb in plan.temp_buffers.get(n, ()):
                spans.setdefault(tb, []).append((t, t))
    for lst in spans.values():
        lst.sort()
        reach = -1
        for d, hi in lst:
            if d < reach:
                return False
            reach = max(reach, hi)
    return True
