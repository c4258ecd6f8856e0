"""The op database: one entry per op with samples, a NumPy reference and gradient facts.

Every test in ``test_ops.py`` iterates this table (forward vs NumPy, static type vs the
computed value, first- and second-order gradients vs finite differences), and a coverage
test fails when a class of ``graphbp.ops.OP_CLASSES`` has no entry here.

A sample is the operand arrays plus, optionally, the static shapes to declare them with
(``None`` dims are unknown at build time) and keyword arguments for the builder and the
reference. Samples stay away from kinks and ties (relu at 0, tied maxima) where a
finite difference does not measure the documented one-sided rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import graphbp as gb
from graphbp import ops as O


@dataclass
class Sample:
    args: tuple[np.ndarray, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    declared: tuple[tuple | None, ...] | None = None  # static shapes; None entry = actual shape

    def shapes(self) -> list[tuple]:
        decl = self.declared or (None,) * len(self.args)
        return [a.shape if d is None else d for a, d in zip(self.args, decl)]

    def __repr__(self) -> str:
        parts = [f"{a.dtype}{a.shape}" for a in self.args]
        if self.declared:
            parts.append(f"declared={self.declared}")
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return ", ".join(parts)


@dataclass
class OpInfo:
    """How to build, run and check one op.

    Attributes
    ----------
    name : str
        Entry name (test ids); usually the builder's name.
    ops : tuple of op classes
        The classes this entry covers (the coverage test reads this).
    build : callable(*nodes, **kwargs) -> Node
    ref : callable(*arrays, **kwargs) -> ndarray
        The NumPy reference.
    samples : callable(rng) -> list[Sample]
    grad : bool
        Check first-order gradients (float inputs only; integer inputs never get one).
    nondiff : tuple[int, ...]
        Float inputs that are not differentiated (labels, targets).
    second_order : bool
        Also check a Hessian-vector product.
    check_dtype : bool
        Require the result dtype to equal the reference's.
    """

    name: str
    ops: tuple[type, ...]
    build: Callable[..., Any]
    ref: Callable[..., Any]
    samples: Callable[[np.random.Generator], list[Sample]]
    grad: bool = True
    nondiff: tuple[int, ...] = ()
    second_order: bool = False
    check_dtype: bool = True
    rtol: float = 1e-7


def _n(rng, *shape):
    return rng.normal(size=shape)


def _pos(rng, *shape):
    return rng.uniform(0.5, 2.0, size=shape)


def _away(rng, *shape, gap=0.1):
    """Normal values kept at least ``gap`` from 0 (kinks of relu, abs, ...)."""
    x = rng.normal(size=shape)
    return np.where(np.abs(x) < gap, np.sign(x + 1e-12) * gap + x, x)


def _distinct(rng, *shape):
    """Values with well-separated entries (no ties for max/min)."""
    n = int(np.prod(shape)) if shape else 1
    return (rng.permutation(n) * 0.37 - n * 0.15).reshape(shape) + rng.uniform(-0.05, 0.05, shape)


def _unary_samples(gen=_n):
    def samples(rng):
        return [
            Sample((gen(rng, 3, 4),)),
            Sample((gen(rng, 2, 1, 3),), declared=((None, 1, 3),)),
            Sample((gen(rng),)),
            Sample((gen(rng, 5).astype(np.float32),)),
        ]
    return samples


def _binary_samples(gen_a=_n, gen_b=_n, ints=False):
    def samples(rng):
        extra = [Sample((rng.integers(-4, 5, (3, 4)), rng.integers(-4, 5, (4,))))] if ints else []
        return extra + [
            Sample((gen_a(rng, 3, 4), gen_b(rng, 3, 4))),
            Sample((gen_a(rng, 2, 3, 4), gen_b(rng, 4))),          # broadcast lead dims
            Sample((gen_a(rng, 3, 1), gen_b(rng, 1, 4))),          # size-1 dims both sides
            Sample((gen_a(rng, 4, 3), gen_b(rng, 4, 1)), declared=((None, 3), (None, 1))),
        ]
    return samples


def _unary(name, cls, fn, ref, gen=_n, **kw):
    return OpInfo(name, (cls,), fn, ref, _unary_samples(gen), **kw)


def _binary(name, cls, fn, ref, gen_a=_n, gen_b=_n, ints=False, **kw):
    return OpInfo(name, (cls,), fn, ref, _binary_samples(gen_a, gen_b, ints), **kw)


def _int_sample(rng):
    return [Sample((rng.integers(-3, 4, size=(3, 4)),))]


def _with_ints(samples, extra):
    def s(rng):
        return samples(rng) + extra(rng)
    return s


# --------------------------------------------------------------------------- refs
def _erf_ref(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype if x.dtype.kind == "f" else np.float64)


def _sigmoid_ref(x):
    return (1 / (1 + np.exp(-x))).astype(x.dtype)


def _gelu_ref(x, approximate="tanh"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return (0.5 * x * (1 + _erf_ref(x.astype(np.float64) / np.sqrt(2)))).astype(x.dtype)


def _lse_ref(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def _log_softmax_ref(x, axis=-1):
    return x - _lse_ref(x, axis=axis, keepdims=True)


def _sce_ref(x, t, axis=-1):
    lsm = _log_softmax_ref(x, axis)
    if t.dtype.kind in "iu":
        return -np.squeeze(np.take_along_axis(lsm, np.expand_dims(t, axis), axis), axis)
    return -np.sum(t * lsm, axis=axis)


def _sce_probs_build(x, t, axis=-1):
    """Both outputs in one value, so the gradient check reaches both cotangents."""
    node = O.base.apply(O.SoftmaxCrossEntropyProbs(axis % x.ndim), x, t)
    loss, p = O.base.apply(O.TupleGet(0), node), O.base.apply(O.TupleGet(1), node)
    return loss + gb.sum(p * p * np.linspace(0.5, 2, x.shape[axis] or 3).reshape((-1,) + (1,) * (x.ndim - 1 - axis % x.ndim)), axis=axis)


def _sce_probs_ref(x, t, axis=-1):
    p = np.exp(_log_softmax_ref(x, axis))
    w = np.linspace(0.5, 2, x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - 1 - axis % x.ndim))
    return _sce_ref(x, t, axis) + np.sum(p * p * w, axis=axis)


def _bce_ref(z, t):
    p = 1 / (1 + np.exp(-z))
    return -(t * np.log(p) + (1 - t) * np.log1p(-p))


def _one_hot_ref(t, depth, dtype="float32", axis=-1):
    return np.moveaxis(np.eye(depth, dtype=dtype)[t], -1, axis)


def _scatter_ref(g, idx, axis, shape):
    out = np.zeros(shape, g.dtype)
    np.add.at(np.moveaxis(out, axis, 0), idx, np.moveaxis(g, tuple(range(axis, axis + idx.ndim)), tuple(range(idx.ndim))))
    return out


def _embed_ref(g, index, shape):
    out = np.zeros(shape, g.dtype)
    out[index] = g
    return out


def _dropout_ref(x, key, rate):
    keep = np.random.default_rng(int(key)).random(x.shape) >= rate
    return x * keep / (1 - rate)


# ----------------------------------------------------------------------- samples
def _reduce_samples(gen=_n, ints=True):
    def samples(rng):
        extra = [Sample((rng.permutation(12).reshape(3, 4) - 5,), {"axis": 0})] if ints else []
        return extra + [
            Sample((gen(rng, 3, 4),), {"axis": None}),
            Sample((gen(rng, 3, 4),), {"axis": 1, "keepdims": True}),
            Sample((gen(rng, 2, 3, 4),), {"axis": (0, -1)}),
            Sample((gen(rng, 2, 1, 4),), {"axis": -2}),
            Sample((gen(rng, 5, 3),), {"axis": 0}, declared=((None, 3),)),
            Sample((gen(rng, 5, 3),), {"axis": 1, "keepdims": True}, declared=((None, None),)),
        ]
    return samples


def _axis_samples(rng):
    return [
        Sample((_n(rng, 3, 4),), {"axis": -1}),
        Sample((_n(rng, 2, 3, 4),), {"axis": 1}),
        Sample((_n(rng, 5, 4) * 30,), {"axis": 0}),
        Sample((_n(rng, 6, 4),), {"axis": -1}, declared=((None, 4),)),
    ]


def _sce_samples(rng):
    """Integer labels, then soft labels that need not sum to one (label smoothing,
    distillation targets): the gradient reaches those."""
    p = rng.uniform(0.1, 1, size=(4, 5))
    return [
        Sample((_n(rng, 4, 5), rng.integers(0, 5, size=4))),
        Sample((_n(rng, 2, 3, 5) * 20, rng.integers(0, 3, size=(2, 5))), {"axis": 1}),
        Sample((_n(rng, 6, 3), rng.integers(0, 3, size=6)), declared=((None, 3), (None,))),
        Sample((_n(rng, 4, 5), p / p.sum(-1, keepdims=True))),
        Sample((_n(rng, 3, 4), rng.uniform(0, 1, (3, 4))), {"axis": 0}),
        Sample((_n(rng, 2, 3, 4) * 5, rng.uniform(0, 1, (2, 3, 4))), {"axis": 1}),
        Sample((_n(rng, 5, 3), rng.uniform(0, 1, (5, 3))), declared=((None, 3), (None, 3))),
    ]


def _bce_samples(rng):
    return [
        Sample((_n(rng, 3, 4) * 3, rng.uniform(0, 1, (3, 4)))),
        Sample((_n(rng, 2, 4), rng.integers(0, 2, (4,)).astype(np.float64))),
        Sample((_n(rng, 5, 2), rng.uniform(0, 1, (5, 2))), declared=((None, 2), (None, 2))),
    ]


def _matmul_samples(rng):
    return [
        Sample((_n(rng, 3, 4), _n(rng, 4, 2))),
        Sample((_n(rng, 4), _n(rng, 4, 2))),
        Sample((_n(rng, 3, 4), _n(rng, 4))),
        Sample((_n(rng, 4), _n(rng, 4))),
        Sample((_n(rng, 2, 3, 4), _n(rng, 4, 5))),
        Sample((_n(rng, 2, 1, 3, 4), _n(rng, 5, 4, 2))),
        Sample((_n(rng, 6, 4), _n(rng, 4, 2)), declared=((None, 4), None)),
    ]


def _getitem_samples(rng):
    return [
        Sample((_n(rng, 4, 5),), {"index": (1, slice(None, None, 2))}),
        Sample((_n(rng, 4, 5),), {"index": (slice(-3, None), None, Ellipsis)}),
        Sample((_n(rng, 2, 3, 4),), {"index": (Ellipsis, slice(3, 0, -1))}),
        Sample((_n(rng, 6, 3),), {"index": (slice(1, 4), -1)}, declared=((None, 3),)),
        Sample((_n(rng, 5),), {"index": 2}),
    ]


def _concat_samples(rng):
    return [
        Sample((_n(rng, 2, 3), _n(rng, 4, 3)), {"axis": 0}),
        Sample((_n(rng, 2, 3), _n(rng, 2, 1), _n(rng, 2, 2)), {"axis": -1}),
        Sample((_n(rng, 2, 3), _n(rng, 4, 3)), {"axis": 0}, declared=((None, 3), (None, 3))),
        Sample((_n(rng, 5, 2), _n(rng, 5, 3)), {"axis": 1}, declared=((None, 2), (None, 3))),
    ]


def _take_samples(rng):
    return [
        Sample((_n(rng, 5, 3), np.array([0, 4, 4, -1])), {"axis": 0}),
        Sample((_n(rng, 2, 5, 3), rng.integers(0, 5, (2, 2))), {"axis": 1}),
        Sample((_n(rng, 6, 3), np.array([2, 2])), {"axis": -1}, declared=((None, 3), None)),
    ]


def _clip_samples(rng):
    def away(x, bounds):
        for b in bounds:
            x = np.where(np.abs(x - b) < 0.05, x + 0.1, x)
        return x
    return [
        Sample((away(_n(rng, 3, 4), (-0.5, 0.5)),), {"lo": -0.5, "hi": 0.5}),
        Sample((away(_n(rng, 4), (0.0,)),), {"lo": 0.0}),
        Sample((away(_n(rng, 5, 2), (1.0,)),), {"hi": 1.0}, declared=((None, 2),)),
        Sample((rng.integers(-5, 5, (4,)),), {"lo": -2, "hi": 2}),
        Sample((away(_n(rng, 3, 4), (-0.5, 0.5)),), {"lo": np.full(4, -0.5), "hi": 0.5}),  # array bound: composite
    ]


def _shape_samples(rng, kind):
    if kind == "reshape":
        return [Sample((_n(rng, 3, 4),), {"shape": (2, 6)}), Sample((_n(rng, 2, 3, 2),), {"shape": (-1, 3)}),
                Sample((_n(rng, 4, 3),), {"shape": (-1,)}, declared=((None, 3),))]
    if kind == "transpose":
        return [Sample((_n(rng, 3, 4),), {"axes": None}), Sample((_n(rng, 2, 3, 4),), {"axes": (1, -1, 0)}),
                Sample((_n(rng, 5, 3),), {"axes": (1, 0)}, declared=((None, 3),))]
    if kind == "broadcast_to":
        return [Sample((_n(rng, 3, 1),), {"shape": (2, 3, 4)}), Sample((_n(rng, 4),), {"shape": (3, 4)})]
    if kind == "expand_dims":
        return [Sample((_n(rng, 3, 4),), {"axis": 0}), Sample((_n(rng, 3, 4),), {"axis": -1}),
                Sample((_n(rng, 5, 2),), {"axis": 1}, declared=((None, 2),))]
    if kind == "squeeze":
        return [Sample((_n(rng, 3, 1, 4),), {"axis": 1}), Sample((_n(rng, 1, 3, 1),), {"axis": None}),
                Sample((_n(rng, 4, 1),), {"axis": -1}, declared=((None, 1),))]
    raise KeyError(kind)


def _pow_samples(rng):
    return [
        Sample((_pos(rng, 3, 4), _n(rng, 3, 4))),
        Sample((_pos(rng, 2, 3), _n(rng, 3))),
        Sample((_pos(rng, 4, 1), _n(rng, 1, 2)), declared=((None, 1), None)),
    ]


def _where_samples(rng):
    return [
        Sample((rng.random((3, 4)) > 0.5, _n(rng, 3, 4), _n(rng, 3, 4))),
        Sample((rng.random((4,)) > 0.5, _n(rng, 3, 4), _n(rng, 3, 1))),
        Sample((rng.random((5, 2)) > 0.5, _n(rng, 5, 2), _n(rng, 2)), declared=((None, 2), (None, 2), None)),
    ]


def _cond_samples(rng):
    """Both outcomes of ``pred``, for branches returning one node, a tuple, and a tuple of
    which one output is unused (its cotangent is a symbolic zero); a batch dim unknown at
    build time."""
    out = []
    for structure in ("node", "tuple", "tuple_unused"):
        for pred in (True, False):
            out.append(Sample((np.array(pred), _n(rng, 3, 4), _n(rng, 3, 4)), {"structure": structure}))
    out += [Sample((np.array(pred), _n(rng, 5, 2), _n(rng, 5, 2)), {"structure": s},
                   declared=(None, (None, 2), (None, 2))) for pred, s in ((True, "node"), (False, "tuple"))]
    return out


def _cond_build(p, x, y, structure):
    if structure == "node":  # y is read from outside the branches: captured as an operand
        return gb.cond(p, lambda a: gb.tanh(a) * y, lambda a: a - gb.exp(y), x)
    a, b = gb.cond(p, lambda u, v: (u * v, gb.sin(u)), lambda u, v: (u + v, v * v), x, y)
    return a + 2.0 * b if structure == "tuple" else a


def _cond_ref(p, x, y, structure):
    if structure == "node":
        return np.tanh(x) * y if p else x - np.exp(y)
    a, b = (x * y, np.sin(x)) if p else (x + y, y * y)
    return a + 2.0 * b if structure == "tuple" else a


def _scan_samples(rng):
    """A tanh recurrence over xs read forward and in reverse, a nested carry with an integer
    counter beside two float carries and no xs (``length``), length 1, and a sequence
    length unknown at build time."""
    out = [Sample((_n(rng, 3), _n(rng, 5, 3), 0.5 * _n(rng, 3, 3)), {"kind": k}) for k in ("rnn", "reverse", "nested")]
    out.append(Sample((_n(rng, 3), _n(rng, 1, 3), 0.5 * _n(rng, 3, 3)), {"kind": "rnn"}))
    out.append(Sample((_n(rng, 3), _n(rng, 4, 3), 0.5 * _n(rng, 3, 3)), {"kind": "rnn"}, declared=(None, (None, 3), None)))
    return out


def _scan_step(np_or_gb, w, kind):
    """One step, written once for graphbp nodes and NumPy arrays."""
    tanh, matmul = (gb.tanh, gb.matmul) if np_or_gb is gb else (np.tanh, np.matmul)
    if kind == "nested":
        def step(c, _):
            n, (a, b) = c["n"], c["ab"]
            return {"n": n + 1, "ab": (tanh(matmul(w, a)) + b * 0.5, a * b)}, (a * 2.0, b)
        return step
    return lambda h, x: (tanh(matmul(w, h) + x), h * x)


def _scan_build(h, xs, w, kind):
    if kind == "nested":
        c, (ya, yb) = gb.scan(_scan_step(gb, w, kind), {"n": np.int64(0), "ab": (h, gb.sin(h))}, length=4)
        return c["ab"][0] + c["ab"][1] * gb.cast(c["n"], h.dtype) + gb.sum(ya * yb, axis=0)
    hT, ys = gb.scan(_scan_step(gb, w, kind), h, xs, reverse=kind == "reverse")
    return hT + gb.sum(gb.sin(ys), axis=0)


def _scan_ref(h, xs, w, kind):
    step = _scan_step(np, w, kind)
    if kind == "nested":
        c, ys = {"n": np.int64(0), "ab": (h, np.sin(h))}, []
        for _ in range(4):
            c, y = step(c, None)
            ys.append(y[0] * y[1])
        return c["ab"][0] + c["ab"][1] * c["n"] + np.sum(ys, axis=0)
    ys = [None] * len(xs)
    for t in (reversed(range(len(xs))) if kind == "reverse" else range(len(xs))):
        h, ys[t] = step(h, xs[t])
    return h + np.sum(np.sin(ys), axis=0)


def _cmp(name, cls, fn, ref):
    return _binary(name, cls, fn, ref, ints=True, grad=False)


def _leaky(x, alpha=0.01):
    return np.where(x > 0, x, alpha * x)


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _prod_samples(rng):
    base = _reduce_samples(_n)(rng)
    z = _n(rng, 3, 4)
    z[0, 1] = 0.0                    # one zero in row 0
    z[2, 0] = z[2, 3] = 0.0          # two zeros in row 2
    z2 = _n(rng, 2, 3)
    z2[0, 0] = z2[0, 2] = z2[1, 1] = 0.0
    return base + [Sample((z,), {"axis": 1}), Sample((z2,), {"axis": -1, "keepdims": True})]


def _full_samples(rng):
    return [Sample((_n(rng, 3, 2),), {"value": 2.5}), Sample((_n(rng, 4, 2),), {"value": -1.0}, declared=((None, 2),))]


def _var_samples(rng):
    return _reduce_samples(_n)(rng) + [Sample((_n(rng, 4, 3),), {"axis": 0, "ddof": 1}),
                                       Sample((_n(rng, 5, 3),), {"axis": 0, "ddof": 1}, declared=((None, 3),))]


def _split_build(x, sections, axis):
    return gb.concatenate(gb.split(x, sections, axis), axis)  # one node out: re-joined pieces


def _split_ref(x, sections, axis):
    return np.concatenate(np.split(x, sections, axis) , axis)


_ACTS = {None: lambda z: z, "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "relu": lambda z: np.maximum(z, 0)}


def _conv_bias_act_build(x, w, b, act=None, stride=1, padding=0, groups=1):
    conv = gb.conv2d(x, w, stride=stride, padding=padding, groups=groups).op  # the builder's settings
    names = ("conv2d", "add") + ((act,) if act else ())
    return O.base.apply(O.ConvBiasAct.of(conv, act, names), x, w, b)


def _conv_bias_act_ref(x, w, b, act=None, stride=1, padding=0, groups=1):
    y = O.conv.conv2d_kernel(x, w, (stride, stride), ((padding, padding), (padding, padding)), (1, 1), groups)
    return _ACTS[act](y + b)


def _conv_bias_act_samples(rng):
    return [Sample((_n(rng, 2, 3, 5, 5), _n(rng, 4, 3, 3, 3), _n(rng, 4, 1, 1)), {"act": "relu", "padding": 1}),
            Sample((_n(rng, 1, 4, 6, 6), _n(rng, 2, 2, 3, 3), _n(rng, 2, 1, 1)), {"act": "tanh", "stride": 2, "groups": 2}),
            Sample((_n(rng, 3, 2, 4, 4), _n(rng, 3, 2, 2, 2), _n(rng, 1, 3, 1, 1)), {"act": "sigmoid"},
                   declared=((None, 2, 4, 4), None, None)),
            Sample((_n(rng, 2, 1, 4, 4), _n(rng, 2, 1, 3, 3), _n(rng, 2, 1, 1)), {})]


OPDB: list[OpInfo] = [
    # ---------------------------------------------------------------- binary elementwise
    _binary("add", O.Add, gb.add, np.add, ints=True),
    _binary("subtract", O.Subtract, gb.subtract, np.subtract, ints=True),
    _binary("multiply", O.Multiply, gb.multiply, np.multiply, ints=True, second_order=True),
    _binary("divide", O.Divide, gb.divide, np.divide, gen_b=_pos, second_order=True),
    OpInfo("power", (O.Power,), gb.power, np.power, _pow_samples, second_order=True),
    _binary("maximum", O.Maximum, gb.maximum, np.maximum, gen_a=_distinct, gen_b=lambda r, *s: _distinct(r, *s) + 0.1),
    _binary("minimum", O.Minimum, gb.minimum, np.minimum, gen_a=_distinct, gen_b=lambda r, *s: _distinct(r, *s) + 0.1),
    OpInfo("where", (O.Where,), gb.where, np.where, _where_samples),
    _cmp("greater", O.Greater, gb.greater, np.greater),
    _cmp("greater_equal", O.GreaterEqual, gb.greater_equal, np.greater_equal),
    _cmp("less", O.Less, gb.less, np.less),
    _cmp("less_equal", O.LessEqual, gb.less_equal, np.less_equal),
    _cmp("equal", O.Equal, gb.equal, np.equal),
    _cmp("not_equal", O.NotEqual, gb.not_equal, np.not_equal),
    # ----------------------------------------------------------------- unary elementwise
    OpInfo("negative", (O.Negative,), gb.negative, np.negative, _with_ints(_unary_samples(), _int_sample)),
    _unary("exp", O.Exp, gb.exp, np.exp, second_order=True),
    _unary("log", O.Log, gb.log, np.log, gen=_pos, second_order=True),
    _unary("log1p", O.Log1p, gb.log1p, np.log1p, gen=_pos),
    _unary("sqrt", O.Sqrt, gb.sqrt, np.sqrt, gen=_pos),
    OpInfo("square", (O.Square,), gb.square, np.square, _with_ints(_unary_samples(), _int_sample)),
    OpInfo("abs", (O.Abs,), gb.abs, np.abs, _with_ints(_unary_samples(_away), _int_sample)),
    OpInfo("sign", (O.Sign,), gb.sign, np.sign, _with_ints(_unary_samples(_away), _int_sample), grad=False),
    _unary("reciprocal", O.Reciprocal, gb.reciprocal, np.reciprocal, gen=_pos),
    _unary("sin", O.Sin, gb.sin, np.sin, second_order=True),
    _unary("cos", O.Cos, gb.cos, np.cos),
    _unary("tanh", O.Tanh, gb.tanh, np.tanh, second_order=True),
    OpInfo("cast", (O.Cast,), lambda x, dtype: gb.cast(x, dtype), lambda x, dtype: x.astype(dtype),
           lambda rng: [Sample((_n(rng, 3, 4),), {"dtype": "float32"}), Sample((_n(rng, 3),), {"dtype": "int64"}),
                        Sample((rng.integers(0, 5, (4,)),), {"dtype": "float64"})], rtol=1e-6),
    OpInfo("clip", (O.Clip,), gb.clip, lambda x, lo=None, hi=None: np.clip(x, lo, hi), _clip_samples),
    # ----------------------------------------------------------------------- activations
    OpInfo("relu", (O.Relu,), gb.relu, lambda x: np.maximum(x, 0), _with_ints(_unary_samples(_away), _int_sample)),
    OpInfo("leaky_relu", (O.LeakyRelu,), gb.leaky_relu, _leaky,
           lambda rng: _unary_samples(_away)(rng) + [Sample((_away(rng, 3, 2),), {"alpha": 0.2})]),
    OpInfo("elu", (O.Elu,), gb.elu, _elu,
           lambda rng: _unary_samples(_away)(rng) + [Sample((_away(rng, 3, 2) * 30,), {"alpha": 0.5})],
           second_order=True),
    OpInfo("gelu", (), gb.gelu, _gelu_ref,  # a composite of tanh / erf and arithmetic
           lambda rng: _unary_samples()(rng) + [Sample((_n(rng, 3, 4) * 2,), {"approximate": "none"}),
                                                Sample((_n(rng, 4, 2),), {"approximate": "none"}, declared=((None, 2),))],
           second_order=True),
    OpInfo("erf", (O.Erf,), gb.erf, _erf_ref,
           lambda rng: _unary_samples()(rng) + [Sample((np.array([-30.0, -4.5, -0.3, 0.0, 0.47, 3.9, 6.0, 1e-20]),))],
           second_order=True, rtol=1e-14),
    _unary("sigmoid", O.Sigmoid, gb.sigmoid, _sigmoid_ref, second_order=True),
    OpInfo("softplus", (O.Softplus,), gb.softplus, lambda x: np.logaddexp(0, x),
           lambda rng: _unary_samples()(rng) + [Sample((np.array([-800.0, -30.0, 0.0, 30.0, 800.0]),))]),
    # ------------------------------------------------------------------------- linalg
    OpInfo("matmul", (O.MatMul,), gb.matmul, np.matmul, _matmul_samples, second_order=True),
    # ---------------------------------------------------------------------- reductions
    OpInfo("sum", (O.Sum,), gb.sum, np.sum, _reduce_samples()),
    OpInfo("mean", (O.Mean, O.ReducedCount), gb.mean, np.mean, _reduce_samples(), second_order=True),
    OpInfo("max", (O.Max,), gb.max, np.max, _reduce_samples(_distinct)),
    OpInfo("min", (O.Min,), gb.min, np.min, _reduce_samples(_distinct)),
    OpInfo("prod", (O.Prod,), gb.prod, np.prod, _prod_samples, second_order=True),
    OpInfo("logsumexp", (O.LogSumExp,), gb.logsumexp, _lse_ref, _reduce_samples(), second_order=True),
    OpInfo("var", (), gb.var, np.var, _var_samples, second_order=True),
    # ------------------------------------------------------------------------ shape ops
    OpInfo("reshape", (O.Reshape,), gb.reshape, np.reshape, lambda r: _shape_samples(r, "reshape")),
    OpInfo("transpose", (O.Transpose,), gb.transpose, np.transpose, lambda r: _shape_samples(r, "transpose")),
    OpInfo("broadcast_to", (O.BroadcastTo,), gb.broadcast_to, np.broadcast_to, lambda r: _shape_samples(r, "broadcast_to")),
    OpInfo("expand_dims", (O.ExpandDims,), gb.expand_dims, np.expand_dims, lambda r: _shape_samples(r, "expand_dims")),
    OpInfo("squeeze", (O.Squeeze,), gb.squeeze, np.squeeze, lambda r: _shape_samples(r, "squeeze")),
    OpInfo("full_like", (O.Full,), gb.full_like, lambda x, value: np.full_like(x, value), _full_samples, grad=False),
    OpInfo("getitem", (O.GetItem,), gb.getitem, lambda x, index: x[index], _getitem_samples),
    OpInfo("embed_slice", (O.EmbedSlice,),
           lambda g, index, shape: gb.embed_slice(g, O.indexing._normalize_index(index, len(shape)), gb.zeros_like(gb.constant(np.zeros(shape)))),
           _embed_ref,
           lambda rng: [Sample((_n(rng, 2, 3),), {"index": (slice(1, 3), slice(None, None, 2)), "shape": (4, 5)})]),
    OpInfo("concatenate", (O.Concatenate, O.ConcatSlice), lambda *xs, axis: gb.concatenate(xs, axis),
           lambda *xs, axis: np.concatenate(xs, axis), _concat_samples, second_order=True),
    OpInfo("stack", (), lambda *xs, axis: gb.stack(xs, axis), lambda *xs, axis: np.stack(xs, axis),
           lambda rng: [Sample((_n(rng, 2, 3), _n(rng, 2, 3)), {"axis": 0}), Sample((_n(rng, 2, 3), _n(rng, 2, 3)), {"axis": -1}),
                        Sample((_n(rng, 4, 3), _n(rng, 4, 3)), {"axis": 1}, declared=((None, 3), (None, 3)))]),
    OpInfo("split", (), _split_build, _split_ref,
           lambda rng: [Sample((_n(rng, 6, 2),), {"sections": 3, "axis": 0}),
                        Sample((_n(rng, 2, 7),), {"sections": [2, 5], "axis": -1}),
                        Sample((_n(rng, 5, 2),), {"sections": [1, 3], "axis": 0}, declared=((None, 2),))]),
    OpInfo("take", (O.Take,), gb.take, np.take, _take_samples, second_order=True),
    OpInfo("scatter_add", (O.ScatterAdd,),
           lambda g, idx, axis, shape: gb.scatter_add(g, idx, axis, gb.constant(np.zeros(shape))), _scatter_ref,
           lambda rng: [Sample((_n(rng, 4, 3), np.array([0, 2, 2, 4])), {"axis": 0, "shape": (5, 3)}),
                        Sample((_n(rng, 2, 2, 2), np.array([[1, 1], [0, 2]])), {"axis": 1, "shape": (2, 3)})]),
    OpInfo("one_hot", (O.OneHot,), gb.one_hot, _one_hot_ref,
           lambda rng: [Sample((rng.integers(0, 4, (5,)),), {"depth": 4}),
                        Sample((rng.integers(0, 3, (2, 3)),), {"depth": 3, "dtype": "float64", "axis": 0}),
                        Sample((rng.integers(0, 3, (4,)),), {"depth": 3}, declared=((None,),))], grad=False),
    # ----------------------------------------------------------------------------- nn
    OpInfo("softmax", (O.Softmax,), gb.softmax, lambda x, axis=-1: np.exp(_log_softmax_ref(x, axis)), _axis_samples,
           second_order=True),
    OpInfo("log_softmax", (O.LogSoftmax,), gb.log_softmax, _log_softmax_ref, _axis_samples, second_order=True),
    # float labels and targets are differentiated too (soft labels); integer labels never are
    OpInfo("softmax_cross_entropy", (O.SoftmaxCrossEntropy,), gb.softmax_cross_entropy, _sce_ref, _sce_samples,
           second_order=True),
    OpInfo("sigmoid_binary_cross_entropy", (O.SigmoidBinaryCrossEntropy,), gb.sigmoid_binary_cross_entropy,
           _bce_ref, _bce_samples, second_order=True),
    OpInfo("mse", (), gb.mse, lambda p, t: np.mean((p - t) ** 2), _binary_samples()),
    # ----------------------------------------------------------------------- control flow
    OpInfo("cond", (O.Cond, O.TupleGet), _cond_build, _cond_ref, _cond_samples, second_order=True),
    OpInfo("scan", (O.Scan,), _scan_build, _scan_ref, _scan_samples, second_order=True),
    OpInfo("dropout", (O.DropoutMask,), lambda x, key, rate: gb.dropout(x, rate, key), _dropout_ref,
           lambda rng: [Sample((_n(rng, 4, 5), np.array(7)), {"rate": 0.3}),
                        Sample((_n(rng, 6, 3), np.array(123)), {"rate": 0.5}, declared=((None, 3), None))]),
    # ----------------------------------------------------------- ops the passes make
    OpInfo("add_n", (O.AddN,), lambda *xs: O.base.apply(O.AddN(len(xs)), *xs), lambda *xs: sum(xs),
           lambda rng: [Sample((_n(rng, 3, 4), _n(rng, 3, 4), _n(rng, 4))),
                        Sample((_n(rng, 2, 3), _n(rng, 2, 3)), declared=((None, 3), (None, 3)))],
           second_order=True),
    OpInfo("softmax_cross_entropy_probs", (O.SoftmaxCrossEntropyProbs,), _sce_probs_build, _sce_probs_ref,
           lambda rng: [Sample((_n(rng, 4, 5), rng.integers(0, 5, size=4))),
                        Sample((_n(rng, 2, 3, 5) * 20, rng.integers(0, 3, size=(2, 5))), {"axis": 1}),
                        Sample((_n(rng, 3, 80, 70), rng.integers(0, 70, size=(3, 80)))),
                        Sample((_n(rng, 6, 3), rng.integers(0, 3, size=6)), declared=((None, 3), (None,)))],
           second_order=True),
    OpInfo("matmul_bias_act", (O.MatMulBiasAct,),
           lambda a, w, b, act=None: O.base.apply(O.MatMulBiasAct(act, ("matmul", "add") + ((act,) if act else ())), a, w, b),
           lambda a, w, b, act=None: {None: lambda z: z, "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
                                      "relu": lambda z: np.maximum(z, 0)}[act](a @ w + b),
           lambda rng: [Sample((_n(rng, 3, 4), _n(rng, 4, 2), _n(rng, 2))),
                        Sample((_n(rng, 3, 4), _n(rng, 4, 2), _n(rng, 2)), {"act": "tanh"}),
                        Sample((_n(rng, 5, 4), _n(rng, 4, 3), _n(rng, 1, 3)), {"act": "sigmoid"},
                               declared=((None, 4), None, None))],
           second_order=True),
    OpInfo("conv_bias_act", (O.ConvBiasAct,), _conv_bias_act_build, _conv_bias_act_ref, _conv_bias_act_samples,
           second_order=True),
    # ---------------------------------------------------------------------- collectives
    OpInfo("allreduce_mean", (O.AllreduceMean,), lambda x: gb.distributed.allreduce_mean(x, gb.distributed.single_process()),
           lambda x: x, _unary_samples(), second_order=True),  # one process: the mean of one value
    OpInfo("allreduce_mean_overlapped", (O.AllreduceStart, O.AllreduceWait),
           lambda x: gb.distributed.allreduce_mean(x, gb.distributed.single_process(), overlap=True),
           lambda x: x, _unary_samples(), second_order=True),  # the start/wait pair: the same mean
]
"""Every op entry. Keep names unique: they are the test ids."""

# Leaves are typed at creation and have no kernel to test here.
EXCLUDED_FROM_COVERAGE: tuple[type, ...] = (O.Input, O.Param, O.Constant)

from opdb_cnn import CNN_ROWS  # noqa: E402 - the image ops' rows use the helpers above

OPDB += CNN_ROWS
