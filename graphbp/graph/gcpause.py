"""Pausing Python's cyclic garbage collector while a graph is differentiated, compiled or planned.

Differentiating and compiling allocate many long-lived objects (gradient and rebuilt
nodes, memo dicts, plan records, generated source lines) and free few. Each allocation
burst triggers the cyclic collector, and its older generations rescan every object
alive, including the whole graph, so a deep graph differentiated or compiled with the
collector on costs time quadratic-ish in its size (docs/performance.md, W5). Nodes are
immutable and reference only their inputs, so these steps create no garbage cycles for
the collector to find; pausing it for the duration (as many compilers do) loses nothing.
``gb.grad`` and ``gb.compile`` pause it; building the forward graph (the user's own code)
does not. Reference counting still frees everything else as usual.

The collector is switched back on only if it was on, so a caller that disabled it keeps
it disabled, and nested pauses (compile inside a planning call) are harmless.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; restore its previous state after,
    also when the block raises."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def without_gc(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run ``fn`` with the cyclic collector paused (see :func:`gc_paused`)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with gc_paused():
            return fn(*args, **kwargs)

    return wrapper


__all__ = ["gc_paused", "without_gc"]
