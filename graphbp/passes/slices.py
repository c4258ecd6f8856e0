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

import dataclasses

from ..graph.context import stamp
from ..graph.node import Node
from ..graph.rewrite import rebuild, rewrite, step_into
from ..graph.subgraph import Subgraph
from ..graph.traverse import toposort
from ..ops.base import Op, apply
from ..ops.control import TupleGet
from ..ops.indexing import GetItem
from ..ops.loop import Scan
from .core import LogEntry, PassResult, holds_bodies, in_bodies, union_provenance

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


def stack_view_ys(roots: list[Node], pass_name: str = "merge_slices", order: list[Node] | None = None) -> PassResult:
    """A scan whose ys include views of a body value (``y_t = z_t[:, 0:H]``, the pieces of
    a merged gate) stacks ``z`` instead and takes the batched view outside the loop: the
    body writes ``z`` straight into the stacked buffer, where each view was copied per step."""
    order = toposort(roots) if order is None else order
    log: list[LogEntry] = []
    rebuilt: dict[Node, tuple[Node, dict[int, tuple[int, Op | None]]]] = {}

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        if isinstance(n.op, Scan):
            cur = step_into(n if ins == n.inputs else rebuild(n, ins), inside)
            done = _stack_bases(cur)
            if done is None:
                return cur
            rebuilt[n] = done
            log.append(LogEntry(pass_name, "stack_view_ys", (n,), done[0]))
            return done[0]
        if isinstance(n.op, TupleGet) and n.inputs[0] in rebuilt:
            scan, where = rebuilt[n.inputs[0]]
            pos, view = where[n.op.index]
            with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
                out = apply(TupleGet(pos), scan)
                return out if view is None else apply(view, out, name=n.name)
        return None

    inside = in_bodies(lambda rs: stack_view_ys(rs, pass_name), log)
    return PassResult(rewrite(roots, visit, order=order, bodies=inside), log)


def _stack_bases(scan: Node) -> tuple[Node, dict[int, tuple[int, Op | None]]] | None:
    """``scan`` rebuilt stacking the bases of its emitted view ys, and for each old output
    position its new position and the batched view to apply there (None: as it was)."""
    op: Scan = scan.op
    nc, ny, body = op.n_carry, op.n_ys, op.body
    emitted = op.emitted()
    outs = list(body.outputs)
    inputs = set(body.inputs)
    views: dict[int, Op] = {}
    for j in range(ny):
        y = outs[nc + j]
        if nc + j not in emitted or not y.op.view or len(y.inputs) != 1:
            continue
        z = y.inputs[0]
        if z in inputs or z.op.leaf_kind is not None or z in outs[:nc]:
            continue
        batched = y.op.batched([True], [z.type], y.type)
        if batched is not None:
            views[j] = batched
            outs[nc + j] = z
    if not views:
        return None
    ys = list(dict.fromkeys(outs[nc:]))  # a base read by two views is stacked once

    def new_index(i: int) -> int:
        if i < nc:
            return i
        if i < nc + ny:
            return nc + ys.index(outs[i])
        return i - ny + len(ys)

    emit = sorted({new_index(i) for i in emitted})
    new_op = dataclasses.replace(op, body=Subgraph(body.inputs, (*outs[:nc], *ys)),
                                 emit=None if len(emit) == 2 * nc + len(ys) else tuple(emit))
    with stamp(origin=scan.origin, scope=scan.scope, provenance=scan.provenance):
        node = apply(new_op, *scan.inputs, name=scan.name)
    return node, {p: (emit.index(new_index(i)), views.get(i - nc)) for p, i in enumerate(emitted)}
