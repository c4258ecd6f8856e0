"""``gb.compile``: turn output nodes (and parameter updates) into a callable Program."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import DTypeError, FeedError, GraphError, ShapeError
from ..graph.node import Node
from ..graph.traverse import toposort
from ..graph.types import TensorType, format_shape
from ..ops.base import OpError
from ..ops.leaves import Input, Param
from .feeds import bind_feeds
from .executor import Executor
from ..graph.gcpause import without_gc
from .loopgen import LoopLayout
from .options import DEFAULT, RuntimeOptions
from .overlap import overlap_partition
from .plan import MemoryPlan
from .remat import rematerialize
from .schedule import Partition, partition

Updates = Mapping[Node, Node] | Sequence[tuple[Node, Node]] | None


def normalize_updates(updates: Updates) -> list[tuple[Node, Node]]:
    """Check ``(param, new_value)`` pairs: a parameter at most once, matching shape and dtype."""
    if updates is None:
        return []
    pairs = list(updates.items()) if isinstance(updates, Mapping) else [tuple(p) for p in updates]
    seen: set[Node] = set()
    out = []
    from ..ops.base import as_node

    for p, v in pairs:
        if not isinstance(p, Node) or not isinstance(p.op, Param):
            raise GraphError(f"updates: only parameters can be updated, got {p!r}")
        if p in seen:
            raise GraphError(f"updates: parameter {p.name!r} is updated twice")
        seen.add(p)
        v = as_node(v, like=p)
        if len(v.shape) != len(p.shape) or any(a is not None and a != b for a, b in zip(v.shape, p.shape)):
            raise ShapeError(f"updates: new value for {p.name!r} has shape {format_shape(v.shape)}, parameter has {format_shape(p.shape)}")
        if not np.can_cast(v.dtype, p.dtype, "safe"):  # the feed rule: only lossless casts
            raise DTypeError(f"updates: new value for {p.name!r} is {v.dtype.name}, parameter is {p.dtype.name} "
                             f"(only lossless casts are automatic; cast it with gb.cast(..., {p.dtype.name!r}))")
        out.append((p, v))
    return out


class Program:
    """A compiled graph: call it with feeds, get the outputs as a list of arrays.

    Parameters are read at each call and updated in place after every output and new
    value has been computed, so a failing call never leaves parameters half-updated.

    Attributes
    ----------
    inputs, outputs : list[Node]
        As given to :func:`compile` (``outputs`` may be rewritten by optimisation; the
        originals are in ``user_outputs``).
    partition : Partition
        The forward/backward split and the values saved across it (built once, as data).
    forward, backward : Schedule
        The two schedules of ``partition``; ``backward.saved`` are the activations kept for it.
    """

    @without_gc  # deep graphs: the cyclic GC would rescan every node per allocation burst
    def __init__(
        self,
        inputs: Sequence[Node],
        outputs: Sequence[Node],
        updates: Updates = None,
        *,
        optimize: bool = True,
        debug: bool = False,
        check_numerics: bool = False,
        passes: Mapping[str, bool] | None = None,
        runtime: RuntimeOptions | None = None,
        remat: str = "none",
        memory_budget: int | None = None,
    ) -> None:
        if runtime is not None and not isinstance(runtime, RuntimeOptions):
            raise GraphError(f"compile: runtime= takes a gb.RuntimeOptions, got {type(runtime).__name__}")
        self.runtime_options = runtime or DEFAULT
        self.inputs = list(inputs)
        for i in self.inputs:
            if not isinstance(i, Node) or not isinstance(i.op, Input):
                raise GraphError(f"compile: inputs must be gb.input nodes, got {i!r}")
        names = [i.op.input_name for i in self.inputs]
        if len(set(names)) != len(names):
            raise GraphError(f"compile: duplicate input names in {names}")
        self.user_outputs = [o for o in outputs]
        for o in self.user_outputs:
            if not isinstance(o, Node):
                raise GraphError(f"compile: outputs must be nodes, got {type(o).__name__}")
        self.updates = normalize_updates(updates)
        self.user_updates = list(self.updates)  # as given (gb.save writes these, not the rewritten ones)
        self.optimize = optimize
        self.debug = debug
        self.check_numerics = check_numerics
        roots = self.user_outputs + [v for _, v in self.updates]
        self.order = toposort(roots)
        missing = [n for n in self.order if isinstance(n.op, Input) and n not in set(self.inputs)]
        if missing:
            raise GraphError(
                "compile: the outputs depend on input(s) not listed in inputs=: "
                + ", ".join(repr(m.op.input_name) for m in missing)
            )
        self.outputs = self.user_outputs
        self.rewrite_log, self.pass_timings, self.hazards, self.pass_snapshots = [], {}, [], {}
        if optimize:  # rewrite passes (graphbp/passes); schedules are built on the result
            from ..passes import optimize as run_passes

            result = run_passes(roots, passes, debug=debug, order=self.order)
            k = len(self.user_outputs)
            self.outputs = result.roots[:k]
            self.updates = [(p, v) for (p, _), v in zip(self.updates, result.roots[k:])]
            self.order = toposort(result.roots) if result.order is None else result.order
            self.rewrite_log, self.pass_timings = result.log, result.timings
            self.hazards, self.pass_snapshots = result.hazards, result.snapshots
        self.partition: Partition = partition(self.order)
        # Rematerialisation rebuilds the partition (and the backward nodes reading recomputed
        # values), so the outputs, updates and order follow its map of rebuilt nodes.
        self.partition, rebuilt, self.remat = rematerialize(self.partition, remat, budget=memory_budget)
        if rebuilt:
            self.outputs = [rebuilt.get(o, o) for o in self.outputs]
            self.updates = [(p, rebuilt.get(v, v)) for p, v in self.updates]
            self.order = toposort(self.outputs + [v for _, v in self.updates])
            reached = set(self.order)  # a forward value now only recomputed is not computed twice
            if not reached.issuperset(self.partition.forward):
                self.partition = Partition.from_lists(
                    [n for n in self.partition.forward if n in reached], self.partition.backward)
        self.partition = overlap_partition(self.partition)  # split collectives: start early, wait late
        self.forward, self.backward = self.partition.schedules()
        self._executor = Executor(self)  # memory plan + generated code per shape signature

    # -- calling --------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        if not kwargs:  # feeds already checked at these exact types and shapes: skip re-binding
            out = self._executor.run_prechecked(args)
            if out is not None:
                return out
        feeds = bind_feeds(self.inputs, args, kwargs)
        return self._executor.run(feeds)

    def runner(self, *args: Any) -> Callable[..., list[np.ndarray]]:
        """The generated ``step`` for the feeds' types and shapes, checked and planned once:
        a loop body calls it every step with feeds of the same types and shapes, without
        binding or checking them again (``Scan``'s kernel). A failing call runs again on the
        checked path, which names the op that failed."""
        feeds = bind_feeds(self.inputs, args, {})
        if self.check_numerics:
            return self
        step = self._executor.plan_for(feeds).generated.step

        def run(*arrays: np.ndarray) -> list[np.ndarray]:
            try:
                return step(*arrays)
            except Exception:
                return self._executor.run(list(arrays))  # re-raises, explained
        return run

    def runner_loop(self, layout: LoopLayout | tuple, *args: Any) -> Callable[..., tuple] | None:
        """The generated ``loop(steps, *arrays)`` for the feeds' types and shapes (one step's
        feeds, checked and planned once): it runs the program once per ``t`` in ``steps``,
        taking its feeds and the buffers it writes its outputs into from ``arrays`` as
        ``layout`` says (:class:`~graphbp.runtime.loopgen.LoopLayout`, or the tuple of its
        fields from an op below the runtime), so a scan's steps run
        in one generated function writing straight into its stacked buffers. An error is
        NumPy's own: the caller runs the steps again on the checked path to explain it. None
        for a program that cannot (one checking numerics or updating parameters)."""
        if self.check_numerics or self.updates:
            return None
        if not isinstance(layout, LoopLayout):
            layout = LoopLayout(*layout)
        known = self._executor.planned(args)  # a loop runs once per call of the program around it
        if known is not None:
            hit = known.loops.get(layout)
            if hit is not None:
                return hit.step
        return self._executor.loop_for(bind_feeds(self.inputs, args, {}), layout).step

    def loop_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised array for a loop around this program to keep its results in
        (:meth:`runner_loop`'s stacked buffers): one an earlier call used when nothing holds
        it any more, so a training step writes the same pages every call
        (:class:`~graphbp.runtime.loopgen.ArrayPool`)."""
        return self._executor.pool.empty(shape, dtype)

    def source(self, *shapes: tuple[int, ...]) -> str:
        """The generated Python of the last call's shape signature (or of the feed shapes
        given, one per input): one NumPy call per line, the node and user line in a comment."""
        return self._executor.get(shapes).generated.source

    def memory_plan(self, *shapes: tuple[int, ...]) -> MemoryPlan:
        """Peak bytes of the forward and backward schedules, bytes saved for backward and
        buffer bytes, for the last call's shape signature (or for the feed shapes given)."""
        planned = self._executor.get(shapes).planned
        return planned.report.with_remat(self.remat, planned.types)

    def plan_timings(self, *shapes: tuple[int, ...]) -> dict[str, float]:
        """Seconds the first call of a shape signature spent before running (``shapes``,
        ``plan``, ``codegen``); the last call's signature unless shapes are given. With
        ``pass_timings`` it splits compile time by phase."""
        return dict(self._executor.get(shapes).timings)

    def _check_shapes(self, feeds: list[np.ndarray]) -> dict[Node, TensorType]:
        """Propagate the feeds' concrete shapes through every op's shape rule (once per
        shape signature: the executor caches the plan built from the result), so a batch
        mismatch is a FeedError before any work starts. Returns every node's concrete type."""
        types: dict[Node, TensorType] = {n: TensorType(f.shape, f.dtype) for n, f in zip(self.inputs, feeds)}
        memo: dict = {}  # (op, operand types) -> type: ops are frozen values, infer is pure
        for node in self.order:
            if node in types:
                continue
            if not node.inputs:
                types[node] = node.type
                continue
            try:
                in_types = tuple([types[i] for i in node.inputs])
                try:
                    key = (node.op, in_types)
                    hit = memo.get(key)
                except (TypeError, ValueError):  # an op holding an unhashable or array value
                    key = hit = None
                if hit is None:
                    hit = node.op.infer(*in_types)
                    if key is not None:
                        memo[key] = hit
                types[node] = hit
            except OpError as e:
                where = f" (built at {node.origin})" if node.origin else ""
                shapes = ", ".join(f"{i.name or i.op.name}: {format_shape(types[i].shape)}" for i in node.inputs)
                fed = ", ".join(f"{n.op.input_name}{format_shape(f.shape)}" for n, f in zip(self.inputs, feeds))
                raise FeedError(
                    f"the fed shapes do not fit {node.op.name}{where}: {e.reason}\n"
                    f"  operands at these shapes: {shapes}\n  feeds: {fed}"
                ) from None
        return types

    # -- inspection (drawing and text live in graphbp.render) -------------------------
    def explain(self, **options: Any) -> "str":
        """The schedules (step, op, type, bytes, provenance) and a cost summary, as text."""
        from ..render import explain

        return explain(self, **options)

    def to_dot(self, view: str = "joint", **options: Any):
        """A ``graphviz.Digraph`` of this program (see :func:`graphbp.to_dot`)."""
        from ..render import to_dot

        return to_dot(self, view, **options)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        from ..render import repr_mimebundle

        return repr_mimebundle(self, "joint")

    def _repr_svg_(self) -> str | None:
        from ..render import repr_svg

        return repr_svg(self, "joint")

    def __reduce__(self) -> tuple:
        """Pickle through ``gb.save``'s document (so a program can go to worker processes).

        The unpickled program is recompiled from the saved graph: same inputs, outputs,
        updates and flags, with its own copies of the parameters (updating them does not
        touch the original's, as across processes)."""
        from ..io.container import dump_json
        from ..io.format import to_document

        doc, arrays = to_document(self)
        return _unpickle_program, (dump_json(doc), arrays)

    def __repr__(self) -> str:
        ins = ", ".join(i.op.input_name for i in self.inputs)
        return (
            f"<Program ({ins}) -> {len(self.outputs)} outputs, {len(self.updates)} updates; "
            f"forward {len(self.forward)} ops, backward {len(self.backward)} ops>"
        )


def _unpickle_program(graph_json: bytes, arrays: dict[str, np.ndarray]) -> Program:
    """Rebuild a pickled :class:`Program`, with the same checks as ``gb.load``."""
    import json

    from ..io.format import from_document

    return from_document(json.loads(graph_json), arrays, path="<pickle>")


def compile(
    inputs: Sequence[Node],
    outputs: Sequence[Node] | Node,
    updates: Updates = None,
    *,
    optimize: bool = True,
    debug: bool = False,
    check_numerics: bool = False,
    passes: Mapping[str, bool] | None = None,
    runtime: RuntimeOptions | None = None,
    remat: str = "none",
    memory_budget: int | None = None,
) -> Program:
    """Compile ``outputs`` (and parameter ``updates``) as a function of ``inputs``.

    Parameters
    ----------
    inputs : sequence of input nodes
        The feeds, in call order (``f(X, T)`` or by name, ``f(x=X, t=T)``).
    outputs : node or sequence of nodes
        What each call returns, as a list of arrays.
    updates : mapping or sequence of (param, new_value) pairs, optional
        Parameter updates applied in place after the outputs are computed.
    optimize : bool, default True
        Run the rewrite passes before scheduling.
    debug : bool
        Verify the graph after every pass and report numeric hazards.
    check_numerics : bool
        Stop at the first non-finite value with an error naming the op that made it.
    passes : mapping of pass name to bool, optional
        Switch single rewrite passes off (``{"cse": False}``); see ``graphbp.passes.PASS_NAMES``.
    runtime : RuntimeOptions, optional
        Thresholds of the memory plan and code generation (cache-blocking size and block
        sizes, constant folding size, plans kept per program, ...). The defaults were
        measured on the benchmarks; see :class:`graphbp.RuntimeOptions`.
    remat : {"none", "min_cut"}
        Which forward values the backward pass recomputes instead of saving (docs/memory.md).
        ``"none"`` recomputes only ``gb.checkpoint()`` regions; ``"min_cut"`` also every cheap
        value (elementwise, views, small reductions) where a minimum cut says it saves bytes.
    memory_budget : int, optional
        With ``remat="min_cut"``: bytes (unknown dims at 256 rows) the values kept for the
        backward pass may hold; more is recomputed (down to segment checkpointing) to fit,
        else a ``GraphError`` names the smallest budget that fits.
    """
    outs = [outputs] if isinstance(outputs, Node) else list(outputs)
    return Program(inputs, outs, updates, optimize=optimize, debug=debug, check_numerics=check_numerics,
                   passes=passes, runtime=runtime, remat=remat, memory_budget=memory_budget)
