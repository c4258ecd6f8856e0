"""The pass framework: rules keyed by op classes, a rebuilding rewrite engine, a verifier.

Graphs are immutable, so a pass never edits a node: it walks the graph once in topological
order, keeps a memo ``old -> new`` and rebuilds a node only when one of its inputs was
rebuilt or a rule replaced it (:func:`graphbp.graph.rewrite.rewrite`, the one walk every pass
uses). Leaves (inputs, parameters) are never replaced: a parameter *is* its state. A phase
runs its rules in sweeps until a sweep changes nothing (bounded). A rule builds its nodes
inside :func:`graphbp.graph.context.stamp`, so they carry the matched node's user line,
scope and provenance from construction. Effectful nodes (``op.effectful``) are never
matched, merged, absorbed or dropped by a rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import GraphError
from ..graph.context import Provenance, reset_labels, set_labels
from ..graph.node import Node
from ..graph.rewrite import rebuild, restamp, rewrite, step_into  # noqa: F401 - the one rebuild helper, re-exported
from ..graph.traverse import toposort
from ..graph.types import TupleType
from ..ops.base import OpError
from ..ops.control import TupleGet
from ..ops.creation import Full
from ..ops.leaves import Constant, Input, Leaf, Param
from ..ops.shape import BroadcastTo, ExpandDims, Reshape, Squeeze, Transpose

_SAME_ELEMENTS = (BroadcastTo, Reshape, ExpandDims, Squeeze, Transpose)  # ops that only rearrange elements


def holds_bodies(order: Sequence[Node]) -> bool:
    """True when a node of ``order`` holds a body: a pass that found nothing to do in the
    graph itself must still step into it. Only ops whose class overrides ``subgraphs`` are
    asked (several passes ask this of a whole deep graph that holds none)."""
    for n in order:
        op = n.op
        if op.may_hold_bodies and op.subgraphs():
            return True
    return False


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
    order: list[Node] | None = None
    """The roots' topological order when the pass has it at no cost (it changed nothing, or
    its last sweep did not): the next pass reuses it instead of walking the graph again."""


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
    """Per-sweep facts rules may consult: use counts of the sweep's input graph (``order``,
    read by the caller at ``roots``), counted when a rule first asks. ``asked`` counts the
    questions: an answer the rules gave without asking holds in every later sweep."""

    order: list[Node]
    roots: list[Node]
    original: dict[Node, Node]
    _uses: dict[Node, int] | None = None
    asked: int = 0

    @property
    def uses(self) -> dict[Node, int]:
        self.asked += 1
        if self._uses is None:
            uses = count_uses(self.order)
            for r in self.roots:  # a root is read by the caller
                uses[r] = uses.get(r, 0) + 1
            self._uses = uses
        return self._uses

    def n_uses(self, node: Node) -> int:
        """How many consumers ``node`` (or the node it was rebuilt from) has; 0 if fresh."""
        return self.uses.get(self.original.get(node, node), 0)


def constant_value(node: Node) -> np.ndarray | None:
    """The value of a constant node (``None`` for anything computed)."""
    return node.op.value if isinstance(node.op, Constant) else None


def is_const_scalar(node: Node, value: float) -> bool:
    """True when every element of ``node`` is known to equal ``value`` before running: a
    constant of any size, a ``full`` node (``zeros_like``), or a broadcast, reshape or
    transpose of one (a zero gradient accumulator, however large)."""
    while isinstance(node.op, _SAME_ELEMENTS) and node.inputs:
        node = node.inputs[0]
    op = node.op
    if isinstance(op, Full):
        return op.value == value
    if type(op) is not Constant:
        return False
    v = op.value
    if v.size == 0 or v.dtype.kind not in "biuf":
        return False
    if v.flat[0] != value:  # most constants answer here: one NumPy scalar compare, no array made
        return False
    if v.size == 1:
        return True
    return bool(v.min() == value and v.max() == value)  # two reductions, no temporary array


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
              max_sweeps: int = 6, max_local: int = 8, order: list[Node] | None = None) -> PassResult:
    """Apply ``rules`` (and hash-consing when ``cse``) in sweeps until nothing changes.
    ``order`` is the roots' topological order when the caller has it."""
    table = RuleTable(rules)
    if not cse and order is not None and _idle(order, table):
        return PassResult(roots, [], order)
    log: list[LogEntry] = []
    tried: set[Node] = set()
    declined: set[Node] = set()
    for _ in range(max_sweeps):
        before = roots
        roots, changed, tried, order, declined = _sweep(roots, table, pass_name, log, cse, max_local, tried,
                                                        order, declined)
        same = all(a is b for a, b in zip(roots, before))
        if not same:
            order = None
        if not changed:
            break
    return PassResult(roots, log, order)


def _idle(order: list[Node], table: RuleTable) -> bool:
    """True when a sweep without CSE cannot change the graph: no node of a class a rule
    tracks, none that may hold a body, none with several outputs (which are pruned)."""
    cache: dict[type, bool] = {}
    for n in order:
        cls = type(n.op)
        hit = cache.get(cls)
        if hit is None:
            hit = cache[cls] = bool(table.for_op(cls)) or cls.may_hold_bodies
        if hit or type(n.type) is TupleType:
            return False
    return True


def in_bodies(run: Callable[[list[Node]], PassResult], log: list[LogEntry]) -> Callable[[list[Node]], list[Node]]:
    """The pass ``run`` as a rewriter of a body's outputs (for :func:`step_into` and
    ``rewrite(bodies=...)``), its log entries added to ``log``: every pass steps into
    scan and cond bodies this way, nested ones included."""
    def inside(roots: list[Node]) -> list[Node]:
        res = run(roots)
        log.extend(res.log)
        return res.roots

    return inside


def _in_bodies(cur: Node, table: RuleTable, pass_name: str, log: list, cse: bool, max_local: int) -> Node:
    """Run the same rules inside the bodies of a higher-order node; ``cur`` rebuilt over
    the rewritten bodies when one changed."""
    if not cur.op.subgraphs():
        return cur
    return step_into(cur, in_bodies(lambda rs: run_rules(rs, table.rules, pass_name, cse=cse, max_local=max_local),
                                    log))


def _outputs_read(order: list[Node]) -> dict[Node, list[int]]:
    """For each multi-output node, the output indices some ``TupleGet`` in ``order`` reads."""
    read: dict[Node, set[int]] = {}
    for n in order:
        if isinstance(n.op, TupleGet):
            read.setdefault(n.inputs[0], set()).add(n.op.index)
    return {t: sorted(k) for t, k in read.items()}


def _prune_outputs(cur: Node, keep: list[int], renumber: dict[Node, dict[int, int]], pass_name: str,
                   log: list) -> Node:
    """``cur`` computing only the outputs ``keep`` (``op.keep_outputs``), when its op can: a
    gradient cond asked for every operand's cotangent drops those nobody reads."""
    op = cur.op.keep_outputs(keep)
    if op is None:
        return cur
    out = Node(op, cur.inputs, op.infer(*(i.type for i in cur.inputs)), name=cur.name, origin=cur.origin,
               scope=cur.scope, provenance=cur.provenance)
    renumber[out] = {old: k for k, old in enumerate(keep)}
    log.append(LogEntry(pass_name, "prune_outputs", (cur,), out))
    return out


def _sweep(roots, table, pass_name, log, cse, max_local, tried, order=None, declined=frozenset()):
    """One pass over the topological order. Rules run on nodes the previous sweep did not
    see (``tried`` holds its graph) and did not build and decline without asking for use
    counts (``declined``): an unchanged node has the same inputs all the way down, so the
    rules already said no to it (only use counts change between sweeps, as CSE merges
    users). Returns the new roots, whether a rule fired (CSE merges converge within the
    sweep: users come later in the order), this sweep's nodes, their order and the nodes
    it declined so."""
    order = toposort(roots) if order is None else order
    seen = set(order)
    made: set[Node] = set()  # nodes this sweep built: with ``seen``, what a rule's fresh nodes are not
    final: set[Node] = set()  # built nodes the rules declined without asking for use counts
    ctx = Context(order, roots, {})
    new: dict[Node, Node] = {}
    keys: dict[Any, Node] = {}
    changed = False
    read: dict[Node, list[int]] | None = None  # built when the first multi-output node comes
    renumber: dict[Node, dict[int, int]] = {}  # a pruned multi-output node: old index -> new
    for_op = table.for_op
    for node in order:
        op = node.op
        if isinstance(op, Leaf):
            cur = node
            if cse and isinstance(op, Constant):
                k = _const_key(node)
                if k is not None:
                    cur = keys.setdefault(k, node)
                    if cur is not node:
                        log.append(LogEntry(pass_name, "cse", (node,), cur))
            new[node] = cur
            continue
        ins = tuple([new[i] for i in node.inputs])
        if renumber and isinstance(op, TupleGet) and ins[0] in renumber:
            cur = Node(TupleGet(renumber[ins[0]][op.index]), ins, node.type, name=node.name,
                       origin=node.origin, scope=node.scope, provenance=node.provenance)
        elif ins != node.inputs:  # Node equality is identity
            cur = rebuild(node, ins)
            ctx.original[cur] = node
            made.add(cur)
        else:
            cur = node
        if type(cur.type) is TupleType:
            if read is None:
                read = _outputs_read(order)
            if len(read.get(node, ())) < len(cur.type):
                cur = _prune_outputs(cur, read[node], renumber, pass_name, log)
        pruned = renumber.get(cur) if renumber else None  # rules and body rewrites below replace cur: keep its renumbering
        if cur is not node or (node not in tried and node not in declined):
            if cur.op.may_hold_bodies and cur.op.subgraphs():
                stepped = _in_bodies(cur, table, pass_name, log, cse, max_local)
                if stepped is not cur:
                    cur = stepped
                    ctx.original[cur] = node
                    made.add(cur)
            for _ in range(max_local):
                cop = cur.op
                rules = for_op(type(cop))
                if not rules or isinstance(cop, Leaf) or cop.effectful:
                    break
                asked = ctx.asked
                nxt = _try_rules(cur, rules, ctx, pass_name, log, seen, made)
                if nxt is None:
                    if ctx.asked == asked and cur is not node:
                        final.add(cur)
                    break
                cur = nxt
                ctx.original[cur] = node
                made.add(cur)
                changed = True
        if cse:
            cop = cur.op
            if isinstance(cop, Leaf):
                if isinstance(cop, Constant):
                    k = _const_key(cur)
                    if k is not None:
                        cur = keys.setdefault(k, cur)
            elif not cop.effectful:
                try:  # nodes hash and compare by identity; an op holding an array does not hash
                    rep = keys.setdefault((cop, cur.inputs, bool(cur.provenance)), cur)
                except TypeError:
                    rep = cur
                if rep is not cur:
                    log.append(LogEntry(pass_name, "cse", (cur,), rep))
                    cur = rep
        if pruned is not None:
            renumber.setdefault(cur, pruned)
        new[node] = cur
    return [new[r] for r in roots], changed, seen, order, final


def _try_rules(cur: Node, rules: list[Rule], ctx: Context, pass_name: str, log: list,
               seen: set[Node], made: set[Node]) -> Node | None:
    """The replacement the first of ``rules`` (those tracking ``cur``'s class) gives, its fresh
    nodes stamped with ``cur``'s user line and scope and the union provenance of the nodes it
    stands for. A node is fresh when it is neither in the sweep's graph (``seen``) nor built
    by the sweep before (``made``)."""
    token = set_labels((cur.origin, cur.scope, cur.provenance))  # a stamp, per node tried
    try:
        for r in rules:
            out = r.fn(cur, ctx)
            if out is None:
                continue
            absorbed: tuple[Node, ...] = ()
            if isinstance(out, tuple):
                out, absorbed = out[0], tuple(out[1])
            if out is cur or out.type != cur.type:
                continue  # a rule must keep shape and dtype exactly; otherwise it does not apply
            before = (cur, *absorbed)

            def fresh(n: Node) -> bool:
                return n not in seen and n not in made

            if not keeps_effects(out, before, fresh):
                continue
            prov = union_provenance(before)
            if prov != cur.provenance:  # the rule absorbed nodes of other records
                out = restamp(out, fresh, prov, {})
            log.append(LogEntry(pass_name, r.name, before, out))
            return out
    finally:
        reset_labels(token)
    return None


def keeps_effects(out: Node, before: Sequence[Node], fresh: Callable[[Node], bool]) -> bool:
    """False when replacing ``before[0]`` by ``out`` would absorb an effectful node or lose
    one the replaced nodes read (conservatively: it must be ``out``, or read by ``out``'s
    fresh nodes, directly)."""
    if any(b.op.effectful for b in before):
        return False
    needed = {i for b in before for i in b.inputs if i.op.effectful}
    if not needed:
        return True
    reached: set[Node] = set()
    stack = [out]
    while stack:
        n = stack.pop()
        if n in reached:
            continue
        reached.add(n)
        if fresh(n):
            stack.extend(n.inputs)
    return needed <= reached


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
