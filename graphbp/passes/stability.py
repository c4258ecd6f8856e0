"""Stabilize: rewrite formulas that overflow or lose precision into stable primitives.

``log(1 + x) -> log1p(x)``, ``log1p(exp(z)) -> softplus(z)``, ``log(sigmoid(x)) ->
-softplus(-x)``, ``log(sum(exp(x))) -> logsumexp(x)``, ``log(exp(x) / sum(exp(x))) -> x -
logsumexp(x)`` (log-softmax), ``log(softmax(x))`` likewise, and ``-sum(t * log_softmax(x))``
into one softmax cross-entropy (the op ``gb.softmax_cross_entropy`` builds, with gradients
to computed targets switched on) whose gradient is ``softmax * sum(t) - t``.
"""

from __future__ import annotations

from ..graph.node import Node
from ..ops import activations as act
from ..ops import elementwise as ew
from ..ops.base import apply
from ..ops.reduce import Sum
from .core import Context, is_const_scalar, rule
from ..ops.nn import LogSoftmax, Softmax, SoftmaxCrossEntropy
from ..ops.reduce import LogSumExp


def neg(x: Node) -> Node:
    """``-x`` without stacking negations."""
    return x.inputs[0] if isinstance(x.op, ew.Negative) else ew.negative(x)


@rule("stability", ew.Log)
def log1p_of_sum(node: Node, ctx: Context):
    """``log(1 + x)`` / ``log(x + 1)`` lose every digit of small ``x``; use ``log1p``."""
    (a,) = node.inputs
    if isinstance(a.op, ew.Add):
        x, y = a.inputs
        if is_const_scalar(y, 1):
            return ew.log1p(x), (a,)
        if is_const_scalar(x, 1):
            return ew.log1p(y), (a,)
    return None


@rule("stability", ew.Log1p)
def softplus_of_log1p_exp(node: Node, ctx: Context):
    """``log1p(exp(z))`` overflows for ``z > 88`` (float32); ``softplus`` is exact."""
    (a,) = node.inputs
    if isinstance(a.op, ew.Exp) and a.dtype.kind == "f":
        return act.softplus(a.inputs[0]), (a,)
    return None


@rule("stability", ew.Log)
def log_sigmoid(node: Node, ctx: Context):
    """``log(sigmoid(x))`` is ``-inf`` for ``x < -104``; ``-softplus(-x)`` is exact.
    Also matches the written-out sigmoid ``1 / (1 + exp(-x))``."""
    (a,) = node.inputs
    if isinstance(a.op, act.Sigmoid):
        return neg(act.softplus(neg(a.inputs[0]))), (a,)
    if isinstance(a.op, (ew.Divide,)) and is_const_scalar(a.inputs[0], 1):
        den = a.inputs[1]
        if isinstance(den.op, ew.Add) and isinstance(den.inputs[1].op, ew.Exp) and is_const_scalar(den.inputs[0], 1):
            z = den.inputs[1].inputs[0]  # 1 / (1 + exp(z)) = sigmoid(-z)
            return neg(act.softplus(z)), (a, den)
    return None


@rule("stability", ew.Log)
def log_sum_exp(node: Node, ctx: Context):
    """``log(sum(exp(x), axis))`` overflows at ``x ~ 89``; use a max-shifted logsumexp."""
    (a,) = node.inputs
    if isinstance(a.op, Sum) and isinstance(a.inputs[0].op, ew.Exp):
        e = a.inputs[0]
        return apply(LogSumExp(a.op.axis, a.op.keepdims), e.inputs[0]), (a, e)
    return None


@rule("stability", ew.Log)
def log_softmax(node: Node, ctx: Context):
    """``log(exp(x) / sum(exp(x), axis, keepdims=True))`` (or ``log(softmax(x))``) is
    ``x - logsumexp(x)``: no ``inf / inf`` for large logits."""
    (a,) = node.inputs
    if isinstance(a.op, Softmax):
        return apply(LogSoftmax(a.op.axis), a.inputs[0]), (a,)
    if not isinstance(a.op, ew.Divide):
        return None
    num, den = a.inputs
    if not (isinstance(num.op, ew.Exp) and isinstance(den.op, Sum) and den.op.keepdims):
        return None
    inner = den.inputs[0]
    if inner is num or (isinstance(inner.op, ew.Exp) and inner.inputs[0] is num.inputs[0]):
        x = num.inputs[0]
        if len(den.op.axis) == 1 and x.dtype.kind == "f":
            return apply(LogSoftmax(den.op.axis[0]), x), (a, num, den)
        return ew.subtract(x, apply(LogSumExp(den.op.axis, True), x)), (a, num, den)
    return None


def _log_softmax_source(n: Node):
    """``(x, axis)`` when ``n`` is ``x - logsumexp(x, axis, keepdims=True)`` or log_softmax."""
    if isinstance(n.op, ew.Subtract):
        x, l = n.inputs
        if isinstance(l.op, LogSumExp) and l.inputs[0] is x and l.op.keepdims and len(l.op.axis) == 1:
            return x, l.op.axis[0]
    if isinstance(n.op, LogSoftmax):
        return n.inputs[0], n.op.axis
    return None


@rule("stability", ew.Negative)
def softmax_cross_entropy(node: Node, ctx: Context):
    """``-sum(t * log_softmax(x), axis)`` (float ``t``) becomes one op whose gradient is
    ``softmax(x) * sum(t) - t`` (softmax minus one-hot)."""
    (s,) = node.inputs
    if not (isinstance(s.op, Sum) and len(s.op.axis) == 1 and not s.op.keepdims):
        return None
    m = s.inputs[0]
    if not isinstance(m.op, ew.Multiply):
        return None
    for t, l in (m.inputs, m.inputs[::-1]):
        src = _log_softmax_source(l)
        if src is not None and src[1] == s.op.axis[0] and t.shape == l.shape and t.dtype.kind == "f":
            x, axis = src
            return apply(SoftmaxCrossEntropy(axis), x, t), (s, m, l)
    return None


RULES = (log1p_of_sum, softplus_of_log1p_exp, log_sigmoid, log_sum_exp, log_softmax, softmax_cross_entropy)
