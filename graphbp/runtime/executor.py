"""Running a Program: one cached plan (buffers + generated code) per feed-shape signature.

A call binds and checks the feeds, looks up the plan of their shapes (building it the first
time: shape check, memory plan, code generation) and runs the generated ``step``. Calls are
serialised with a lock because the plan's buffers are shared state: two threads calling
one program would otherwise write each other's intermediates.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FeedError, GraphbpError
from ..ops.leaves import Param
from . import numerics
from .codegen import Generated, generate
from .loopgen import ArrayPool, LoopLayout
from .plan import Planned, make_plan

if TYPE_CHECKING:
    from .program import Program

@dataclasses.dataclass
class CachedPlan:
    planned: Planned
    generated: Generated
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds spent building it: ``shapes`` (feed shapes through every ``infer``),
    ``plan`` (lowering, liveness, allocation) and ``codegen`` (writing and compiling the
    module), as ``Program.pass_timings`` has them per pass (benchmarks/compile_phases.py)."""
    loops: dict[LoopLayout, Generated] = dataclasses.field(default_factory=dict)
    """The same plan's code run as a loop writing the outputs into buffers the caller passes,
    one module per layout (built on first request: :meth:`Executor.loop_for`)."""


class Executor:
    """The plan cache and the call path of one :class:`Program`."""

    def __init__(self, program: "Program") -> None:
        self.program = program
        self.plans: OrderedDict[tuple, CachedPlan] = OrderedDict()
        self.last_signature: tuple | None = None
        self.lock = threading.Lock()
        self.params = [n for n in program.order if isinstance(n.op, Param)]
        self.dtypes = [i.dtype for i in program.inputs]
        self.pool = ArrayPool()  # arrays a loop around the program keeps its results in

    def plan_for(self, feeds: list[np.ndarray]) -> CachedPlan:
        """The plan of the feeds' shape signature (built if new; it checks the feeds)."""
        with self.lock:
            return self._cached_plan(feeds)

    def loop_for(self, feeds: list[np.ndarray], layout: LoopLayout) -> Generated:
        """The generated ``loop(steps, *args)`` of the feeds' shape signature, running the
        program once per step with its feeds and output buffers bound as ``layout`` says
        (``codegen.generate(..., into=layout)``)."""
        with self.lock:
            plan = self._cached_plan(feeds)
            gen = plan.loops.get(layout)
            if gen is None:
                prog = self.program
                gen = plan.loops[layout] = generate(plan.planned, prog.order, prog.inputs, prog.outputs, prog.updates,
                                                    into=layout, title=_title(prog, plan.planned.report.signature))
            return gen

    def planned(self, args: tuple) -> CachedPlan | None:
        """The plan of ``args`` when they are ndarrays of the inputs' exact dtypes whose shape
        signature was planned (so checked) before; else None (take the checked path)."""
        if len(args) != len(self.dtypes):
            return None
        for a, dt in zip(args, self.dtypes):
            if type(a) is not np.ndarray or (a.dtype is not dt and a.dtype != dt):
                return None
        return self.plans.get(tuple([a.shape for a in args]))

    def _cached_plan(self, feeds: list[np.ndarray]) -> CachedPlan:
        """:meth:`plan_for` for a caller that holds the lock."""
        sig = tuple([f.shape for f in feeds])
        plan = self.plans.get(sig)
        if plan is None:
            plan = self._build(feeds, sig)
        else:
            self.plans.move_to_end(sig)
        self.last_signature = sig
        return plan

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            plan = self._cached_plan(feeds)
            if self.program.check_numerics:
                numerics.check_inputs(self.program.inputs, feeds, self.params)
            return self._step(plan, feeds)

    def _step(self, plan: CachedPlan, feeds) -> list[np.ndarray]:
        try:
            return plan.generated.step(*feeds)
        except GraphbpError:
            raise
        except Exception as e:
            err = self._explain(plan, e)
            if err is None:
                raise
            raise err from e

    def run_prechecked(self, args: tuple) -> list[np.ndarray] | None:
        """Run without :func:`bind_feeds` when every positional feed is an ndarray of its
        input's exact dtype and the shapes form a signature already planned (so already
        checked); otherwise return None and let the caller take the checked path.

        This is the per-call path of a training loop, so it does no more than that test
        (small graphs such as W1 spend a few percent of a step here): a repeated signature
        skips the LRU reordering, and a program checking numerics takes :meth:`run`."""
        if len(args) != len(self.dtypes) or self.program.check_numerics:
            return None
        for a, dt in zip(args, self.dtypes):
            if type(a) is not np.ndarray or (a.dtype is not dt and a.dtype != dt):
                return None
        sig = tuple([a.shape for a in args])
        plan = self.plans.get(sig)
        if plan is None:
            return None
        with self.lock:
            if sig != self.last_signature:
                self.plans.move_to_end(sig)
                self.last_signature = sig
            return self._step(plan, args)

    def get(self, shapes: Sequence[tuple[int, ...]]) -> CachedPlan:
        """The plan for ``shapes`` (one per input), or the last call's; built if needed."""
        prog = self.program
        with self.lock:
            if not shapes:
                if self.last_signature is not None:
                    return self.plans[self.last_signature]
                if not all(i.type.is_concrete for i in prog.inputs):
                    raise FeedError("this program has inputs with unknown dims: call it once, or pass one "
                                    "shape per input, e.g. program.source((128, 64), (128,))")
                shapes = tuple(i.shape for i in prog.inputs)
            if len(shapes) != len(prog.inputs):
                raise FeedError(f"expected {len(prog.inputs)} shapes (one per input), got {len(shapes)}")
            sig = tuple(tuple(s) for s in shapes)
            if sig in self.plans:
                return self.plans[sig]
            stand_ins = [np.broadcast_to(np.zeros((), i.dtype), s) for i, s in zip(prog.inputs, sig)]
            return self._build(stand_ins, sig)

    def _build(self, feeds: list[np.ndarray], sig: tuple) -> CachedPlan:
        # Planning allocates many small objects but frees few; the cyclic collector would
        # rescan the whole (large) graph each time, making deep graphs plan in quadratic time.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._build_plan(feeds, sig)
        finally:
            if enabled:
                gc.enable()

    def _build_plan(self, feeds: list[np.ndarray], sig: tuple) -> CachedPlan:
        prog = self.program
        t0 = time.perf_counter()
        types = prog._check_shapes(feeds)  # FeedError before any work
        t1 = time.perf_counter()
        check = prog.check_numerics
        planned = make_plan(prog.partition, prog.outputs, prog.updates, types, sig,
                            allow_deferred=not check, fold_constants=not check, options=prog.runtime_options)
        t2 = time.perf_counter()
        title = _title(prog, sig)
        hook = numerics.Checker(prog.order, list(prog.outputs) + [v for _, v in prog.updates],
                                prog.rewrite_log) if check else None
        generated = generate(planned, prog.order, prog.inputs, prog.outputs, prog.updates, check=hook,
                             title=title)
        plan = CachedPlan(planned, generated, {"shapes": t1 - t0, "plan": t2 - t1,
                                               "codegen": time.perf_counter() - t2})
        self.plans[sig] = plan
        while len(self.plans) > prog.runtime_options.max_plans:
            self.plans.popitem(last=False)
        return plan

    def _explain(self, plan: CachedPlan, exc: Exception) -> GraphbpError | None:
        """Name the op whose generated line raised (its operands read from the frame)."""
        tb = exc.__traceback__
        frame_line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == plan.generated.filename:
                frame_line = (tb.tb_frame, tb.tb_lineno)
            tb = tb.tb_next
        if frame_line is None:
            return None
        frame, lineno = frame_line
        hit = plan.generated.line_nodes.get(lineno)
        if hit is None:
            return None
        node, names = hit
        scope = {**frame.f_globals, **frame.f_locals}
        operands = [scope.get(n, np.zeros(0)) for n in names][: len(node.inputs)]
        return numerics.compute_error(node, operands, exc)


def _title(prog: "Program", sig: tuple) -> str:
    """The first comment line of a generated module: the feeds' names and shapes."""
    title = ", ".join(f"{i.op.input_name}{tuple(s)}" for i, s in zip(prog.inputs, sig))
    return f"feeds {title}" if title else ""


__all__ = ["Executor"]
