"""``embed_slice`` (the transpose of basic slicing: zeros with ``g`` at an index) in plain
ONNX that :func:`graphbp.import_onnx` reads back, at known and unknown dims.

Per axis of the target, with ``g``'s dropped axes (int indices) restored by ``Unsqueeze``
and its added ones (``None``) removed by ``Squeeze``:

- an axis of known size: a reversed run is flipped (``Slice`` with step -1), a contiguous
  run becomes part of one ``Pad`` with constant pads, a strided run a ``Gather`` with a
  constant index from ``g`` and one zero row (``Concat``);
- an axis of unknown size taken whole: nothing (or a flip for ``[::-1]``);
- a step-1 run with constant bounds on an axis of unknown size: a ``Concat`` of ``g`` with
  zeros shaped like ``like``'s slices before and after the run
  (``ConstantOfShape(Shape(Slice(like)))``), which NumPy's clamping of the bounds makes
  exact at every run-time size.

Anything else (a strided or reversed part of an axis of unknown size) keeps the general
form: ``g`` scattered into a grid of positions (``Range`` over the run-time element count),
which ONNX runtimes run but which has no graphbp form to import back (docs/interop.md).
"""

from __future__ import annotations

import numpy as np

from ..graph.node import Node
from ..ops import indexing as ix
from .builder import INT64_MIN, OnnxBuilder
from .emit import _slice, emits

Run = tuple[int | None, int | None, int]  # a slice triple with its step made explicit


def _runs(index, ndim: int) -> tuple[list[int], list[int], list[Run]]:
    """``index`` per target axis: the axes of ``g`` it adds (``None`` items), the target axes
    an int drops, and each target axis's run (an int ``i`` is the run ``i:i+1``)."""
    added, dropped, runs = [], [], []
    g_axis = 0
    for it in index:
        if it is None:
            added.append(g_axis)
            g_axis += 1
        elif isinstance(it, tuple):
            runs.append((it[0], it[1], 1 if it[2] is None else it[2]))
            g_axis += 1
        else:
            dropped.append(len(runs))
            runs.append((it, None if it == -1 else it + 1, 1))
    runs += [(None, None, 1)] * (ndim - len(runs))
    return added, dropped, runs


def _plain(run: Run, size: int | None) -> bool:
    """True when the run has a form the importer reads back."""
    start, stop, step = run
    if size is not None:
        return True
    return step == 1 or (step == -1 and start in (None, -1) and stop is None)


@emits(ix.EmbedSlice)
def _embed_slice(b: OnnxBuilder, node: Node, xs: list[str]) -> str:
    added, dropped, runs = _runs(node.op.index, node.ndim)
    if not all(_plain(r, n) for r, n in zip(runs, node.shape)):
        return _scatter(b, node, xs)
    g = b.squeeze(xs[0], added)
    g = b.unsqueeze(g, dropped) if dropped else g
    flips, pads, gathers, partial = [], [0] * (2 * node.ndim), [], []
    for a, ((start, stop, step), n) in enumerate(zip(runs, node.shape)):
        if n is None:
            if step == -1:
                flips.append(a)
            elif (start, stop) not in ((None, None), (0, None)):
                partial.append(a)
            continue
        picked = range(*slice(start, stop, step).indices(n))
        if step < 0 and len(picked) > 1:
            flips.append(a)
            picked = picked[::-1]
        if not picked:
            pads[a] = n
        elif picked.step == 1 or len(picked) == 1:
            pads[a], pads[node.ndim + a] = picked[0], n - 1 - picked[-1]
        else:
            gathers.append((a, picked, n))
    if flips:
        k = len(flips)
        g = b.op("Slice", [g, b.ints([-1] * k), b.ints([INT64_MIN] * k), b.ints(flips), b.ints([-1] * k)])
    for a, picked, n in gathers:  # every target row reads g's row or a zero row past its end
        zero = b.fill(b.shape(b.op("Slice", [g, b.ints([0]), b.ints([1]), b.ints([a])])), 0, node.dtype)
        rows = np.full(n, len(picked), dtype=np.int64)
        rows[np.asarray(picked)] = np.arange(len(picked))
        g = b.op("Gather", [b.op("Concat", [g, zero], axis=a), b.ints(rows)], axis=a)
    if any(pads):
        g = b.op("Pad", [g, b.ints(pads)])
    for k, a in enumerate(partial):
        g = _place_on_unknown_axis(b, node, g, xs[1], a, runs, partial[k + 1:])
    return g if g != xs[0] else b.op("Identity", [g])


def _place_on_unknown_axis(b: OnnxBuilder, node: Node, g: str, like: str, a: int, runs: list[Run],
                           later: list[int]) -> str:
    """``g`` between zeros along axis ``a`` of unknown size: the zeros are shaped like
    ``like``'s rows before the run and after it (the axes still to place keep their run, so
    the pieces match ``g``). With NumPy's clamping, rows after the run are ``like[max(s, t):]``
    when both bounds have one sign, else ``like[p:][q:]`` (``p`` the non-negative bound)."""
    start, stop, _ = runs[a]
    start = 0 if start is None else start

    def zeros(cuts: list[tuple[int | None, int | None]]) -> str:
        piece = _slice(b, like, tuple((runs[k][0], runs[k][1], None) if k in later else (None, None, None)
                                      for k in range(node.ndim)))
        for lo, hi in cuts:
            piece = _slice(b, piece, ((None, None, None),) * a + ((lo, hi, None),))
        return b.fill(b.shape(piece), 0, node.dtype)

    parts = [zeros([(None, start)])] if start else []
    parts.append(g)
    if stop is not None:
        if (start >= 0) == (stop >= 0):
            parts.append(zeros([(max(start, stop), None)]))
        else:
            p, q = (start, stop) if start >= 0 else (stop, start)
            parts.append(zeros([(p, None), (q, None)]))
    return b.op("Concat", parts, axis=a)


def _scatter(b: OnnxBuilder, node: Node, xs: list[str]) -> str:
    """The general form: slice a flat position grid of the target shape like ``g``, then
    scatter ``g`` to those positions (basic indices never repeat)."""
    g = xs[0]
    shape = b.shape(xs[1]) if len(xs) == 2 else b.ints(node.op.shape)
    total = b.op("ReduceProd", [shape], keepdims=1)
    grid = b.op("Reshape", [b.op("Range", [b.const(0, np.int64), b.squeeze(total, [0]), b.const(1, np.int64)]), shape])
    pos = b.op("Reshape", [_slice(b, grid, node.op.index), b.ints([-1])])
    flat = b.fill(total, 0, node.dtype)
    out = b.op("ScatterElements", [flat, pos, b.op("Reshape", [g, b.ints([-1])])], axis=0)
    return b.op("Reshape", [out, shape])
