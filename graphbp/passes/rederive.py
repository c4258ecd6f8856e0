"""Re-derive gradients after the forward graph was stabilised.

A compile pass receives gradient nodes ``gb.grad`` already built from the *unstable*
forward formulas (``g / p`` with ``p = exp(x) / sum(exp(x))`` is NaN for large logits):
rewriting the forward loss alone leaves them NaN. When a stability rule fired, each
gradient "exit" (a gradient node that is a root or read by a non-gradient node, e.g. an
update ``w - lr * g``) is identified as ``d y / d w`` from its provenance (the seed names
``y``; the last rule names ``w``), the identification is *checked* by re-running
``gb.grad(y, w)`` on the original graph and comparing structure, and only then the exit is
replaced by ``gb.grad(y', w)`` of the stabilised loss ``y'``. Anything not identified and
checked is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable

from ..graph.node import Node
from ..graph.traverse import toposort
from ..ops.leaves import Constant, Leaf
from .core import LogEntry, PassResult, rewrite


def _wrt_of(g: Node) -> Node | None:
    p = g.provenance[0]
    if p.rule == "accumulate":
        return p.forward
    if p.rule in ("vjp", "unbroadcast") and p.input_index is not None:
        return p.forward.inputs[p.input_index]
    return None


def _seed_of(g: Node) -> Node | None:
    seeds = set()
    stack, seen = [g], set()
    while stack:
        n = stack.pop()
        if n in seen or not n.provenance:
            continue
        seen.add(n)
        for p in n.provenance:
            if p.rule == "seed":
                seeds.add(p.forward)
        stack.extend(n.inputs)
    return seeds.pop() if len(seeds) == 1 else None


def same_structure(a: Node, b: Node) -> bool:
    """True when two graphs compute the same thing node for node (identity of leaves
    other than constants, op equality, constant values)."""
    memo: set[tuple[int, int]] = set()
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if x is y or (id(x), id(y)) in memo:
            continue
        memo.add((id(x), id(y)))
        if x.type != y.type or len(x.inputs) != len(y.inputs):
            return False
        if isinstance(x.op, Leaf) or isinstance(y.op, Leaf):
            if not (isinstance(x.op, Constant) and isinstance(y.op, Constant)):
                return False
            if x.op.value.shape != y.op.value.shape or not (x.op.value == y.op.value).all():
                return False
            continue
        if x.op != y.op:
            return False
        stack.extend(zip(x.inputs, y.inputs))
    return True


def rederive(before: list[Node], after: list[Node], stabilize: Callable[[list[Node]], list[Node]],
             pass_name: str = "stabilize") -> PassResult:
    """Replace checked gradient exits of ``before`` by gradients of the stabilised losses.

    ``after`` are the roots the stability rules produced from ``before``; ``stabilize``
    maps forward roots to their stabilised versions.
    """
    from ..autodiff import grad

    order = toposort(before)
    exits: list[Node] = []
    users_fwd: set[Node] = set()
    for n in order:
        if not n.provenance:
            users_fwd.update(i for i in n.inputs if i.provenance)
    rootset = set(before)
    exits = [n for n in order if n.provenance and (n in rootset or n in users_fwd)]
    by_loss: dict[Node, list[tuple[Node, Node]]] = {}
    for g in exits:
        w, y = _wrt_of(g), _seed_of(g)
        if w is None or y is None or y.shape != () or w.dtype.kind != "f":
            continue
        by_loss.setdefault(y, []).append((g, w))
    replace: dict[Node, Node] = {}
    log: list[LogEntry] = []
    for y, pairs in by_loss.items():
        ws = list(dict.fromkeys(w for _, w in pairs))
        check = dict(zip(ws, grad(y, ws)))
        ok = [(g, w) for g, w in pairs if same_structure(check[w], g)]
        if not ok:
            continue
        y2 = stabilize([y])[0]
        if y2 is y:
            continue
        ws_ok = list(dict.fromkeys(w for _, w in ok))
        fresh = dict(zip(ws_ok, grad(y2, ws_ok)))
        for g, w in ok:
            replace[g] = fresh[w]
            log.append(LogEntry(pass_name, "rederive_gradient", (g, y), fresh[w]))
    if not replace:
        return PassResult(after, log)
    roots = rewrite(before, lambda n, ins, new: replace.get(n), order=order)
    return PassResult(stabilize(roots), log)
