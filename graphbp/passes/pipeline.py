"""``optimize``: the pass pipeline, its switches, timings, hazards and snapshots.

The pipeline is data: :data:`PIPELINE` is an ordered tuple of :class:`PassSpec` steps, each
naming the switches that enable it and the steps it depends on (which must come earlier;
:func:`check_pipeline` enforces it). Phases, in order (PyTensor's names): *stabilize*
(``stability`` rules, then gradients re-derived from the stabilised loss; ``nan_guard``)
runs first, on the graph as ``gb.grad`` built it, because both read gradient provenance,
which names the forward nodes it came from; *canonicalize* (``algebraic``,
``constant_fold``, ``cse``: one engine run to a fixed point); ``licm`` (work that does not
depend on a loop's carry leaves the ``scan`` body); *specialize* (``accumulate``,
``fuse_matmul``). Dead code is never carried: a pass returns only what the roots reach,
so unrequested gradients and replaced nodes simply disappear.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..errors import GraphError
from ..graph.node import Node
from ..graph.traverse import toposort
from . import canonicalize, licm, specialize, stability
from .polynomial import collect_terms
from .residuals import reuse_residuals, share_softmax
from .slices import merge_slices, stack_view_ys
from .core import LogEntry, PassResult, Rule, holds_bodies, run_rules, verify
from .nan_guard import Hazard, nan_guard
from .rederive import rederive


@dataclasses.dataclass
class PassContext:
    """What a step may read: the switches that are on and what earlier steps did."""

    on: frozenset[str]
    log: list[LogEntry]
    hazards: list[Hazard]
    known: tuple[tuple[Node, ...], list[Node]] | None = None  # roots and their order, when known

    def rules(self, rules: Iterable[Rule]) -> list[Rule]:
        return [r for r in rules if r.group in self.on]

    def order(self, roots: Sequence[Node]) -> list[Node]:
        """The roots' topological order, walked once per distinct graph: an earlier step
        left it (a step that changed nothing returns the same root objects), or it is
        walked now and kept for the steps after. Walking a deep graph is a large share of
        each pass, and most passes change nothing in most graphs."""
        if not self.has_order(roots):
            self.known = (tuple(roots), toposort(roots))
        return self.known[1]

    def has_order(self, roots: Sequence[Node]) -> bool:
        return self.known is not None and len(self.known[0]) == len(roots) and all(
            a is b for a, b in zip(self.known[0], roots))


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """One step of the pipeline.

    ``name`` keys its timing and snapshot; it runs when any of ``switches`` is on, and
    ``run(roots, ctx)`` returns its result, or ``None`` when it has nothing to do.
    ``after`` states the steps it depends on (they must come earlier) and ``why`` says why.
    """

    name: str
    switches: tuple[str, ...]
    run: Callable[[list[Node], PassContext], PassResult | None]
    after: tuple[str, ...] = ()
    why: str = ""


def _stabilize(roots: list[Node], ctx: PassContext) -> PassResult:
    """Stability rules; when one fired, gradients are re-derived from the stable forward.

    Runs first, on the graph exactly as ``gb.grad`` built it, so the gradient exits can be
    checked against a fresh ``gb.grad`` of the original loss (see :mod:`.rederive`)."""
    rules = list(stability.RULES)
    res = run_rules(roots, rules, "stabilize", order=ctx.order(roots))
    if all(e.rule == "prune_outputs" for e in res.log):  # dropping unread outputs changes no
        return res  # formula; re-deriving would differentiate a scan pruned of its residuals
    again = rederive(roots, res.roots, lambda rs: run_rules(rs, rules, "stabilize").roots)
    return PassResult(again.roots, res.log + again.log)


def _nan_guard(roots: list[Node], ctx: PassContext) -> PassResult:
    res, found = nan_guard(roots, order=ctx.order(roots))
    ctx.hazards.extend(found)
    return res


def _canonicalize(name: str) -> Callable[[list[Node], PassContext], PassResult | None]:
    def run(roots: list[Node], ctx: PassContext) -> PassResult | None:
        if name == "recanonicalize" and not any(e.pass_name in _REWRITERS for e in ctx.log):
            return None
        return run_rules(roots, ctx.rules(canonicalize.RULES), name, cse="cse" in ctx.on, order=ctx.order(roots))
    return run


def _licm(roots: list[Node], ctx: PassContext) -> PassResult | None:
    """Move carry-independent work out of scan bodies, read per-step values a forward scan
    computes from it instead of recomputing them after it (a reverse scan's hoisted
    recomputation), then merge what two loops hoisted alike (CSE)."""
    if not holds_bodies(ctx.order(roots)):
        return None  # no loop to hoist from: skip the walk
    res = licm.hoist_loops(roots)
    if not res.log:
        return None
    reused = reuse_residuals(res.roots)
    again = run_rules(reused.roots, ctx.rules(canonicalize.RULES), "licm", cse="cse" in ctx.on)
    return PassResult(again.roots, res.log + reused.log + again.log)


def _merge_slices(roots: list[Node], ctx: PassContext) -> PassResult:
    """Join elementwise ops over touching slices, then stack the merged values a scan emits
    instead of their slices (the pieces become views of the stacked value outside)."""
    res = merge_slices(roots, order=ctx.order(roots))
    if not res.log:
        return res
    again = stack_view_ys(res.roots)
    return PassResult(again.roots, res.log + again.log)


_CANON = ("algebraic", "constant_fold", "cse")
_REWRITERS = ("collect_terms",)  # passes whose new nodes recanonicalize folds and merges

PIPELINE: tuple[PassSpec, ...] = (
    PassSpec("stabilize", ("stability",), _stabilize),
    PassSpec("nan_guard", ("nan_guard",), _nan_guard, after=("stabilize",),
             why="guards the gradients stabilize re-derived; reads provenance before any rebuild"),
    PassSpec("canonicalize", _CANON, _canonicalize("canonicalize"), after=("stabilize", "nan_guard"),
             why="merges and folds nodes, after the passes that match on gradient provenance"),
    PassSpec("share_softmax", ("share_softmax",), lambda rs, ctx: share_softmax(rs, ctx.order(rs)),
             after=("canonicalize",),
             why="finds the loss and the gradient's softmax on one logits node once CSE has merged them"),
    PassSpec("licm", ("licm",), _licm, after=("canonicalize",),
             why="moves the loop bodies as canonicalize simplified them; CSE then merges the hoisted copies"),
    PassSpec("merge_slices", ("merge_slices",), lambda rs, ctx: _merge_slices(rs, ctx),
             after=("canonicalize", "licm"),
             why="joins what is left per step in a body after licm, on the slices CSE merged"),
    PassSpec("collect_terms", ("collect_terms",), lambda rs, ctx: collect_terms(rs, order=ctx.order(rs)),
             after=("canonicalize",),
             why="reads sums of products once CSE has merged equal operands, so like terms match"),
    PassSpec("accumulate", ("accumulate",), lambda rs, ctx: specialize.flatten_adds(rs, ctx.order(rs)),
             after=("canonicalize",), why="flattens the add chains that remain after simplification"),
    PassSpec("recanonicalize", _CANON, _canonicalize("recanonicalize"), after=("collect_terms",),
             why="the factored forms' scalar factors meet the user's, and both sides' equal products merge"),
    PassSpec("fuse_matmul", ("fuse_matmul",), lambda rs, ctx: specialize.fuse_matmul(rs, order=ctx.order(rs)),
             after=("canonicalize", "licm", "accumulate"),
             why="needs use counts of the final graph: a fused product must have one reader"),
)
"""The pipeline ``gb.compile`` runs, in order."""

PASS_NAMES: tuple[str, ...] = tuple(dict.fromkeys(s for spec in PIPELINE for s in spec.switches))
"""Every switch ``gb.compile(passes={...})`` accepts."""


def check_pipeline(pipeline: Sequence[PassSpec]) -> None:
    """Raise :class:`GraphError` unless every stated dependency comes earlier."""
    seen: set[str] = set()
    for spec in pipeline:
        missing = [d for d in spec.after if d not in seen]
        if missing:
            raise GraphError(f"pass {spec.name!r} must run after {', '.join(missing)}")
        seen.add(spec.name)


check_pipeline(PIPELINE)


@dataclasses.dataclass(frozen=True)
class OptimizeResult:
    """Optimised roots (same order as given) plus what happened on the way.

    ``timings`` maps each pass run to seconds; ``snapshots`` maps it to the roots after it
    (graphs are immutable, so a snapshot is just a list of roots and costs nothing);
    ``hazards`` lists the guarded singular ops ``nan_guard`` found.
    """

    roots: list[Node]
    log: list[LogEntry]
    timings: dict[str, float]
    hazards: list[Hazard]
    snapshots: dict[str, list[Node]]
    order: list[Node] | None = None  # the roots' topological order, when the last step left it

    def dead_nodes(self, before: Sequence[Node]) -> int:
        """How many nodes the original roots reached that the optimised roots do not."""
        return len(toposort(before)) - len(toposort(self.roots))


def enabled_passes(passes: Mapping[str, bool] | None = None, disable: Iterable[str] = ()) -> set[str]:
    """Resolve switches: every pass runs unless ``passes[name]`` is False or ``name`` is in
    ``disable``."""
    on = set(PASS_NAMES)
    for name, flag in (passes or {}).items():
        if name not in PASS_NAMES:
            raise ValueError(f"unknown pass {name!r}; passes are: {', '.join(PASS_NAMES)}")
        if not flag:
            on.discard(name)
    for name in disable:
        if name not in PASS_NAMES:
            raise ValueError(f"unknown pass {name!r}; passes are: {', '.join(PASS_NAMES)}")
        on.discard(name)
    return on


def effect_order(roots: Sequence[Node]) -> list:
    """The effectful ops the roots reach, in schedule order (passes must keep it)."""
    return [n.op for n in toposort(roots) if n.op.effectful]


def optimize(roots: Sequence[Node], passes: Mapping[str, bool] | None = None, *, disable: Iterable[str] = (),
             debug: bool = False, order: list[Node] | None = None) -> OptimizeResult:
    """Run the enabled steps of :data:`PIPELINE` over the graph the ``roots`` reach.

    Parameters
    ----------
    roots : sequence of Node
        Outputs and parameter-update values; the result has them in the same order.
    passes, disable
        Switches by pass name (see :data:`PASS_NAMES`).
    debug : bool
        After every pass, verify the graph (types re-inferred, acyclic, no dangling inputs)
        and check that its effectful nodes are all there, in the same order.
    order : list of Node, optional
        The roots' topological order, when the caller has it.
    """
    roots = list(roots)
    ctx = PassContext(frozenset(enabled_passes(passes, disable)), [], [],
                      None if order is None else (tuple(roots), order))
    timings: dict[str, float] = {}
    snapshots: dict[str, list[Node]] = {"input": roots}
    effects = effect_order(roots) if debug else []
    for spec in PIPELINE:
        if not ctx.on.intersection(spec.switches):
            continue
        t0 = time.perf_counter()
        res = spec.run(roots, ctx)
        if res is None:
            continue
        timings[spec.name] = timings.get(spec.name, 0.0) + time.perf_counter() - t0
        roots = res.roots
        if res.order is not None:
            ctx.known = (tuple(roots), res.order)
        ctx.log.extend(res.log)
        snapshots[spec.name] = roots
        if debug:
            verify(roots, spec.name)
            if effect_order(roots) != effects:
                raise GraphError(f"pass {spec.name!r} dropped or reordered effectful nodes")
    return OptimizeResult(roots, ctx.log, timings, ctx.hazards, snapshots,
                          ctx.known[1] if ctx.has_order(roots) else None)
