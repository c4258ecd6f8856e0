"""Values the forward already computes are read from it, not recomputed for the backward.

:func:`share_softmax`: the gradient of a softmax cross-entropy is ``softmax(x) - one_hot``,
and the loss itself computes that softmax on the way (the row maxima, the exponentials and
their sums): where a graph has both on the same logits, one ``softmax_cross_entropy_probs``
node gives both, so the backward reads the forward's probabilities.

:func:`reuse_residuals`: per-step values a loop already computes are read from it, not
recomputed after it.

A reverse scan (the VJP of ``scan``) recomputes the forward step from the stacked carries;
:mod:`.licm` hoists that recomputation out of its loop as batched ops over all steps (the
gates of every step of an LSTM at once). Those values are the forward scan's own per-step
intermediates: this pass makes the forward scan emit them as extra stacked ys and reads
them there, which is what backpropagation through time by hand does (save the gate
activations). It costs one copy per step of each value and saves the batched recomputation
(a matmul over all steps and the gate nonlinearities).

Matching is structural, by hash-consing: an outside node's key is its op and its operands'
keys, and a body node's key is its batched op (``Op.batched``, carries read as
the scan's stacked carries) and its operands' keys; the stacked carries, the scan's xs and
invariants and the constants are the shared leaves. Only values some unmatched node reads
are emitted (their matched ancestors die); views are not (they cost nothing). Values built
inside ``gb.checkpoint()`` are never emitted: the user asked for them to be recomputed.
"""

from __future__ import annotations

import dataclasses

from ..graph.context import CHECKPOINT_SCOPE, stamp
from ..graph.node import Node
from ..graph.rewrite import rewrite
from ..graph.subgraph import Subgraph
from ..graph.traverse import toposort
from ..ops.base import apply
from ..ops.control import TupleGet
from ..ops.elementwise import Add
from ..ops.loop import Scan
from ..ops.nn import Softmax, SoftmaxCrossEntropy, SoftmaxCrossEntropyProbs
from .core import LogEntry, PassResult
from .licm import _Lift


def _stacked_carry(scan: Node, index: int) -> int | None:
    """The carry whose stacked values output ``index`` of ``scan`` holds, or None."""
    op: Scan = scan.op
    full = op.emitted()[index]
    first = op.n_carry + op.n_ys
    return full - first if full >= first else None


SHARE_SOFTMAX_MIN = 1 << 12
"""Logits of fewer elements keep the two lowered kernels: the joint node runs as one Python
kernel returning fresh arrays, a fixed cost per call about that of a softmax over this many
elements (a 128 x 10 batch is 15% slower shared, a 1024 x 10 one 40% faster)."""


def _likely_size(x: Node) -> int:
    """The element count of ``x``, an unknown dim counted as 32 (a batch or a sequence)."""
    size = 1
    for d in x.shape:
        size *= 32 if d is None else d
    return size


def share_softmax(roots: list[Node], order: list[Node] | None = None) -> PassResult:
    """Replace ``softmax_cross_entropy(x, labels)`` (integer labels) and ``softmax(x)`` along
    the same axis by the two outputs of one ``softmax_cross_entropy_probs(x, labels)``,
    stamped as the loss (a forward value, so the probabilities are saved for the backward)."""
    order = toposort(roots) if order is None else order
    losses: dict[tuple[Node, int], Node] = {}
    for n in order:
        if (type(n.op) is SoftmaxCrossEntropy and n.inputs[1].dtype.kind in "iu"
                and _likely_size(n.inputs[0]) >= SHARE_SOFTMAX_MIN):
            losses.setdefault((n.inputs[0], n.op.axis), n)
    if not losses:
        return PassResult(roots, [], order)
    pos = {n: k for k, n in enumerate(order)}
    partner: dict[Node, Node] = {}  # softmax -> the loss on its logits
    for n in order:
        c = losses.get((n.inputs[0], n.op.axis)) if type(n.op) is Softmax else None
        if c is not None and n.dtype == c.dtype and pos[c.inputs[1]] < pos[n]:
            partner[n] = c
    if not partner:
        return PassResult(roots, [], order)
    shared = set(partner.values())
    fused: dict[Node, Node] = {}
    log: list[LogEntry] = []

    def joint(c: Node, new: dict[Node, Node]) -> Node:
        if c not in fused:
            with stamp(origin=c.origin, scope=c.scope, provenance=c.provenance):
                fused[c] = apply(SoftmaxCrossEntropyProbs(c.op.axis), new[c.inputs[0]], new[c.inputs[1]])
        return fused[c]

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        if n in partner:
            c = partner[n]
            f = joint(c, new)
            log.append(LogEntry("share_softmax", "share_softmax", (c, n), f))
            with stamp(origin=c.origin, scope=c.scope, provenance=c.provenance):
                return apply(TupleGet(1), f, name=n.name)
        if n in shared:
            f = joint(n, new)
            with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
                return apply(TupleGet(0), f, name=n.name)
        return None

    return PassResult(rewrite(roots, visit, order=order), log)


def reuse_residuals(roots: list[Node]) -> PassResult:
    """Replace batched recomputations of a scan's per-step values by stacked ys of it."""
    order = toposort(roots)
    if not any(isinstance(n.op, Scan) for n in order):
        return PassResult(roots, [])
    table: dict[tuple, int] = {}

    def intern(key: tuple) -> int:
        return table.setdefault(key, len(table))

    ids: dict[Node, int] = {}
    sums: dict[Node, tuple[int, ...]] = {}
    in_body: dict[int, tuple[Node, Node]] = {}  # key -> (scan, varying body node)
    for n in order:
        src = n.inputs[0] if n.inputs else None
        if isinstance(n.op, TupleGet) and isinstance(src.op, Scan) and _stacked_carry(src, n.op.index) is not None:
            ids[n] = intern(("stacked", src, _stacked_carry(src, n.op.index)))
        elif n.op.leaf_kind is not None or n.op.subgraphs() or isinstance(n.op, TupleGet):
            ids[n] = intern(("node", n))
        else:
            try:
                ids[n] = intern(_key(n, n.op, ids, sums))
            except TypeError:  # an op holding an unhashable value: matched by identity only
                ids[n] = intern(("node", n))
        if isinstance(n.op, Scan):
            _index_body(n, ids, intern, in_body, sums)
    users: dict[Node, list[Node]] = {}
    for n in order:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    matched = {n: in_body[ids[n]] for n in order
               if ids[n] in in_body and n.op.leaf_kind is None and not n.op.subgraphs()
               and n.shape[1:] == in_body[ids[n]][1].shape and n.dtype == in_body[ids[n]][1].dtype}
    root_set = set(roots)
    wanted = [n for n in matched if not n.op.view and (n in root_set or any(u not in matched for u in users.get(n, ())))]
    if not wanted:
        return PassResult(roots, [])
    emit: dict[Node, list[Node]] = {}
    for n in wanted:
        scan, b = matched[n]
        lst = emit.setdefault(scan, [])
        if b not in lst:
            lst.append(b)
    wanted_set = set(wanted)
    rebuilt: dict[Node, tuple[Node, dict[int, int], dict[Node, int]]] = {}
    log: list[LogEntry] = []

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        if n in emit:
            scan, pos, at = _emit_more(n, ins, emit[n])
            rebuilt[n] = (scan, pos, at)
            log.append(LogEntry("licm", "reuse_residuals", (n,), scan))
            return scan
        if isinstance(n.op, TupleGet) and n.inputs[0] in rebuilt:
            scan, pos, _ = rebuilt[n.inputs[0]]
            with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
                return apply(TupleGet(pos[n.op.index]), scan, name=n.name)
        if n in wanted_set:
            scan, body_node = matched[n]
            new_scan, _, at = rebuilt[scan]
            with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
                return apply(TupleGet(at[body_node]), new_scan, name=n.name)
        return None

    return PassResult(rewrite(roots, visit, order=order), log)


def _key(n: Node, op, ids: dict[Node, int], sums: dict[Node, tuple[int, ...]]) -> tuple:
    """``n``'s structural key: its op and its operands' keys; a sum is keyed by the multiset
    of its terms, so a sum regrouped for hoisting (``licm.regroup``) still matches."""
    if not isinstance(n.op, Add) or any(i.dtype != n.dtype for i in n.inputs):
        return (op, tuple(ids[i] for i in n.inputs))
    terms = sums[n] = tuple(sorted(t for i in n.inputs for t in sums.get(i, (ids[i],))))
    return ("sum", n.dtype.str, terms)


def _index_body(scan: Node, ids: dict[Node, int], intern, in_body: dict[int, tuple[Node, Node]],
                sums: dict[Node, tuple[int, ...]]) -> None:
    """Key every body node of ``scan`` that depends on a carry by its batched form."""
    op: Scan = scan.op
    body, nc, nx = op.body, op.n_carry, op.n_xs
    lift = _Lift()
    local: dict[Node, int] = {}
    varying: set[Node] = set(body.inputs[:nc])
    for k, p in enumerate(body.inputs[:nc]):
        lift.stacked[p] = True
        local[p] = intern(("stacked", scan, k))
    for j, (p, x) in enumerate(zip(body.inputs[nc:], scan.inputs[nc:])):
        lift.stacked[p] = j < nx  # the xs, then the loop invariants
        local[p] = ids[x]
        if x in sums:  # a hoisted sum: its terms, for sums the body adds to it
            sums[p] = sums[x]
    for n in body.nodes():
        if n in local:
            continue
        if n.op.leaf_kind is not None:
            lift.stacked[n], lift.op[n] = False, n.op
            local[n] = intern(("node", n))
            continue
        if not lift.consider(n):
            continue
        try:
            local[n] = intern(_key(n, lift.op[n], local, sums))
        except (TypeError, KeyError):
            continue
        if any(i in varying for i in n.inputs):
            varying.add(n)
            if CHECKPOINT_SCOPE not in n.scope:  # a checkpoint region is recomputed, not saved
                in_body.setdefault(local[n], (scan, n))


def _emit_more(scan: Node, operands: tuple[Node, ...], extra: list[Node]) -> tuple[Node, dict[int, int], dict[Node, int]]:
    """``scan`` over ``operands`` emitting ``extra`` body values as further stacked ys.

    Returns the new node, the new position of each old output position, and the position
    of each extra value."""
    op: Scan = scan.op
    nc, ny = op.n_carry, op.n_ys
    extra = [b for b in extra if b not in op.body.outputs[nc:]]
    m = len(extra)
    old = op.emitted()

    def moved(i: int) -> int:
        return i if i < nc + ny else i + m

    ys_at = {b: nc + op.body.outputs[nc:].index(b) for b in op.body.outputs[nc:]}
    ys_at.update({b: nc + ny + j for j, b in enumerate(extra)})
    full = sorted({moved(i) for i in old} | set(ys_at.values()))
    new_op = dataclasses.replace(op, body=Subgraph(op.body.inputs, op.body.outputs + tuple(extra)), emit=tuple(full))
    with stamp(origin=scan.origin, scope=scan.scope, provenance=scan.provenance):
        node = apply(new_op, *operands, name=scan.name)
    pos = {p: full.index(moved(i)) for p, i in enumerate(old)}
    return node, pos, {b: full.index(i) for b, i in ys_at.items()}
