"""Canonicalize: algebraic identities, constant folding and (in the engine) CSE.

Every rule returns a node of exactly the matched node's type (the engine rejects anything
else), so an identity that would change broadcasting or dtype simply does not apply.
Rules never fold what is unsafe under IEEE arithmetic: ``x * 0`` stays (``inf * 0`` is NaN).
"""

from __future__ import annotations

import numpy as np

from ..graph.node import Node
from ..graph.types import TupleType
from ..ops import elementwise as ew
from ..ops import shape as sh
from ..ops.base import Op, apply
from ..ops.creation import Full
from ..ops.indexing import Concatenate, EmbedSlice
from ..ops.linalg import MatMul
from ..ops.leaves import Constant, Leaf, constant
from ..ops.reduce import Sum
from .core import Context, is_const_scalar, rule

FOLD_LIMIT = 1 << 16
"""Constant folding skips results with more elements than this (keep graphs small)."""


@rule("algebraic", ew.Multiply)
def mul_one(node: Node, ctx: Context):
    """``x * 1`` and ``1 * x`` are ``x`` (exact for every float, NaN and inf included)."""
    a, b = node.inputs
    if is_const_scalar(b, 1):
        return a, (b,)
    if is_const_scalar(a, 1):
        return b, (a,)
    return None


@rule("algebraic", ew.Add)
def add_zero(node: Node, ctx: Context):
    """``x + 0`` and ``0 + x`` are ``x``."""
    a, b = node.inputs
    if is_const_scalar(b, 0):
        return a
    if is_const_scalar(a, 0):
        return b
    return None


@rule("algebraic", ew.Subtract)
def sub_zero(node: Node, ctx: Context):
    """``x - 0`` is ``x``; ``0 - x`` is ``-x``."""
    a, b = node.inputs
    if is_const_scalar(b, 0):
        return a
    if is_const_scalar(a, 0) and a.shape == ():
        return ew.negative(b)
    return None


@rule("algebraic", ew.Divide)
def div_one(node: Node, ctx: Context):
    """``x / 1`` is ``x``."""
    a, b = node.inputs
    return a if is_const_scalar(b, 1) else None


@rule("algebraic", ew.Negative)
def neg_neg(node: Node, ctx: Context):
    """``--x`` is ``x``."""
    (a,) = node.inputs
    return (a.inputs[0], (a,)) if isinstance(a.op, ew.Negative) else None


@rule("algebraic", ew.Cast)
def cast_same(node: Node, ctx: Context):
    """A cast to the dtype the operand already has is the operand."""
    (a,) = node.inputs
    return a if a.dtype == node.dtype else None


@rule("algebraic", ew.Where)
def where_same(node: Node, ctx: Context):
    """``where(c, x, x)`` is ``x`` (when broadcasting adds nothing; the engine checks)."""
    c, a, b = node.inputs
    return a if a is b else None


@rule("algebraic", sh.Transpose)
def transpose_transpose(node: Node, ctx: Context):
    """Compose nested transposes; drop an identity permutation."""
    (a,) = node.inputs
    axes = node.op.axes
    if isinstance(a.op, sh.Transpose):
        inner = a.op.axes
        composed = tuple(inner[i] for i in axes)
        src = a.inputs[0]
        if composed == tuple(range(len(composed))):
            return src, (a,)
        return apply(sh.Transpose(composed), src), (a,)
    if axes == tuple(range(len(axes))):
        return a
    return None


def _flip(x: Node) -> Node:
    """``x.T`` of a 2-D ``x``: the operand itself when ``x`` is a transpose (a view either way)."""
    if isinstance(x.op, sh.Transpose) and x.op.axes == (1, 0):
        return x.inputs[0]
    return sh.transpose(x)


@rule("algebraic", sh.Transpose)
def transpose_matmul(node: Node, ctx: Context):
    """``(a @ b).T`` -> ``b.T @ a.T`` for a 2-D product nothing else reads (the weight
    gradient of ``x @ W.T`` is ``(x^T g)^T``): the product is made in the layout its readers
    use, so the update ``W - lr * gW`` reads it row by row instead of through a transposed
    view (a strided ufunc pass, several times slower), and the operands' transposes are views."""
    (p,) = node.inputs
    if node.op.axes != (1, 0) or not isinstance(p.op, MatMul) or p.ndim != 2:
        return None
    a, b = p.inputs
    if a.ndim != 2 or b.ndim != 2 or ctx.n_uses(p) != 1:
        return None
    return apply(MatMul(), _flip(b), _flip(a)), (p,)


@rule("algebraic", sh.Reshape)
def reshape_reshape(node: Node, ctx: Context):
    """``reshape(reshape(x, s1), s2)`` is ``reshape(x, s2)``; a reshape to the same static
    shape is the operand."""
    a = node.inputs[0]
    if isinstance(a.op, sh.Reshape):
        return apply(node.op, a.inputs[0], *node.inputs[1:]), (a,)
    if isinstance(a.op, (sh.ExpandDims, sh.Squeeze)):
        return apply(node.op, a.inputs[0], *node.inputs[1:]), (a,)
    if a.type == node.type and a.type.is_concrete:
        return a
    return None


@rule("algebraic", sh.Squeeze)
def squeeze_expand(node: Node, ctx: Context):
    """``squeeze(expand_dims(x, a), a)`` is ``x``."""
    (a,) = node.inputs
    if isinstance(a.op, sh.ExpandDims):
        ax = a.op.axis % a.ndim
        if tuple(x % a.ndim for x in node.op.axis) == (ax,):
            return a.inputs[0], (a,)
    return None


@rule("algebraic", sh.ExpandDims)
def expand_squeeze(node: Node, ctx: Context):
    """``expand_dims(squeeze(x, a), a)`` is ``x`` when the types agree (engine-checked)."""
    (a,) = node.inputs
    if isinstance(a.op, sh.Squeeze):
        return a.inputs[0], (a,)
    return None


@rule("algebraic", sh.BroadcastTo)
def broadcast_noop(node: Node, ctx: Context):
    """A broadcast to the operand's own static shape is the operand."""
    a = node.inputs[0]
    return a if a.type == node.type and a.type.is_concrete else None


@rule("algebraic", ew.Elementwise)
def broadcast_operand(node: Node, ctx: Context):
    """An elementwise op broadcasts its operands itself: feed it a broadcast's source
    (a scalar, a bias) instead of the materialised broadcast, when the output type stays."""
    for i in node.inputs:
        if isinstance(i.op, sh.BroadcastTo):
            break
    else:
        return None
    if isinstance(node.op, Full):
        return None
    ins = tuple(i.inputs[0] if isinstance(i.op, sh.BroadcastTo) else i for i in node.inputs)
    try:
        out = apply(node.op, *ins)
    except Exception:
        return None
    return out, tuple(i for i in node.inputs if isinstance(i.op, sh.BroadcastTo))


_VIEWS = (sh.Reshape, sh.ExpandDims, sh.Squeeze, sh.BroadcastTo)


def _one_value(n: Node) -> Node | None:
    """A 0-d node holding the one value every element of ``n`` has, when that is known
    before running: a constant of equal elements (a folded broadcast: a mean's seed
    spread over a batch), or reshapes and broadcasts of a one-element value. Else None."""
    m = n
    while isinstance(m.op, _VIEWS) and m.inputs:
        m = m.inputs[0]
    if m is not n and m.type.is_concrete and m.type.size() == 1:
        return sh.reshape(m, ()) if m.shape != () else m
    if type(n.op) is not Constant or n.op.value.size < 2:
        return None
    v = n.op.value
    first = v.flat[0]
    if first != v.flat[-1] or v.dtype.kind not in "biuf" or not (v.min() == first == v.max()):
        return None
    return constant(np.asarray(first, v.dtype))


@rule("algebraic", ew.Elementwise)
def uniform_operand(node: Node, ctx: Context):
    """An operand whose elements all equal one value is that value, broadcast by the op
    itself: ``x * c`` with a ``(B, 1)`` column of ``1 / B`` costs a pass per row, with the
    scalar one pass (the engine keeps the rewrite only when the output type stays)."""
    if isinstance(node.op, Full) or len(node.inputs) < 2:
        return None
    ins, absorbed = list(node.inputs), []
    for k, i in enumerate(node.inputs):
        if (type(i.op) is not Constant and not isinstance(i.op, _VIEWS)) or i.type.shape == ():
            continue  # computed: its elements are not known before running
        one = _one_value(i)
        if one is not None:
            ins[k] = one
            absorbed.append(i)
    if not absorbed:
        return None
    try:
        return apply(node.op, *ins), tuple(absorbed)
    except Exception:
        return None


def _scalar(n: Node, dtype) -> bool:
    """One element (shape ``()`` or all ones, static) of float ``dtype``."""
    t = n.type
    return t.shape.count(1) == len(t.shape) and t.dtype == dtype and t.dtype.kind == "f"


@rule("algebraic", ew.Multiply)
def scalar_factors(node: Node, ctx: Context):
    """Gather scalar factors of a float product into one scalar multiply.

    ``broadcast_to(s) * q`` (both scalars) -> ``broadcast_to(s * q)``, and
    ``(r * s) * q`` (``s``, ``q`` scalars, ``r * s`` read once) -> ``r * (s * q)``: a
    gradient seed times ``c`` times ``a`` costs one full-size pass instead of three. The
    reassociation may move a rounding by an ulp (and can only differ from left-to-right
    evaluation where ``r * s`` alone would overflow); dtypes must all match.
    """
    dt = node.dtype
    a, b = node.inputs
    for x, q in ((a, b), (b, a)):
        if not _scalar(q, dt):
            continue
        if isinstance(x.op, sh.BroadcastTo) and _scalar(x.inputs[0], dt):
            return apply(x.op, ew.multiply(x.inputs[0], q), *x.inputs[1:]), (x,)
        if isinstance(x.op, ew.Multiply) and ctx.n_uses(x) == 1 and x.type == node.type:
            for r, s_ in (x.inputs, x.inputs[::-1]):
                if _scalar(s_, dt) and r.type == node.type:
                    # scalar operand first: the schedule (inputs in order) then computes
                    # it before ``r``, so ``r`` and this product stay one blocked chain
                    return ew.multiply(ew.multiply(s_, q), r), (x,)
    return None


@rule("algebraic", Sum)
def sum_scalar_factor(node: Node, ctx: Context):
    """``sum(x * s)`` -> ``sum(x) * s`` for a one-element float ``s``: the scale then costs
    one multiply of the (reduced) result instead of a pass over ``x``. Exact up to rounding,
    except where ``s`` is inf or NaN and ``x`` holds a 0 (NaN terms vs ``sum(x) * inf``)."""
    p = node.inputs[0]
    if not isinstance(p.op, ew.Multiply) or node.dtype.kind != "f":
        return None
    for x, s in (p.inputs, p.inputs[::-1]):  # use counts asked last: a rule that did not ask is not retried
        if (s.ndim <= node.ndim and _scalar(s, node.dtype) and x.type == p.type and x.dtype == node.dtype
                and ctx.n_uses(p) == 1):
            return ew.multiply(apply(node.op, x), s), (p,)
    return None


@rule("algebraic", Sum)
def sum_broadcast(node: Node, ctx: Context):
    """``sum(broadcast_to(y, s), axes)`` over exactly the broadcast axes is ``y * count``
    (reshaped), so a seed broadcast to a full array and summed back never materialises."""
    a = node.inputs[0]
    if not isinstance(a.op, sh.BroadcastTo) or not a.type.is_concrete or a.dtype.kind != "f":
        return None
    y = a.inputs[0]
    if not y.type.is_concrete:
        return None
    lead = a.ndim - y.ndim
    bcast = set(range(lead)) | {lead + i for i, d in enumerate(y.shape) if d == 1 and a.shape[lead + i] != 1}
    if set(node.op.axis) != bcast or not bcast:
        return None
    count = int(np.prod([a.shape[i] for i in bcast]))
    scaled = ew.multiply(y, constant(np.asarray(count, y.dtype)))
    if scaled.shape != node.shape:
        scaled = sh.reshape(scaled, node.shape)
    return scaled, (a,)


@rule("constant_fold", Op)
def fold_constants(node: Node, ctx: Context):
    """Evaluate an op whose inputs are all constants (small results only)."""
    op = node.op
    for i in node.inputs:
        if type(i.op) is not Constant:
            return None
    if isinstance(op, Leaf) or isinstance(node.type, TupleType) or not node.type.is_concrete:
        return None  # a multi-output node is read through its projections: nothing to fold into
    size = node.type.size()
    if size is None or size > FOLD_LIMIT:
        return None
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(op.compute(*(i.op.value for i in node.inputs)))
    except Exception:
        return None
    if value.shape != node.shape or value.dtype != node.dtype:
        return None
    value = np.array(value, copy=True)
    value.setflags(write=False)
    return Node(Constant(value), (), node.type, name=node.name, origin=node.origin,
                scope=node.scope, provenance=node.provenance)


def _tiles(pieces: list[Node]) -> tuple[int, list[Node]] | None:
    """The axis and the operands in order when the ``embed_slice`` nodes ``pieces`` place
    their operands side by side along one axis, covering it exactly, else None."""
    first = pieces[0].op
    if any(not isinstance(p.op, EmbedSlice) or p.op.shape != first.shape or p.inputs[1:] != pieces[0].inputs[1:]
           or len(p.op.index) != len(first.shape) for p in pieces):
        return None
    full = (None, None, None)
    cut = {k for p in pieces for k, i in enumerate(p.op.index) if i != full}
    if len(cut) != 1:
        return None
    (axis,) = cut
    spans = []
    for p in pieces:
        i = p.op.index[axis]
        if not isinstance(i, tuple) or i[2] is not None or i[0] is None or i[0] < 0:
            return None
        spans.append((i[0], first.shape[axis] if i[1] is None else i[1], p.inputs[0]))
    spans.sort(key=lambda s: s[0])
    size = first.shape[axis]
    if size is None or spans[0][0] != 0 or spans[-1][1] != size:
        return None
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        return None
    return axis, [s[2] for s in spans]


@rule("algebraic", ew.Add)
def add_slices_concatenate(node: Node, ctx: Context):
    """A sum of ``embed_slice`` pieces that tile one axis (the gradient of ``split``: an
    LSTM's four gate gradients) is their ``concatenate``: no zeros, no adds."""
    if node.inputs[0].type != node.type or node.inputs[1].type != node.type:
        return None
    pieces, adds, stack = [], [node], list(node.inputs)
    while stack:
        n = stack.pop()
        if isinstance(n.op, ew.Add) and ctx.n_uses(n) == 1 and n.type == node.type:
            adds.append(n)
            stack.extend(n.inputs)
        elif isinstance(n.op, EmbedSlice) and ctx.n_uses(n) == 1:
            pieces.append(n)
        else:
            return None
    got = _tiles(pieces) if len(pieces) > 1 else None
    if got is None:
        return None
    axis, parts = got
    if any(p.dtype != node.dtype for p in parts):
        return None
    return apply(Concatenate(axis), *parts), tuple(adds[1:] + pieces)


@rule("algebraic", Sum)
def sum_batched_matmul(node: Node, ctx: Context):
    """``sum(a @ b, axis=0)`` over a batch of products (the weight gradient of a layer applied
    to a ``(T, B, in)`` sequence: ``sum_t h_t^T g_t``) is one matmul over the batch laid side
    by side: ``a`` as ``(m, T*k)``, ``b`` as ``(T*k, n)``; a transposed ``a`` stays a view."""
    (p,) = node.inputs
    if node.op.axis != (0,) or node.op.keepdims or not isinstance(p.op, MatMul) or ctx.n_uses(p) != 1:
        return None
    a, b = p.inputs
    if a.ndim != 3 or b.ndim != 3 or a.dtype != b.dtype or p.dtype != node.dtype:
        return None
    m, n = p.shape[1], p.shape[2]
    if m is None or n is None or a.shape[0] is None or a.shape[0] != b.shape[0]:
        return None
    if isinstance(a.op, sh.Transpose) and a.op.axes == (0, 2, 1):
        left = sh.transpose(sh.reshape(a.inputs[0], (-1, m)))
    else:
        left = sh.reshape(sh.transpose(a, (1, 0, 2)), (m, -1))
    return apply(MatMul(), left, sh.reshape(b, (-1, n))), (p,)


RULES = (mul_one, add_zero, sub_zero, div_one, neg_neg, cast_same, where_same, transpose_transpose, transpose_matmul,
         reshape_reshape, squeeze_expand, expand_squeeze, broadcast_noop, broadcast_operand, uniform_operand,
         sum_broadcast, sum_scalar_factor, scalar_factors, add_slices_concatenate, sum_batched_matmul,
         fold_constants)
