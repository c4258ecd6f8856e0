"""``gb.scan``: a loop op on the subgraph IR (JAX's ``lax.scan``, PyTensor's ``scan``).

The step function is traced ONCE into a :class:`Subgraph` body, so the graph does not grow
with the sequence length and the length may be an unknown dim fixed by the feeds. Nodes the
step reads from outside become loop-invariant operands (closure conversion in
:func:`~graphbp.graph.subgraph.trace`); work on those alone is hoisted out of the loop.

A ``Scan`` node has the operands ``init carries, xs, loop invariants`` and the outputs
``final carries, stacked ys, stacked carries`` (the carry each step *started* from, stacked
along axis 0). The last group is what backpropagation through time saves: the VJP is another
``Scan``, running the other way over the stacked carries and the ``xs``, whose body is the
pullback of the step (traced from ``vjp`` of the inlined body, as ``Cond.vjp`` does), and
whose carry holds the carries' cotangents and the loop invariants' gradients summed over the
steps. Outputs nothing reads (the stacked carries of a scan nobody differentiates) are
dropped by the ``prune_outputs`` rule through :meth:`Scan.keep_outputs`. Because the
reverse scan is an ordinary ``Scan``, grad of grad needs nothing more.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import GraphError, ShapeError
from ..graph.cost import Poly
from ..graph.node import Node
from ..graph.source import user_location
from ..graph.subgraph import Subgraph, fresh_name, trace
from ..graph.types import TensorType, TupleType
from .base import Op, apply, as_node, dtype_error, shape_error
from .control import unpack
from .creation import zeros_like


def _fits(declared: TensorType, actual: TensorType) -> bool:
    return (declared.dtype == actual.dtype and len(declared.shape) == len(actual.shape)
            and all(d is None or a is None or d == a for d, a in zip(declared.shape, actual.shape)))


@dataclasses.dataclass(frozen=True)
class Scan(Op):
    """``carry, y_t = body(carry, x_t, *invariants)`` for each step ``t`` of the ``xs``.

    Inputs: ``n_carry`` initial carries, ``n_xs`` sequences (sliced along axis 0), then the
    loop invariants. Outputs (all of them unless ``emit`` selects some, in order): the final
    carries, the stacked ys, the stacked carries each step started from. ``length`` is the
    step count when there are no ``xs``; ``reverse`` runs ``t = T-1 .. 0`` (ys still land
    at index ``t``)."""

    name: ClassVar[str] = "scan"
    vjp_formula: ClassVar[str] = "scan(pullback(body), reverse=not reverse) over the stacked carries"
    body: Subgraph
    n_carry: int
    n_xs: int
    reverse: bool = False
    length: int | None = None
    emit: tuple[int, ...] | None = None

    @property
    def n_ys(self) -> int:
        return len(self.body.outputs) - self.n_carry

    def emitted(self) -> tuple[int, ...]:
        """Indices into the full output list ``finals + ys + stacked carries``."""
        return self.emit if self.emit is not None else tuple(range(2 * self.n_carry + self.n_ys))

    def infer(self, *types) -> TupleType:
        nc, nx = self.n_carry, self.n_xs
        if len(types) != len(self.body.inputs):
            raise shape_error(f"the body takes {len(self.body.inputs)} operands, got {len(types)}")
        carry, xs = types[:nc], types[nc:nc + nx]
        for k, x in enumerate(xs):
            if not isinstance(x, TensorType) or not x.shape:
                raise shape_error(f"xs {k} is {x}: a sequence needs a leading (time) axis")
        lengths = {x.shape[0] for x in xs if x.shape[0] is not None}
        if len(lengths) > 1:
            raise shape_error("the xs have different lengths: " + ", ".join(str(x) for x in xs))
        steps = next(iter(lengths)) if lengths else (None if xs else self.length)
        per_step = [*carry, *(TensorType(x.shape[1:], x.dtype) for x in xs), *types[nc + nx:]]
        for k, (d, t) in enumerate(zip(self.body.in_types, per_step)):
            if not isinstance(t, TensorType) or not _fits(d, t):
                raise shape_error(f"operand {k} is per step {t}, the body was traced with {d}")
        outs = self.body.infer(per_step)
        for k, (init, new) in enumerate(zip(carry, outs)):
            if new.dtype != init.dtype:
                raise dtype_error(f"the body returns carry {k} as {new}, the initial carry is {init}")
            if not _fits(TensorType(init.shape, new.dtype), new):
                raise shape_error(f"the body returns carry {k} as {new}, the initial carry is {init}")
        full = [*carry, *(TensorType((steps, *y.shape), y.dtype) for y in outs[nc:]),
                *(TensorType((steps, *c.shape), c.dtype) for c in carry)]
        return TupleType(tuple(full[i] for i in self.emitted()))

    def subgraphs(self) -> tuple[Subgraph]:
        return (self.body,)

    def loop_carries(self, body: int) -> tuple[tuple[int, int], ...]:
        return tuple((k, k) for k in range(self.n_carry))  # body (carries, x_t, ...) -> (carries, y_t)

    def keep_outputs(self, indices) -> "Scan":
        return dataclasses.replace(self, emit=tuple(self.emitted()[i] for i in indices))

    def flops(self, in_types, out_type) -> Poly:
        return Poly()  # the work is in the body, which is costed where it runs

    def compute(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.compute_with(_Stepper, *arrays)

    def compute_with(self, run_body, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        nc, nx = self.n_carry, self.n_xs
        emitted = self.emitted()
        xs, invariants = arrays[nc:nc + nx], arrays[nc + nx:]
        steps = xs[0].shape[0] if xs else self.length
        step_types = [*(TensorType(np.shape(a), a.dtype) for a in arrays[:nc]),
                      *(TensorType(x.shape[1:], x.dtype) for x in xs),
                      *(TensorType(np.shape(a), a.dtype) for a in invariants)]
        y_types = self.body.infer(step_types)[nc:]
        program = run_body(self.body)  # may reuse its output buffers next step: copied below
        if getattr(program, "looper", None) is not None and steps and all(t.is_concrete for t in y_types):
            try:  # a compiled body runs the whole loop itself
                done = self._run_loop(program, arrays, steps, y_types)
            except Exception:  # noqa: BLE001 - the steps below run again on the checked path, which explains it
                done = None
            if done is not None:
                return done
        carry = [np.array(c, copy=True) for c in arrays[:nc]]  # written in place each step
        want_stacked = any(i >= nc + self.n_ys for i in emitted)
        stacked = [np.empty((steps, *c.shape), c.dtype) for c in carry] if want_stacked else []
        ys = [np.empty((steps, *t.shape), t.dtype) if t.is_concrete else None for t in y_types]
        if not steps and any(y is None for y in ys):
            raise GraphError(f"scan: a body output's shape is unknown for zero steps: {y_types}")
        order = range(steps - 1, -1, -1) if self.reverse else range(steps)
        if want_stacked and steps:  # each step's carry lives where it is kept: stacked[t]
            for s, c in zip(stacked, carry):
                s[order[0]] = c
            carry = [s[order[0]] for s in stacked]
        for k, t in enumerate(order):
            outs = program(*carry, *(x[t] for x in xs), *invariants)
            for j, y in enumerate(outs[nc:]):
                if ys[j] is None:  # a shape the types leave open: known after the first step
                    ys[j] = np.empty((steps, *np.shape(y)), y_types[j].dtype)
                ys[j][t] = y
            if want_stacked and k + 1 < steps:  # the program reuses its buffers next step
                nxt = order[k + 1]
                for s, new in zip(stacked, outs[:nc]):
                    s[nxt] = new
                carry = [s[nxt] for s in stacked]
            elif want_stacked:  # the last step: the final carries
                carry = [np.array(new, copy=True) for new in outs[:nc]]
            else:
                for c, new in zip(carry, outs[:nc]):
                    np.copyto(c, new)
        full = [*carry, *ys, *stacked] if want_stacked else [*carry, *ys]
        return tuple(full[i] for i in emitted)

    @functools.cached_property
    def _loop_plan(self) -> tuple[tuple, bool, dict[int, int]]:
        """How :meth:`_run_loop` lays out the generated loop's arguments, the same every call:
        the carries (each a ``(T + 1)``-row buffer when the stacked carries are kept, else two
        buffers exchanged each step), the xs, the invariants, then the ys (their ``(T, ...)``
        buffers, or one scratch buffer each when not kept). Returns the ``LoopLayout``, whether
        the stacked carries are kept and the ys that share a carry's buffer (ys j -> carry k:
        the same value, an RNN's h, written once)."""
        nc, nx, emitted, fwd = self.n_carry, self.n_xs, set(self.emitted()), not self.reverse
        stacked = any(i >= nc + self.n_ys for i in emitted)
        if stacked:  # step t reads row t of carry k's buffer and writes row t + 1 (reverse: t + 1, t)
            feeds = [(k, 0 if fwd else 1) for k in range(nc)]
            outs = [(k, 1 if fwd else 0) for k in range(nc)]
            swaps: list[tuple[int, int]] = []
        else:
            feeds, outs = [(2 * k, None) for k in range(nc)], [(2 * k + 1, None) for k in range(nc)]
            swaps = [(2 * k, 2 * k + 1) for k in range(nc)]
        n = len(feeds) + len(swaps)
        feeds += [(n + k, 0) for k in range(nx)]
        feeds += [(n + k, None) for k in range(nx, len(self.body.inputs) - nc)]
        n += len(self.body.inputs) - nc
        shared: dict[int, int] = {}
        body_outs = self.body.outputs
        for j in range(self.n_ys):
            k = next((k for k in range(nc) if stacked and nc + j in emitted and body_outs[k] is body_outs[nc + j]
                      and k not in shared.values()), None)
            if k is not None:
                shared[j] = k
                outs.append(outs[k])
            else:
                outs.append((n, 0 if nc + j in emitted else None))
                n += 1
        return (tuple(feeds), tuple(outs), tuple(swaps)), stacked, shared

    def _run_loop(self, body: "_Stepper", arrays: Sequence[np.ndarray], steps: int,
                  y_types: Sequence[TensorType]) -> tuple[np.ndarray, ...] | None:
        """All steps in one generated loop (``Program.runner_loop``) writing the results where
        they are kept (:attr:`_loop_plan`): the ys into row ``t`` of their ``(T, ...)``
        buffers, each new carry into the next row of a ``(T + 1)``-row buffer whose other rows
        are the stacked carries (the carry of the next step), or, when those are not kept,
        into the other one of two buffers exchanged each step. The buffers are the body
        program's loop arrays (``Program.loop_array``: the same ones every call once the last
        call's results are dropped). None when the body cannot run so (the caller steps it)."""
        layout, stacked, shared = self._loop_plan
        nc, emitted, fwd = self.n_carry, self.emitted(), not self.reverse
        empty = body.program.loop_array
        args: list[np.ndarray] = []
        for c in arrays[:nc]:
            if stacked:
                b = empty((steps + 1, *np.shape(c)), c.dtype)
                b[0 if fwd else steps] = c
                args.append(b)
            else:
                b = empty(np.shape(c), c.dtype)
                b[...] = c
                args += (b, empty(np.shape(c), c.dtype))
        both = args if stacked else []
        args = [*args, *arrays[nc:]]
        ys: list[np.ndarray | None] = []
        for j, t in enumerate(y_types):
            if j in shared:  # ys[j][t] is the row the carry of the next step is read from
                ys.append(both[shared[j]][1:] if fwd else both[shared[j]][:steps])
            elif nc + j in emitted:
                ys.append(empty((steps, *t.shape), t.dtype))
                args.append(ys[-1])
            else:
                ys.append(None)
                args.append(empty(t.shape, t.dtype))
        first = steps - 1 if self.reverse else 0
        run = body.looper(layout, *[args[a] if d is None else args[a][first + d, ...] for a, d in layout[0]])
        if run is None:
            return None
        finals = run(range(steps) if fwd else range(steps - 1, -1, -1), *args)
        if stacked:  # the row after the last: its own copy when it is also a ys's row
            last = steps if fwd else 0
            kept = set(shared.values())
            finals = [np.array(b[last, ...]) if k in kept else b[last, ...] for k, b in enumerate(both)]
            full = [*finals, *ys, *(b[:steps] if fwd else b[1:] for b in both)]
        else:
            full = [*finals, *ys]
        return tuple(full[i] for i in emitted)

    def vjp(self, node: Node, cts: tuple[Node | None, ...]) -> list[Node | None]:
        from ..autodiff.grad import vjp as body_vjp  # autodiff sits above ops

        nc, nx, ny = self.n_carry, self.n_xs, self.n_ys
        full: list[Node | None] = [None] * (2 * nc + ny)
        for i, ct in zip(self.emitted(), cts):
            full[i] = ct
        init, xs, inv = node.inputs[:nc], node.inputs[nc:nc + nx], node.inputs[nc + nx:]
        fc = [k for k, c in enumerate(init) if c.dtype.kind == "f"]
        fx = [k for k, x in enumerate(xs) if x.dtype.kind == "f"]
        fp = [k for k, p in enumerate(inv) if p.dtype.kind == "f"]
        live_y = [j for j in range(ny) if full[nc + j] is not None]
        live_s = [k for k in fc if full[nc + ny + k] is not None]
        out: list[Node | None] = [None] * len(node.inputs)
        if not (fc or fx or fp) or not (fc or live_y):  # nothing to differentiate, or only
            return out  # integer carries' values were read
        if self.emit is None:
            stacked = unpack(node)[nc + ny:]
        else:  # a pruned scan (a loaded, optimised graph): the same loop, all outputs
            stacked = unpack(apply(dataclasses.replace(self, emit=None), *node.inputs))[nc + ny:]
        g_carry = [full[k] if full[k] is not None else zeros_like(init[k]) for k in fc]
        g_inv = [zeros_like(inv[k]) for k in fp]
        seqs = [*stacked, *xs, *(full[nc + j] for j in live_y), *(full[nc + ny + k] for k in live_s)]
        body, n_gc, n_gp = self.body, len(fc), len(fp)

        def pullback(*args: Node) -> tuple[Node, ...]:
            gc, gp = args[:n_gc], args[n_gc:n_gc + n_gp]
            rest = args[n_gc + n_gp:]
            c_t, x_t = rest[:nc], rest[nc:nc + nx]
            n_seq = nc + nx + len(live_y) + len(live_s)
            gy, gs = rest[nc + nx:nc + nx + len(live_y)], rest[nc + nx + len(live_y):n_seq]
            p = rest[n_seq:]  # the invariants as placeholders: a path between two of them
            outs = body.inline([*c_t, *x_t, *p])  # outside (w and a hoisted w.T) is not summed twice
            grads = body_vjp([outs[k] for k in fc] + [outs[nc + j] for j in live_y],
                             [c_t[k] for k in fc] + [x_t[k] for k in fx] + [p[k] for k in fp],
                             list(gc) + list(gy))
            new_gc = list(grads[:n_gc])
            for k, g in zip(live_s, gs):
                new_gc[fc.index(k)] = new_gc[fc.index(k)] + g
            new_gp = [a + b for a, b in zip(gp, grads[n_gc + len(fx):])]
            return (*new_gc, *new_gp, *grads[n_gc:n_gc + len(fx)])

        names = ([f"ct_carry{k}" for k in fc] + [f"grad_{inv[k].name or k}" for k in fp]
                 + [f"carry{k}" for k in range(nc)] + [f"x{k}" for k in range(nx)]
                 + [f"ct_y{j}" for j in live_y] + [f"ct_stacked{k}" for k in live_s]
                 + [p.op.input_name for p in body.inputs[nc + nx:]])
        res = _scan_flat(pullback, [*g_carry, *g_inv], seqs, list(inv), names, not self.reverse, self.length)
        for k, g in zip(fc, res[:n_gc]):
            out[k] = g
        for k, g in zip(fp, res[n_gc:n_gc + n_gp]):
            out[nc + nx + k] = g
        for k, g in zip(fx, res[n_gc + n_gp:n_gc + n_gp + len(fx)]):
            out[nc + k] = g
        return out


class _Stepper:
    """The body's program called step after step: its feeds are checked and planned at the
    first step, then its generated code runs directly (``Program.runner``), since every step
    has the same types and shapes. ``looper`` gives the form that runs every step in one
    generated loop (``Program.runner_loop``)."""

    def __init__(self, body: Subgraph) -> None:
        self.program = body.program()
        self.run: Callable[..., list[np.ndarray]] | None = None

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if self.run is None:
            self.run = self.program.runner(*arrays)
        return self.run(*arrays)

    def looper(self, layout, *arrays: np.ndarray) -> Callable[..., tuple] | None:
        return self.program.runner_loop(layout, *arrays)


def _scan_flat(fn: Callable[..., tuple[Node, ...]], carry: list[Node], xs: list[Node], invariants: list[Node],
               names: list[str], reverse: bool, length: int | None) -> list[Node]:
    """Trace ``fn(*carry, *x_t, *invariants) -> (*new_carry, *y_t)`` once and build the
    ``Scan`` node (nodes ``fn`` reads from outside are invariants too); returns its outputs
    (final carries, stacked ys; the stacked carries are not listed)."""
    types = [c.type for c in carry] + [TensorType(x.shape[1:], x.dtype) for x in xs] + [p.type for p in invariants]
    taken: set[str] = set()
    body, captured, _ = trace(fn, types, [fresh_name(n, taken) for n in names])
    node = apply(Scan(body, len(carry), len(xs), reverse, None if xs else length),
                 *carry, *xs, *invariants, *captured)
    return unpack(node)[:len(body.outputs)]


# ------------------------------------------------------------------------------ pytrees
def _flatten(tree: Any) -> tuple[list[Any], Any]:
    """Leaves (nodes, arrays, scalars) in order and the structure: tuples, lists and dicts
    (keys sorted, as JAX does) nest; ``None`` is an empty tree."""
    if tree is None:
        return [], None
    if isinstance(tree, (tuple, list)):
        parts = [_flatten(t) for t in tree]
        return [leaf for p in parts for leaf in p[0]], (type(tree), tuple(p[1] for p in parts))
    if isinstance(tree, dict):
        keys = sorted(tree)
        parts = [_flatten(tree[k]) for k in keys]
        return [leaf for p in parts for leaf in p[0]], (dict, tuple(keys), tuple(p[1] for p in parts))
    return [tree], "leaf"


def _unflatten(structure: Any, leaves: Sequence[Any]) -> Any:
    it = iter(leaves)

    def build(s: Any) -> Any:
        if s is None:
            return None
        if s == "leaf":
            return next(it)
        if s[0] is dict:
            return {k: build(sub) for k, sub in zip(s[1], s[2])}
        return s[0](build(sub) for sub in s[1])

    return build(structure)


def _describe(structure: Any) -> str:
    if structure is None:
        return "None"
    if structure == "leaf":
        return "a node"
    if structure[0] is dict:
        return "{" + ", ".join(f"{k!r}: {_describe(s)}" for k, s in zip(structure[1], structure[2])) + "}"
    inner = ", ".join(_describe(s) for s in structure[1])
    return f"[{inner}]" if structure[0] is list else f"({inner}{',' if len(structure[1]) == 1 else ''})"


def scan(step: Callable[[Any, Any], tuple[Any, Any]], init: Any, xs: Any = None, length: int | None = None,
         reverse: bool = False) -> tuple[Any, Any]:
    """Loop ``step`` over the leading axis of ``xs``, threading a carry, as one graph node.

    Semantics of ``jax.lax.scan``::

        carry = init
        for t in range(T):          # T-1 .. 0 when reverse
            carry, ys[t] = step(carry, xs[t])
        return carry, stack(ys)

    Parameters
    ----------
    step : callable(carry, x_t) -> (new_carry, y_t)
        Called ONCE on symbolic nodes to build the loop body, so the graph does not grow
        with ``T``. Nodes it reads from outside (parameters, inputs, earlier values) become
        loop-invariant operands; work on those alone is hoisted out of the loop.
    init : node or nested tuple/list/dict of nodes (arrays and scalars become constants)
        The initial carry; ``new_carry`` must have the same structure, shapes and dtypes.
    xs : node or nested tuple/list/dict of nodes, or None
        Sequences sliced along axis 0, all of the same length (which may be an unknown
        dim, fixed by the feeds). ``step`` gets ``x_t`` with the same structure.
    length : int, optional
        The step count when ``xs`` is None (then ``step`` gets ``x_t=None``).
    reverse : bool
        Run from the last step to the first; ``ys[t]`` still belongs to ``xs[t]``.

    Returns
    -------
    (final_carry, ys)
        ``ys`` has ``y_t``'s structure with each leaf stacked along a new axis 0 (``None``
        when ``step`` returns ``None`` for ``y_t``). With zero steps: ``init`` and empty ys.
    """
    where = user_location(2)
    at = f"\n  built at {where}" if where else ""
    c_leaves, c_struct = _flatten(init)
    x_leaves, x_struct = _flatten(xs)
    carry = [as_node(c) for c in c_leaves]
    seqs = [as_node(x) for x in x_leaves]
    for k, n in enumerate(carry + seqs):
        if isinstance(n.type, TupleType):
            raise GraphError(f"scan: operand {k} is a multi-output node; pass its outputs{at}")
    for k, x in enumerate(seqs):
        if not x.shape:
            raise ShapeError(f"scan: xs leaf {k} is {x.describe()}: a sequence needs a leading (time) axis{at}")
    known = [x.shape[0] for x in seqs if x.shape[0] is not None]
    if len(set(known)) > 1:
        raise ShapeError("scan: the xs have different lengths: " + ", ".join(x.describe() for x in seqs) + at)
    if not seqs:
        if length is None or not isinstance(length, (int, np.integer)) or length < 0:
            raise GraphError(f"scan: without xs, length must be a step count >= 0, got {length!r}{at}")
        length = int(length)
    elif length is not None and known and known[0] != length:
        raise ShapeError(f"scan: length={length} but the xs have length {known[0]}{at}")
    y_struct: list[Any] = []

    def body(*args: Node) -> tuple[Node, ...]:
        c = _unflatten(c_struct, args[:len(carry)])
        x = _unflatten(x_struct, args[len(carry):])
        result = step(c, x)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GraphError(f"scan: step must return (new_carry, y), got {type(result).__name__}{at}")
        new_leaves, new_struct = _flatten(result[0])
        if new_struct != c_struct:
            raise ShapeError(f"scan: the step returns a carry shaped {_describe(new_struct)}, "
                             f"the initial carry is {_describe(c_struct)}{at}")
        y_leaves, ys = _flatten(result[1])
        y_struct.append(ys)
        return tuple(new_leaves) + tuple(y_leaves)

    names = [f"carry{k}" for k in range(len(carry))] + [f"x{k}" for k in range(len(seqs))]
    outs = _scan_flat(body, carry, seqs, [], names, bool(reverse), length)
    return _unflatten(c_struct, outs[:len(carry)]), _unflatten(y_struct[0], outs[len(carry):])
