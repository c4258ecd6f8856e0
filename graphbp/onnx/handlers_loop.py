"""ONNX ``Loop`` and ``Scan`` imported as ``gb.scan`` (registered into
:data:`graphbp.onnx.handlers.HANDLERS`).

A ``Loop`` with a trip count and no condition is a scan: its loop-carried values are the
carries and its scan outputs the stacked ys. The body is converted inside ``gb.scan``'s
trace, so the outer values it reads become loop invariants and ``gb.grad`` differentiates
the imported loop with the reverse-scan rule like a hand-built one.

A body ``Gather(X, i)`` of an outer tensor ``X`` at the iteration number ``i`` is a
sequence read: ``X`` becomes one of the scan's ``xs`` (so its gradient is one stacked
tensor, not a scatter into ``X`` per step); ``Gather(X, -1 - i)`` reads it from the end.
When every sequence is read from the end the scan runs with ``reverse=True`` (what
:mod:`.emit_loop` writes for a reverse ``gb.scan``). Any other use of ``i`` reads an int64
step counter carried along. Loops whose condition can stop them (while loops) have no
``gb.scan`` form and are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops
from ..graph.node import Node
from .handlers import Ctx, Static, attr, handles
from .symbolic import Dims


@handles("Loop")
def _loop(ctx: Ctx, n: Any, args: list[Any]) -> list[Node]:
    from .importer import run_nodes

    body = attr(n, "body")
    if body is None or not hasattr(body, "node"):
        raise ctx.fail("Loop needs a body graph")
    trips = args[0] if args else None
    cond = args[1] if len(args) > 1 else None
    inits = [ctx.node(a) for a in args[2:]]
    nc = len(inits)
    if trips is None:
        raise ctx.fail("a Loop without a trip count is a while loop, which gb.scan does not express")
    if cond is not None and not (isinstance(cond, Static) and cond.value.size == 1 and bool(cond.value.reshape(()))):
        raise ctx.fail("a Loop with a condition input is a while loop, which gb.scan does not express")
    if len(body.initializer) or len(body.sparse_initializer):
        raise ctx.fail("Loop bodies with their own initializers are not supported")
    if len(body.input) != 2 + nc or len(body.output) < 1 + nc:
        raise ctx.fail(f"the Loop body has {len(body.input)} inputs and {len(body.output)} outputs "
                       f"for {nc} loop-carried values (needs {2 + nc} and at least {1 + nc})")
    if len(n.output) > len(body.output) - 1:
        raise ctx.fail("the Loop has more outputs than its body")
    i_name, cond_name = body.input[0].name, body.input[1].name
    c_names = [v.name for v in body.input[2:]]
    if body.output[0].name != cond_name and not _passes_through(body, body.output[0].name, cond_name):
        raise ctx.fail("the Loop body computes its condition: a while loop, which gb.scan does not express")

    nodes = list(body.node)  # by position: protobuf makes a new wrapper per access
    reads = _sequence_reads(ctx, nodes, body, i_name)
    keys = list(dict.fromkeys(reads.values()))  # (outer name, read from the end), in order
    reverse = bool(keys) and all(from_end for _, from_end in keys)
    skip = set(reads) | _index_nodes(nodes, body, reads)
    counter = _reads_name(nodes, body, i_name, skip)
    length, seqs = _sequences(ctx, trips, keys, reverse)
    n_seq = len(keys)

    def step(carry, x_t):
        sub = ctx.child()
        step_no, values = (carry[0], carry[1:]) if counter else (None, carry)
        sub.values[cond_name] = Static(np.array(True))
        if step_no is not None:
            sub.values[i_name] = step_no
        for name, v in zip(c_names, values):
            sub.values[name] = v
        by_key = dict(zip(keys, x_t[:n_seq]))
        for pos, read in reads.items():
            sub.values[nodes[pos].output[0]] = by_key[read]
        run_nodes(sub, [m for pos, m in enumerate(nodes) if pos not in skip])
        outs = [sub.node(sub.value(o.name, None, -1)) for o in body.output[1:]]
        new = tuple(outs[:nc])
        return ((step_no + 1, *new) if counter else new), tuple(outs[nc:])

    init = ((ops.constant(np.int64(0)), *inits) if counter else tuple(inits))
    final, ys = ops.scan(step, init, tuple(seqs), length=length, reverse=reverse)
    final = list(final[1:] if counter else final)
    if reverse:  # Loop stacks its scan outputs in iteration order
        ys = [y[::-1] for y in ys]
    return final + list(ys)


def _passes_through(body: Any, out: str, cond: str) -> bool:
    """True when ``out`` is an ``Identity`` of the condition input (the exporter's form)."""
    return any(m.op_type == "Identity" and list(m.output) == [out] and list(m.input) == [cond] for m in body.node)


def _produced(nodes: list[Any], body: Any) -> set[str]:
    names = {v.name for v in body.input}
    for m in nodes:
        names.update(m.output)
    return names


def _sequence_reads(ctx: Ctx, nodes: list[Any], body: Any, i_name: str) -> dict[int, tuple[str, bool]]:
    """``Gather`` nodes reading an outer tensor at step ``i`` (or ``-1 - i``), by position:
    ``{k: (outer name, from the end)}``."""
    inside = _produced(nodes, body)
    minus = {m.output[0] for m in nodes  # Sub(-1, i): the index of a reverse read
             if m.op_type == "Sub" and len(m.input) == 2 and len(m.output) == 1 and m.input[1] == i_name
             and m.input[0] not in inside and _is_minus_one(ctx, m.input[0])}
    return {k: (m.input[0], m.input[1] != i_name) for k, m in enumerate(nodes)
            if m.op_type == "Gather" and len(m.input) == 2 and len(m.output) == 1 and attr(m, "axis", 0) == 0
            and m.input[0] not in inside and (m.input[1] == i_name or m.input[1] in minus)}


def _is_minus_one(ctx: Ctx, name: str) -> bool:
    v = ctx.values.get(name)
    if v is None and name in ctx.initializers:
        v = Static(ctx.initializers[name][0])
    return isinstance(v, Static) and v.value.size == 1 and v.value.dtype.kind in "iu" and int(v.value.reshape(())) == -1


def _index_nodes(nodes: list[Any], body: Any, reads: dict[int, tuple[str, bool]]) -> set[int]:
    """The ``Sub(-1, i)`` nodes only sequence reads use (they need no counter)."""
    read_index = {nodes[k].input[1] for k in reads}
    users: dict[str, list[int]] = {}
    for k, m in enumerate(nodes):
        for x in m.input:
            users.setdefault(x, []).append(k)
    outs = {o.name for o in body.output}
    return {k for k, m in enumerate(nodes)
            if m.op_type == "Sub" and len(m.output) == 1 and m.output[0] in read_index and m.output[0] not in outs
            and all(u in reads for u in users.get(m.output[0], []))}


def _reads_name(nodes: list[Any], body: Any, name: str, skip: set[int]) -> bool:
    return (any(name in m.input for k, m in enumerate(nodes) if k not in skip)
            or any(o.name == name for o in body.output))


def _sequences(ctx: Ctx, trips: Any, keys: list[tuple[str, bool]], reverse: bool
               ) -> tuple[int | None, list[Node]]:
    """The step count (when there are no sequences) and the sequences: cut to a known trip
    count (ONNX reads only the first ``M`` rows, or the last ``M`` from the end), and read
    backwards where a forward scan reads one from the end."""
    seqs = [ctx.node(ctx.value(x, None, -1)) for x, _ in keys]
    ends = [from_end for _, from_end in keys]
    if isinstance(trips, Dims):  # len(X) at run time
        ref = trips.single_dim()
        if ref is None or ref[1] != 0:
            raise ctx.fail("the Loop trip count must be known or the length of a tensor")
        if not any(s is ref[0] for s in seqs):
            seqs.append(ref[0])  # steps over it without reading it
            ends.append(reverse)
        steps = None
    else:
        arr = ctx.static(trips, "the Loop trip count")
        if arr.size != 1 or arr.dtype.kind not in "iu" or not 0 <= int(arr.reshape(())) <= ctx.limits.max_int:
            raise ctx.fail(f"the Loop trip count must be one integer >= 0, got {arr.reshape(-1)[:4]}")
        steps = int(arr.reshape(()))
    out = []
    for s, from_end in zip(seqs, ends):
        if s.ndim == 0:
            raise ctx.fail("the Loop reads a scalar per step")
        if steps is not None and s.shape[0] != steps:
            s = s[-steps:] if from_end and steps else s[:steps]
        out.append(s[::-1] if from_end and not reverse else s)
    return (steps if not out else None), out


@handles("Scan")
def _scan_op(ctx: Ctx, n: Any, args: list[Any]) -> list[Node]:
    """ONNX ``Scan`` (opset 9 on) as ``gb.scan``: state variables are the carries, scan
    inputs the ``xs`` (moved to axis 0; those read against the majority direction flipped),
    scan outputs the ys (flipped and moved to their axis as the attributes say)."""
    from .importer import run_nodes

    if ctx.opset < 9:
        raise ctx.fail("Scan before opset 9 (with a batch axis and sequence_lens) is not supported")
    body, m = attr(n, "body"), attr(n, "num_scan_inputs")
    if body is None or not hasattr(body, "node") or not isinstance(m, int) or not 1 <= m <= len(args):
        raise ctx.fail("Scan needs a body graph and 1 <= num_scan_inputs <= its inputs")
    if len(body.initializer) or len(body.sparse_initializer):
        raise ctx.fail("Scan bodies with their own initializers are not supported")
    nc = len(args) - m
    n_ys = len(body.output) - nc
    if len(body.input) != len(args) or n_ys < 0 or len(n.output) > len(body.output):
        raise ctx.fail(f"the Scan body has {len(body.input)} inputs and {len(body.output)} outputs "
                       f"for {nc} state variables and {m} scan inputs")
    in_dirs = _per_item(ctx, n, "scan_input_directions", m, (0, 1))
    out_dirs = _per_item(ctx, n, "scan_output_directions", n_ys, (0, 1))
    in_axes, out_axes = _per_item(ctx, n, "scan_input_axes", m), _per_item(ctx, n, "scan_output_axes", n_ys)
    inits = [ctx.node(a) for a in args[:nc]]
    seqs = []
    for a, axis in zip(args[nc:], in_axes):
        x = ctx.node(a)
        if not -x.ndim <= axis < x.ndim:
            raise ctx.fail(f"scan_input_axes {axis} is out of range for rank {x.ndim}")
        axis %= x.ndim
        seqs.append(x if axis == 0 else ops.transpose(x, (axis, *(d for d in range(x.ndim) if d != axis))))
    reverse = 2 * sum(in_dirs) > m  # the majority direction; the others are flipped
    seqs = [s[::-1] if bool(d) != reverse else s for s, d in zip(seqs, in_dirs)]
    names = [v.name for v in body.input]
    nodes = list(body.node)

    def step(carry, x_t):
        sub = ctx.child()
        for name, v in zip(names, (*carry, *x_t)):
            sub.values[name] = v
        run_nodes(sub, nodes)
        outs = [sub.node(sub.value(o.name, None, -1)) for o in body.output]
        return tuple(outs[:nc]), tuple(outs[nc:])

    final, ys = ops.scan(step, tuple(inits), tuple(seqs), reverse=reverse)
    out = list(final)
    for y, d, axis in zip(ys, out_dirs, out_axes):
        y = y[::-1] if bool(d) != reverse else y  # ys come back in step order; ONNX's order is iteration order
        if not -y.ndim <= axis < y.ndim:
            raise ctx.fail(f"scan_output_axes {axis} is out of range for rank {y.ndim}")
        axis %= y.ndim
        if axis:
            perm = list(range(1, y.ndim))
            perm.insert(axis, 0)
            y = ops.transpose(y, tuple(perm))
        out.append(y)
    return out


def _per_item(ctx: Ctx, n: Any, name: str, count: int, allowed: tuple[int, ...] | None = None) -> list[int]:
    values = attr(n, name)
    values = [0] * count if values is None else values
    if not isinstance(values, list) or len(values) != count or (allowed and any(v not in allowed for v in values)):
        raise ctx.fail(f"{name} must list {count} values" + (f" from {allowed}" if allowed else ""))
    return values
