"""The pass framework: rules keyed by op classes, a rebuilding rewrite engine, a verifier.

Graphs are immutable, so a pass never edits a node: it walks the graph once in topological
order, keeps a memo ``old -> new`` and rebuilds a node only when one of its inputs was
rebuilt or a rule replaced it. Leaves (inputs, parameters) are never replaced: a parameter
*is* its state. A phase runs its rules in sweeps until a sweep changes nothing (bounded).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import GraphError
from ..graph.context import Provenance
from ..graph.node import Node, _serials
from ..graph.traverse import toposort
from ..ops.base import OpError
from ..ops.leaves import Constant, Input, Leaf, Param


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One rewrite: which pass and rule replaced ``before`` (first = the matched node) by ``after``."""

    pass_name: str
    rule: str
    before: tuple[Node, ...]
    after: Node

    def __str__(self) -> str:
        b = ", ".join(n.op.name for n in self.before)
        return f"[{self.pass_name}] {self.rule}: {b} -> {self.after.op.name}"


@dataclasses.dataclass(frozen=True)
class PassResult:
    """What a pass returns: the new roots (same order and count) and its rewrite log."""

    roots: list[Node]
    log: list[LogEntry]


RuleFn = Callable[[Node, "Context"], Any]


@dataclasses.dataclass(frozen=True)
class Rule:
    """A local rewrite: ``fn(node, ctx)`` returns a replacement node, ``(node, absorbed)``
    or ``None``. ``tracks`` are the op classes (subclasses included) it is tried on;
    ``group`` is the switch name (``passes={"algebraic": False}``)."""

    name: str
    group: str
    tracks: tuple[type, ...]
    fn: RuleFn


def rule(group: str, *tracks: type) -> Callable[[RuleFn], Rule]:
    """Decorator: declare a rule of ``group`` tracking op classes ``tracks``."""

    def wrap(fn: RuleFn) -> Rule:
        return Rule(fn.__name__, group, tuple(tracks), fn)

    return wrap


@dataclasses.dataclass
class Context:
    """Per-sweep facts rules may consult: use counts of the sweep's input graph."""

    uses: dict[Node, int]
    original: dict[Node, Node]

    def n_uses(self, node: Node) -> int:
        """How many consumers ``node`` (or the node it was rebuilt from) has; 0 if fresh."""
        return self.uses.get(self.original.get(node, node), 0)


def constant_value(node: Node) -> np.ndarray | None:
    """The value of a constant node (``None`` for anything computed)."""
    return node.op.value if isinstance(node.op, Constant) else None


def is_const_scalar(node: Node, value: float) -> bool:
    """True when ``node`` is a constant whose every element equals ``value``."""
    if type(node.op) is not Constant:
        return False
    v = node.op.value
    if v.size == 0 or v.size > 4096:
        return False
    return bool((v == value).all())


def rebuild(node: Node, inputs: tuple[Node, ...]) -> Node:
    """A copy of ``node`` over new ``inputs`` (same op, type, name, scope, origin, provenance)."""
    return Node(node.op, inputs, node.type, name=node.name, origin=node.origin,
                scope=node.scope, provenance=node.provenance)


def union_provenance(nodes: Iterable[Node]) -> tuple[Provenance, ...]:
    """Provenance of a node standing for ``nodes``: empty (forward) if any absorbed node is
    a forward value, else every record once, in order."""
    out: list[Provenance] = []
    seen: set[int] = set()
    for n in nodes:
        if not n.provenance:
            return ()
        for p in n.provenance:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return tuple(out)


def stamp_fresh(out: Node, watermark: int, like: Node, prov: tuple[Provenance, ...]) -> None:
    """Give nodes a rule just built (serial > watermark) the matched node's scope, user line
    and the union provenance. They are new and unshared, so setting fields is safe."""
    stack = [out]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if n.serial <= watermark or id(n) in seen or isinstance(n.op, Leaf) and not isinstance(n.op, Constant):
            continue
        seen.add(id(n))
        n.origin = like.origin
        n.scope = like.scope
        n.provenance = prov
        stack.extend(n.inputs)


class RuleTable:
    """Rules indexed by op class (looked up along the MRO once per class)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._cache: dict[type, list[Rule]] = {}

    def for_op(self, cls: type) -> list[Rule]:
        hit = self._cache.get(cls)
        if hit is None:
            hit = [r for r in self.rules if issubclass(cls, r.tracks)]
            self._cache[cls] = hit
        return hit


def count_uses(order: list[Node]) -> dict[Node, int]:
    uses: dict[Node, int] = {}
    for n in order:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    return uses


def run_rules(roots: list[Node], rules: Sequence[Rule], pass_name: str, *, cse: bool = False,
              max_sweeps: int = 6, max_local: int = 8) -> PassResult:
    """Apply ``rules`` (and hash-consing when ``cse``) in sweeps until nothing changes."""
    table = RuleTable(rules)
    log: list[LogEntry] = []
    seen_below = -1
    for _ in range(max_sweeps):
        start = next(_serials)
        roots, changed = _sweep(roots, table, pass_name, log, cse, max_local, seen_below)
        if not changed:
            break
        seen_below = start
    return PassResult(roots, log)


def _in_bodies(cur: Node, table: RuleTable, pass_name: str, log: list, cse: bool, max_local: int) -> Node:
    """Run the same rules inside the bodies of a higher-order node (``op.subgraphs()``);
    ``cur`` rebuilt over the rewritten bodies when one changed. Bodies are rewritten on
    their own: their placeholders stand for the operands, so nothing outside is read."""
    bodies = cur.op.subgraphs()
    if not bodies:
        return cur

    def rewrite(roots: list[Node]) -> list[Node]:
        res = run_rules(roots, table.rules, pass_name, cse=cse, max_local=max_local)
        log.extend(res.log)
        return res.roots

    op = cur.op.replace_subgraphs([b.map(rewrite) for b in bodies])
    if op is cur.op:
        return cur
    return Node(op, cur.inputs, cur.type, name=cur.name, origin=cur.origin, scope=cur.scope,
                provenance=cur.provenance)


def _sweep(roots, table, pass_name, log, cse, max_local, seen_below):
    """One pass over the topological order. Rules run on nodes that are new or rebuilt
    since the previous sweep began (``serial >= seen_below``): an unchanged node has the
    same inputs all the way down, so the rules already said no to it. Returns whether a
    rule fired (CSE merges converge within the sweep: users come later in the order)."""
    order = toposort(roots)
    uses = count_uses(order)
    for r in roots:  # a root is read by the caller
        uses[r] = uses.get(r, 0) + 1
    ctx = Context(uses, {})
    new: dict[Node, Node] = {}
    keys: dict[Any, Node] = {}
    changed = False
    for node in order:
        if isinstance(node.op, Leaf):
            cur = node
            if cse and isinstance(node.op, Constant):
                k = _const_key(node)
                if k is not None:
                    cur = keys.setdefault(k, node)
                    if cur is not node:
                        log.append(LogEntry(pass_name, "cse", (node,), cur))
            new[node] = cur
            continue
        ins = tuple([new[i] for i in node.inputs])
        if ins != node.inputs:  # Node equality is identity
            cur = rebuild(node, ins)
            ctx.original[cur] = node
        else:
            cur = node
        if cur is not node or node.serial >= seen_below:
            cur = _in_bodies(cur, table, pass_name, log, cse, max_local)
        for _ in range(max_local if cur is not node or node.serial >= seen_below else 0):
            if isinstance(cur.op, Leaf):
                break
            nxt = _try_rules(cur, table, ctx, pass_name, log)
            if nxt is None:
                break
            cur = nxt
            ctx.original[cur] = node
            changed = True
        if cse and not isinstance(cur.op, Leaf):
            try:
                k = (cur.op, tuple(id(i) for i in cur.inputs), bool(cur.provenance))
                hash(k)
            except TypeError:
                k = None
            if k is not None:
                rep = keys.setdefault(k, cur)
                if rep is not cur:
                    log.append(LogEntry(pass_name, "cse", (cur,), rep))
                    cur = rep
        elif cse and isinstance(cur.op, Constant):
            k = _const_key(cur)
            if k is not None:
                cur = keys.setdefault(k, cur)
        new[node] = cur
    return [new[r] for r in roots], changed


def _try_rules(cur: Node, table: RuleTable, ctx: Context, pass_name: str, log: list) -> Node | None:
    for r in table.for_op(type(cur.op)):
        watermark = next(_serials)
        out = r.fn(cur, ctx)
        if out is None:
            continue
        absorbed: tuple[Node, ...] = ()
        if isinstance(out, tuple):
            out, absorbed = out[0], tuple(out[1])
        if out is cur or out.type != cur.type:
            continue  # a rule must keep shape and dtype exactly; otherwise it does not apply
        before = (cur, *absorbed)
        stamp_fresh(out, watermark, cur, union_provenance(before))
        log.append(LogEntry(pass_name, r.name, before, out))
        return out
    return None


def _const_key(node: Node):
    v = node.op.value
    if v.size > 64:
        return None
    return ("const", v.dtype.str, v.shape, v.tobytes(), bool(node.provenance))


def verify(roots: Sequence[Node], where: str = "") -> None:
    """Check a graph: acyclic, every input a node, every type re-inferred equal, leaves
    consistent with their values. Raises :class:`GraphError` naming the pass and node."""
    tag = f" after pass {where!r}" if where else ""
    try:
        order = toposort(roots)
    except ValueError as e:
        raise GraphError(f"graph is cyclic{tag}: {e}") from None
    for n in order:
        for i in n.inputs:
            if not isinstance(i, Node):
                raise GraphError(f"dangling input {i!r} of {n.describe()}{tag}")
        op = n.op
        if isinstance(op, Leaf):
            if n.inputs:
                raise GraphError(f"leaf {n.describe()} has inputs{tag}")
            if isinstance(op, Input) and op.type != n.type:
                raise GraphError(f"input {n.describe()} disagrees with its declared type{tag}")
            if isinstance(op, (Param, Constant)) and (op.value.shape != n.shape or op.value.dtype != n.dtype):
                raise GraphError(f"{n.describe()} holds a {op.value.dtype}{op.value.shape} value{tag}")
            continue
        try:
            t = op.infer(*(i.type for i in n.inputs))
        except (OpError, TypeError) as e:
            raise GraphError(f"{n.describe()} no longer type-checks{tag}: {e}") from None
        if t != n.type:
            raise GraphError(f"{n.describe()}: re-inferred type {t} differs{tag}")
        for body in op.subgraphs():  # bodies are graphs too: same checks, inside
            verify(body.outputs, f"{where} (inside {op.name})" if where else f"inside {op.name}")
