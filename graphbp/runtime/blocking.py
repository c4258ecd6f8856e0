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

import re
from collections.abc import Callable, Sequence

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType
from .plan import Planned, Step

#: Chains on arrays smaller than this many bytes run whole-array (they fit in cache anyway).
MIN_BYTES = 4 << 20
#: Elements per block (1 MiB of float32): large enough to amortise ~1-2 us per NumPy call
#: and per slice, small enough that a handful of scratch blocks stay in L3. Measured on W4
#: (4M float32, ~23 calls per block, this 2-core EPYC): 8K 16.4 ms, 16K 14.0, 32K 12.6,
#: 64K 12.3, 128K 12.5, 256K 11.2, 512K 11.3.
BLOCK_ELEMENTS = 1 << 18


def _eligible(st: Step, plan: Planned) -> TensorType | None:
    n, low = st.node, st.low
    if low.kind != "out" or st.deferred or not getattr(n.op, "elementwise", False):
        return None
    t = plan.types[n]
    if t.ndim == 0 or (t.size() or 0) * t.dtype.itemsize < MIN_BYTES:
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
    added in float64), so the summand is never written to a full-size buffer."""
    from ..ops.reduce import Sum

    n = st.node
    if not isinstance(n.op, Sum) or n.op.keepdims or st.deferred or st.low.kind != "out":
        return False
    src = n.inputs[0]
    return (len(n.op.axis) == src.ndim and plan.types[n].dtype.kind == "f"
            and plan.types[src].dtype == plan.types[n].dtype and any(c.node is src for c in chain))


def find_regions(steps: Sequence[Step], plan: Planned) -> list[tuple[int, int]]:
    """Maximal runs (start, stop) of consecutive blockable steps of one leading dim: two or
    more, or one whose lowering is several calls over scratch buffers."""
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
        if j - k >= 2 or steps[k].low.temps:  # one multi-call kernel (gelu) is a chain too
            regions.append((k, j))
        k = j
    return regions


def emit_region(
    steps: Sequence[Step],
    first: int,
    plan: Planned,
    names: dict[Node, str],
    index: dict[Node, int],
    ns: dict,
    emit_stmt: Callable[[Step, list[str], str, list[str]], str],
    comment: Callable[[Step], str],
) -> list[str]:
    """The loop for ``steps`` (a region; ``first`` is the step number of ``steps[0]``)."""
    summed = steps[-1] if len(steps) > 1 and _final_sum(steps[-1], steps[:-1], plan) else None
    if summed is not None:
        steps = steps[:-1]
    nodes = [st.node for st in steps]
    in_region = set(nodes)
    last_step = first + len(steps) - (summed is None)
    viewed = {r for u, h in plan.holds.items() for r in h if r is not u}
    internal = {n for n in nodes if plan.last.get(n, -1) <= last_step and n not in viewed
                and n not in plan.fresh_outputs}
    rows = plan.types[nodes[0]].shape[0]
    row_elems = int(np.prod(plan.types[nodes[0]].shape[1:], dtype=np.int64))
    block = max(1, BLOCK_ELEMENTS // max(row_elems, 1))
    tail = rows % block
    tag = f"r{index[nodes[0]]}"
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
    for s, st in enumerate(steps, start=first):
        n, low = st.node, st.low
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
        buf = np.empty((block,) + t.shape[1:], t.dtype)
        ns[f"{tag}_s{k}"] = buf
        ns[f"{tag}_s{k}_tail"] = buf[:tail]

    def body(tail_block: bool) -> list[str]:
        # each full-size array is sliced once per block (a slice costs ~0.3 us; a lowered
        # kernel such as gelu's reads its operand up to 8 times)
        out = []
        suffix = "_tail" if tail_block else ""
        used: dict[str, None] = {}
        block_name = {nm: f"{tag}_b_{nm}" for nm in full}

        def rename(m: re.Match, sub: dict) -> str:
            w = m.group(0)
            if w in block_name:
                used[w] = None
                return block_name[w]
            return sub.get(w, w)

        for st, temp_names in plans:
            n = st.node
            subst = {nm: f"{tag}_s{slot_of[nm]}{suffix}" for nm in slot_of}
            args = [names[i] for i in n.inputs]
            stmt = emit_stmt(st, args, names[n], temp_names)
            stmt = re.sub(r"\b[A-Za-z_]\w*\b(?!\s*\()", lambda m, sub=subst: rename(m, sub), stmt)
            out.append(f"        {stmt}" + comment(st))
        if summed is not None:
            stmt = f"{tag}_acc += add_reduce({names[summed.node.inputs[0]]}, None, float64)"
            stmt = re.sub(r"\b[A-Za-z_]\w*\b(?!\s*\()", lambda m, sub=subst: rename(m, sub), stmt)
            out.append(f"        {stmt}" + comment(summed))
        return [f"        {block_name[nm]} = {nm}[i:j]" for nm in used] + out

    lines = [f"    # steps v{index[nodes[0]]}..v{index[nodes[-1]]}: elementwise over {rows} rows, run in blocks of "
             f"{block} rows so intermediates stay in cache"]
    for n in nodes:
        if n in plan.fresh_outputs:
            t = plan.types[n]
            ns.setdefault(t.dtype.name, t.dtype.type)
            lines.append(f"    {names[n]} = empty({t.shape!r}, {t.dtype.name})")
    if summed is not None:
        ns.setdefault("float64", np.float64)
        lines.append(f"    {tag}_acc = 0.0")
        t = plan.types[summed.node]
        if summed.node in plan.fresh_outputs:
            ns.setdefault(t.dtype.name, t.dtype.type)
            lines.append(f"    {names[summed.node]} = empty({t.shape!r}, {t.dtype.name})")
    if rows - tail:
        lines.append(f"    for i in range(0, {rows - tail}, {block}):")
        lines.append(f"        j = i + {block}")
        lines += body(False)
    if tail:
        lines.append(f"    i, j = {rows - tail}, {rows}")
        lines += [ln[4:] for ln in body(True)]
    if summed is not None:
        lines.append(f"    {names[summed.node]}[...] = {tag}_acc")
    return lines
