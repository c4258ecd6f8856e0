"""One generated function holding a whole loop over a body program (``gb.scan``'s kernel).

A loop that calls the body's generated step once per iteration pays, every step, for a
Python call with all the feeds and output buffers as arguments and for the views of its
stacked buffers built in the caller. Here the body's lines are the loop's body instead:
``loop(steps, *args)`` binds the loop invariants and scratch buffers once, then per step
only takes the rows of the sequences and stacked results, runs the body's NumPy calls and
exchanges the two buffers of each carry not kept per step (no copies). Views of loop
invariants (``w.T`` of a captured weight) are taken once, before the loop.

The loop's results (stacked ys and carries) are arrays of the loop's caller, which hands
them on; :class:`ArrayPool` gives it the same arrays again at the next call once nothing
holds them, as a hand-written training step keeps its buffers: a fresh multi-megabyte
array each call comes back from the allocator as new pages, a page fault per 4 KiB
written.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np

from ..graph.node import Node

Bind = tuple[int, "int | None"]


@dataclasses.dataclass(frozen=True)
class LoopLayout:
    """Where a loop keeps a body program's feeds and output buffers, step after step.

    ``loop(steps, *args)`` runs the body once per ``t`` in ``steps``. Each feed and each
    output buffer is bound from one argument: ``(a, None)`` is ``args[a]`` itself, the same
    array every step (a loop invariant, a scratch buffer); ``(a, d)`` is row ``t + d`` of
    ``args[a]`` (a sequence, a stacked result). Equal binds are one object (a carry that is
    also a ys, written once). ``swaps`` pairs the argument a carry is fed from with the one
    its new value is written into (both bound whole); the two exchange after each step, and
    the loop returns the first of each pair: the final carries.

    Attributes
    ----------
    feeds, outs : tuple of (argument, row offset or None)
        One per body input, one per body output.
    swaps : tuple of (argument, argument)
    """

    feeds: tuple[Bind, ...]
    outs: tuple[Bind, ...]
    swaps: tuple[tuple[int, int], ...] = ()

    @classmethod
    def once(cls, n_feeds: int, n_outs: int) -> "LoopLayout":
        """Every feed and output buffer passed whole: ``loop(range(1), *feeds, *outs)`` is one call of the body."""
        return cls(tuple((k, None) for k in range(n_feeds)), tuple((n_feeds + k, None) for k in range(n_outs)))

    @property
    def n_args(self) -> int:
        return 1 + max((a for a, _ in self.feeds + self.outs), default=-1)


class ArrayPool:
    """Arrays handed out again once nothing but the pool holds them (no view, no user).

    ``empty(shape, dtype)`` returns a free array of that shape and dtype made by an earlier
    call, else a new one (kept for later while fewer than ``keep`` of its kind are). Whether
    an array is free is its reference count (CPython's): a view, a result the user kept or
    a caller still using it holds a reference, so such an array is never handed out twice."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._arrays: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        key = (shape, dtype)
        with self._lock:
            arrays = self._arrays.setdefault(key, [])
            for a in arrays:
                if sys.getrefcount(a) == 3:  # the list's, ``a``'s and getrefcount's argument
                    return a
            a = np.empty(shape, dtype)
            if len(arrays) < self.keep:
                arrays.append(a)
            return a


def loop_source(layout: LoopLayout, feeds: Sequence[str], outs: Sequence[str], scalar_rows: Callable[[int], bool],
                lines: Sequence[str], hoisted: set[Node], ident: Callable[[str], str]) -> list[str]:
    """The ``loop`` function around a body's ``lines`` (written for ``step(*feeds, *outs)``).

    ``scalar_rows(k)`` says that parameter ``k`` (feeds, then outs) is 0-d per step (its row
    is taken as ``a[t, ...]``, an array, not ``a[t]``, a NumPy scalar). Lines computing a
    node of ``hoisted`` (views of loop invariants) run once before the loop, and the
    ``del`` of their names is dropped (the next step reads them again)."""
    if len(layout.feeds) != len(feeds) or len(layout.outs) != len(outs):
        raise ValueError(f"loop layout of {len(layout.feeds)} feeds, {len(layout.outs)} outputs for a body of "
                         f"{len(feeds)} and {len(outs)}")
    args = [ident(f"arg{a}") for a in range(layout.n_args)]
    t, steps = ident("t"), ident("steps")
    swapped = {a for pair in layout.swaps for a in pair}
    before: list[str] = []
    per_step: list[str] = []
    bound: dict[Bind, str] = {}
    for k, (name, (a, d)) in enumerate(zip([*feeds, *outs], layout.feeds + layout.outs)):
        if (a, d) in bound:
            text = f"{name} = {bound[(a, d)]}"
        elif d is None:
            text = f"{name} = {args[a]}"
        else:
            row = f"{t} + {d}" if d else t
            text = f"{name} = {args[a]}[{row}, ...]" if scalar_rows(k) else f"{name} = {args[a]}[{row}]"
        if a in swapped and (a, d) in bound:
            raise ValueError(f"loop layout: a swapped argument is bound twice: {(a, d)}")
        bound.setdefault((a, d), name)
        (before if d is None else per_step).append(text)
    for a, b in layout.swaps:
        if (a, None) not in layout.feeds or (b, None) not in layout.outs:
            raise ValueError(f"loop layout: swap {(a, b)} needs argument {a} fed and {b} written whole")
    hoisted_names: set[str] = set()
    body: list[str] = []
    for ln in lines:
        node = getattr(ln, "node", None)
        if node is not None and node in hoisted:
            before.append(ln[4:])
            hoisted_names.add(ln[4:].split(" = ", 1)[0])
        elif ln.startswith("    del ") and hoisted_names:
            kept = [n for n in ln[8:].split(", ") if n not in hoisted_names]
            if kept:
                body.append(f"    del {', '.join(kept)}")
        else:
            body.append(ln)
    swaps = [(bound[(a, None)], bound[(b, None)]) for a, b in layout.swaps]
    src = [f"def loop({', '.join([steps, *args])}):"]
    src += [f"    {s}" for s in before]
    src.append(f"    for {t} in {steps}:")
    src += [f"        {s}" for s in per_step]
    src += ["    " + ln if ln.strip() else ln for ln in body]
    if swaps:
        src.append(f"        {', '.join(f + ', ' + o for f, o in swaps)} = "
                   f"{', '.join(o + ', ' + f for f, o in swaps)}  # the new carries are fed to the next step")
    finals = [f for f, _ in swaps]
    src.append(f"    return ({', '.join(finals)}{',' if len(finals) == 1 else ''})")
    return src


__all__ = ["ArrayPool", "LoopLayout", "loop_source"]
