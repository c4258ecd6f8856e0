"""``merge_slices``: one elementwise op over adjacent slices of an array, applied once.

A gated cell splits one pre-activation into gates and applies the same nonlinearity to
several of them: an LSTM's ``sigmoid`` on ``z[:, 0:H]`` (input gate) and ``z[:, H:2H]``
(forget gate), a GRU's on its ``r`` and ``z`` gates. Each piece is a separate NumPy call
chain (six calls for a clamped sigmoid), and in a scan body that is paid every step. When
the pieces touch, the op runs once over the joined slice and each piece becomes a slice of
the result, as a hand-written step does (``sigmoid(z[:, :2H])``)::

    f(x[.., a:b, ..]), f(x[.., b:c, ..])  ->  y = f(x[.., a:c, ..]); y[.., 0:b-a, ..], y[.., b-a:c-a, ..]

Valid for any op computing each output element from the same input element alone
(``op.elementwise`` with one operand, not effectful). Slices must be of one array, along one
axis, with step 1, the other axes taken whole, and must not overlap; a run of touching
slices covering the whole axis reads the array itself. The pass steps into scan and cond
bodies, where it matters most.
"""

from __future__ import annotations

from ..graph.context import stamp
from ..graph.node import Node
from ..graph.rewrite import holds_bodies, rewrite
from ..graph.traverse import toposort
from ..ops.base import Op, apply
from ..ops.indexing import GetItem
from .core import LogEntry, PassResult, in_bodies, union_provenance

Span = tuple[int, int]


def axis_span(node: Node) -> tuple[int, int, int] | None:
    """``(axis, start, stop)`` when ``node`` is ``x[..., start:stop, ...]``: a step-1 slice
    along one axis of known size, every other axis taken whole (no ints, no new axes)."""
    if not isinstance(node.op, GetItem):
        return None
    shape = node.inputs[0].shape
    index = node.op.index
    if len(index) > len(shape) or not all(isinstance(it, tuple) for it in index):
        return None
    found = None
    for axis, (start, stop, step) in enumerate(index):
        if step not in (None, 1):
            return None
        dim = shape[axis]
        if start in (None, 0) and (stop is None or (dim is not None and stop >= dim)):
            continue  # taken whole
        if dim is None or found is not None:
            return None
        a, b, _ = slice(start, stop).indices(dim)
        if a >= b:
            return None
        found = (axis, a, b)
    return found


def _runs(spans: list[Span]) -> list[list[Span]]:
    """Maximal runs (two or more) of touching, non-overlapping spans, in order."""
    runs: list[list[Span]] = []
    cur: list[Span] = []
    for s in sorted(set(spans)):
        if cur and s[0] == cur[-1][1]:
            cur.append(s)
            continue
        if len(cur) > 1:
            runs.append(cur)
        cur = [] if cur and s[0] < cur[-1][1] else [s]  # an overlap ends the run and starts none
    if len(cur) > 1:
        runs.append(cur)
    return runs


def _index(ndim: int, axis: int, start: int, stop: int) -> tuple:
    return ((None, None, None),) * axis + ((start, stop, None),) + ((None, None, None),) * (ndim - axis - 1)


def merge_slices(roots: list[Node], pass_name: str = "merge_slices", order: list[Node] | None = None) -> PassResult:
    """Apply each unary elementwise op once over every run of touching slices it reads."""
    order = toposort(roots) if order is None else order
    groups: dict[tuple[Node, int, Op], dict[Span, list[Node]]] = {}
    for n in order:
        op = n.op
        if not (op.elementwise and len(n.inputs) == 1) or op.effectful:
            continue
        span = axis_span(n.inputs[0])
        if span is not None:
            axis, a, b = span
            groups.setdefault((n.inputs[0].inputs[0], axis, op), {}).setdefault((a, b), []).append(n)
    plan: dict[Node, tuple[tuple, Span, Span]] = {}  # piece -> (group key, its run's span, its span)
    for key, by_span in groups.items():
        for run in _runs(list(by_span)):
            whole = (run[0][0], run[-1][1])
            for s in run:
                for n in by_span[s]:
                    plan[n] = (key, whole, s)
    if not plan and not holds_bodies(order):
        return PassResult(list(roots), [], order)
    log: list[LogEntry] = []
    merged: dict[tuple, Node] = {}

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        hit = plan.get(n)
        if hit is None:
            return None
        key, (lo, hi), (a, b) = hit
        x, axis, op = key
        y = merged.get((key, lo))
        if y is None:
            members = [m for m, h in plan.items() if h[0] == key and h[1] == (lo, hi)]
            with stamp(origin=n.origin, scope=n.scope, provenance=union_provenance(members)):
                src = new[x] if (lo, hi) == (0, x.shape[axis]) else apply(GetItem(_index(x.ndim, axis, lo, hi)), new[x])
                y = merged[(key, lo)] = apply(op, src)
            log.append(LogEntry(pass_name, "merge_slices", tuple(members), y))
        with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
            return apply(GetItem(_index(x.ndim, axis, a - lo, b - lo)), y)

    inside = in_bodies(lambda rs: merge_slices(rs, pass_name), log)
    return PassResult(rewrite(roots, visit, order=order, bodies=inside), log)
