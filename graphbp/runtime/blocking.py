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
#: Elements per block (128 KiB of float32): large enough to amortise ~1 us per NumPy call,
#: small enough that a handful of scratch blocks stay in L2/L3 (measured best on W4).
BLOCK_ELEMENTS = 32768


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


def find_regions(steps: Sequence[Step], plan: Planned) -> list[tuple[int, int]]:
    """Maximal runs (start, stop) of at least two consecutive blockable steps of one leading dim."""
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
        if j - k >= 2:
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
    nodes = [st.node for st in steps]
    in_region = set(nodes)
    last_step = first + len(steps) - 1
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
        out = []
        suffix = "_tail" if tail_block else ""
        for st, temp_names in plans:
            n = st.node
            subst = {nm: f"{tag}_s{slot_of[nm]}{suffix}" for nm in slot_of}
            subst.update({nm: f"{nm}[i:j]" for nm in full})
            args = [names[i] for i in n.inputs]
            stmt = emit_stmt(st, args, names[n], temp_names)
            stmt = re.sub(r"\b[A-Za-z_]\w*\b(?!\s*\()", lambda m, sub=subst: sub.get(m.group(0), m.group(0)), stmt)
            out.append(f"        {stmt}" + comment(st))
        return out

    lines = [f"    # steps v{index[nodes[0]]}..v{index[nodes[-1]]}: elementwise over {rows} rows, run in blocks of "
             f"{block} rows so intermediates stay in cache"]
    for n in nodes:
        if n in plan.fresh_outputs:
            t = plan.types[n]
            ns.setdefault(t.dtype.name, t.dtype.type)
            lines.append(f"    {names[n]} = empty({t.shape!r}, {t.dtype.name})")
    if rows - tail:
        lines.append(f"    for i in range(0, {rows - tail}, {block}):")
        lines.append(f"        j = i + {block}")
        lines += body(False)
    if tail:
        lines.append(f"    i, j = {rows - tail}, {rows}")
        lines += [ln[4:] for ln in body(True)]
    return lines
