"""``gb.scan`` as an ONNX ``Loop`` (registered into :data:`graphbp.onnx.emit.EMITTERS`).

Why ``Loop`` and not ONNX ``Scan``: ONNX Runtime's ``Scan`` kernel refuses a sequence of
length 0 ("Invalid dim0_offset of 0", onnxruntime 1.32) and ``Scan`` needs at least one
scan input, while ``gb.scan`` allows zero steps and ``length=`` without ``xs``. ``Loop``
with a trip count and no condition does both, and its scan outputs are ``gb.scan``'s
stacked ys. Both are dtype-generic in ONNX Runtime (they move tensors; the body's ops need
the kernels), so float64 scans run there.

The mapping, which :mod:`.handlers_loop` reads back into a ``gb.scan``:

- trip count ``M``: ``len(xs[0])`` at run time (``Squeeze(Shape(xs0)[0:1])``), or the
  static ``length`` when there are no ``xs``; no condition input;
- loop-carried values: the carries, in order;
- the body reads ``x_t`` as ``Gather(xs_k, i)`` of the outer sequence at the iteration
  number ``i`` (``Gather(xs_k, -1 - i)`` when ``reverse``: ONNX ``Gather`` takes negative
  indices, so no length is needed), and the loop invariants by their outer names (ONNX
  bodies see the enclosing scope);
- scan outputs: the emitted ys, then the emitted stacked carries (the carry each step
  started from: an ``Identity`` of the carry input). ``Loop`` stacks them in iteration
  order, so a reverse scan flips them afterwards (``Slice`` with step -1), putting ``ys[t]``
  at ``t`` as ``gb.scan`` does.
"""

from __future__ import annotations

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType
from ..ops import loop
from .builder import INT64_MIN, OnnxBuilder
from .emit import emits


@emits(loop.Scan)
def _scan(b: OnnxBuilder, node: Node, xs: list[str]) -> list[str]:
    from .export import emit_nodes, value_info

    op = node.op
    nc, nx, ny = op.n_carry, op.n_xs, op.n_ys
    carries, seqs, invariants = xs[:nc], xs[nc:nc + nx], xs[nc + nx:]
    body = op.body
    emitted = op.emitted()
    if seqs:
        trips = b.squeeze(b.dim(seqs[0], 0), [0])
    else:
        trips = b.const(np.int64(op.length))

    sub = b.child()
    i_name, cond_in = sub.fresh("iter"), sub.fresh("cond_in")
    c_names = [sub.fresh(f"carry{k}") for k in range(nc)]
    index = sub.op("Sub", [b.const(np.int64(-1)), i_name]) if op.reverse else i_name
    x_names = [sub.op("Gather", [s, index], axis=0) for s in seqs]
    names: dict[Node, str] = dict(zip(body.inputs, [*c_names, *x_names, *invariants]))
    emit_nodes(sub, body.nodes(), names)

    def out(name: str, hint: str, t: TensorType):
        final = sub.fresh(hint)
        sub.op("Identity", [name], out=final)
        return value_info(b.onnx, final, t)

    step_ins = body.inputs
    body_outs = [out(cond_in, "cond_out", _BOOL)]
    body_outs += [out(names[o], "carry_out", step_ins[k].type) for k, o in enumerate(body.outputs[:nc])]
    ys_kept = [j for j in range(ny) if nc + j in emitted]
    stacked_kept = [k for k in range(nc) if nc + ny + k in emitted]
    body_outs += [out(names[body.outputs[nc + j]], "y", body.outputs[nc + j].type) for j in ys_kept]
    body_outs += [out(c_names[k], "carry_in", step_ins[k].type) for k in stacked_kept]
    graph = b.helper.make_graph(
        sub.nodes, sub.fresh("scan_body"),
        [value_info(b.onnx, i_name, _INT64), value_info(b.onnx, cond_in, _BOOL),
         *(value_info(b.onnx, c, p.type) for c, p in zip(c_names, step_ins))],
        body_outs)
    results = b.op("Loop", [trips, "", *carries], outputs=nc + len(ys_kept) + len(stacked_kept), body=graph)
    results = [results] if isinstance(results, str) else list(results)
    finals, stacks = results[:nc], results[nc:]
    if op.reverse:  # Loop stacks in iteration order: put step t's value at index t
        flip = [b.ints([-1]), b.ints([INT64_MIN]), b.ints([0]), b.ints([-1])]
        stacks = [b.op("Slice", [s, *flip]) for s in stacks]
    by_index = dict(zip(range(nc), finals))
    by_index.update(zip([nc + j for j in ys_kept] + [nc + ny + k for k in stacked_kept], stacks))
    return [by_index[i] for i in emitted]


_INT64, _BOOL = TensorType((), np.dtype("int64")), TensorType((), np.dtype("bool"))
