"""Op classes the passes create: n-ary add, fused elementwise kernels, matmul+bias+activation.

They are ordinary ops (``infer``, ``compute``, ``vjp``), so a rewritten graph can be
verified, rendered, saved and differentiated again. Their VJPs *un-fuse*: they re-emit the
absorbed sub-graph over the node's inputs and differentiate that with ``gb.vjp``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..graph.node import Node
from ..graph.types import TensorType, broadcast_shapes
from ..ops import elementwise as ew
from ..ops.base import Op, apply, shape_error
from ..ops.shape import BroadcastTo

BLOCK = 1 << 15
"""Elements per chunk of a fused kernel: 128 KiB of float32 scratch per live value."""


def _unfuse_vjp(node: Node, g: Node, emit) -> tuple[Node | None, ...]:
    """Differentiate a fused node by re-emitting its sub-graph (``emit(inputs) -> output``)."""
    from ..autodiff import vjp

    ins = list(node.inputs)
    wrt = [i for i in ins if i.dtype.kind == "f"]
    out = emit(ins)
    grads = dict(zip(wrt, vjp([out], wrt, [g]))) if wrt else {}
    return tuple(grads.get(i) for i in ins)


@dataclasses.dataclass(frozen=True)
class AddN(ew.Elementwise):
    """``x0 + x1 + ... + xn`` in one op: one output buffer, accumulated in place.

    Autodiff sums partial gradients as a chain of binary adds; the accumulation pass
    flattens such chains into this op.
    """

    name: ClassVar[str] = "add_n"
    n: int = 2

    def compute(self, *xs, out=None):
        shape = np.broadcast_shapes(*(x.shape for x in xs))
        dtype = np.result_type(*xs)
        if out is None:
            out = np.empty(shape, dtype)
        elif any(np.may_share_memory(out, x) for x in xs[2:]):  # out aliases a later term
            acc = np.add(xs[0], xs[1])
            for x in xs[2:]:
                np.add(acc, x, out=acc)
            out[...] = acc
            return out
        np.add(xs[0], xs[1], out=out)
        for x in xs[2:]:
            np.add(out, x, out=out)
        return out

    def result_dtype(self, *dtypes):
        return np.result_type(*dtypes)

    def vjp(self, node, g):
        return (g,) * len(node.inputs)


# ---------------------------------------------------------------- in-place kernels
def _ufunc_kernel(uf):
    return lambda out, *xs: uf(*xs, out=out)


def _where_kernel(out, c, a, b):
    np.copyto(out, b, casting="unsafe")
    np.copyto(out, a, casting="unsafe", where=c)


def _cast_kernel(out, x):
    np.copyto(out, x, casting="unsafe")


def _relu_kernel(out, x):
    np.maximum(x, 0, out=out)


def _gelu_tanh_kernel(out, x):
    """``0.5 x (1 + tanh(c (x + a x^3)))`` in place in ``out``: no temporaries."""
    t = out.dtype.type
    np.multiply(x, x, out=out)
    np.multiply(out, t(0.044715), out=out)
    np.add(out, t(1), out=out)
    np.multiply(out, x, out=out)
    np.multiply(out, t(0.7978845608028654), out=out)
    np.tanh(out, out=out)
    np.add(out, t(1), out=out)
    np.multiply(out, x, out=out)
    np.multiply(out, t(0.5), out=out)


def _kernel_table() -> dict[type, Any]:
    table: dict[type, Any] = {
        ew.Add: _ufunc_kernel(np.add), ew.Subtract: _ufunc_kernel(np.subtract),
        ew.Multiply: _ufunc_kernel(np.multiply), ew.Maximum: _ufunc_kernel(np.maximum),
        ew.Minimum: _ufunc_kernel(np.minimum), ew.Negative: _ufunc_kernel(np.negative),
        ew.Exp: _ufunc_kernel(np.exp), ew.Log: _ufunc_kernel(np.log), ew.Log1p: _ufunc_kernel(np.log1p),
        ew.Sqrt: _ufunc_kernel(np.sqrt), ew.Square: _ufunc_kernel(np.square),
        ew.Abs: _ufunc_kernel(np.abs), ew.Sign: _ufunc_kernel(np.sign), ew.Tanh: _ufunc_kernel(np.tanh),
        ew.Sin: _ufunc_kernel(np.sin), ew.Cos: _ufunc_kernel(np.cos),
        ew.Greater: _ufunc_kernel(np.greater), ew.GreaterEqual: _ufunc_kernel(np.greater_equal),
        ew.Less: _ufunc_kernel(np.less), ew.LessEqual: _ufunc_kernel(np.less_equal),
        ew.Equal: _ufunc_kernel(np.equal), ew.NotEqual: _ufunc_kernel(np.not_equal),
        ew.Where: _where_kernel, ew.Cast: _cast_kernel,
    }
    from ..ops.activations import Relu

    table[Relu] = _relu_kernel
    return table


_KERNELS = _kernel_table()
_FLOAT_ONLY = {ew.Divide: np.divide, ew.Power: np.power}


@dataclasses.dataclass(frozen=True)
class Instr:
    """One step of a fused kernel: ``op`` applied to earlier slots; its result's dtype."""

    op: Op
    args: tuple[int, ...]
    dtype: str


@dataclasses.dataclass(frozen=True)
class FusedElementwise(Op):
    """A chain of elementwise ops (optionally ending in a full ``sum``) run block by block.

    Slots ``0..n_inputs-1`` are the inputs; instruction ``k`` writes slot ``n_inputs + k``.
    The kernel walks the output in blocks of :data:`BLOCK` elements along axis 0 and runs
    every instruction with ``out=`` into a block-sized scratch buffer, so intermediates stay
    in cache and no full-size temporary is allocated. ``absorbed`` names the fused ops (for
    rendering: "fused: multiply, add, tanh"); the node's provenance is the union of theirs.
    """

    name: ClassVar[str] = "fused_elementwise"
    elementwise: ClassVar[bool] = False
    n_inputs: int
    program: tuple[Instr, ...]
    out_shape: tuple[int | None, ...]
    reduce_sum: bool = False
    absorbed: tuple[str, ...] = ()
    absorbed_nodes: tuple[Node, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_last", _last_uses(self.program, self.n_inputs))

    def infer(self, *types: TensorType) -> TensorType:
        if len(types) != self.n_inputs:
            raise shape_error(f"expects {self.n_inputs} inputs, got {len(types)}")
        try:  # propagate the operands' (runtime) dims; unknown dims of out_shape take theirs
            shape = broadcast_shapes(self.out_shape, *(t.shape for t in types))
        except ValueError as e:
            raise shape_error(f"inputs do not broadcast to {self.out_shape}: {e}") from None
        dt = np.dtype(self.program[-1].dtype)
        return TensorType((), dt) if self.reduce_sum else TensorType(shape, dt)

    def describe_fused(self) -> str:
        return "fused: " + ", ".join(self.absorbed)

    def emit(self, inputs: Sequence[Node]) -> Node:
        """Re-build the absorbed sub-graph over ``inputs`` (un-fusing)."""
        from ..ops.reduce import sum as reduce_sum

        slots = list(inputs)
        for ins in self.program:
            slots.append(apply(ins.op, *(slots[a] for a in ins.args)))
        out = slots[-1]
        return reduce_sum(out) if self.reduce_sum else out

    def vjp(self, node, g):
        return _unfuse_vjp(node, g, self.emit)

    def compute(self, *xs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        prog = self.program
        shape = np.broadcast_shapes(*(x.shape for x in xs), tuple(1 if d is None else d for d in self.out_shape))
        final_dt = np.dtype(prog[-1].dtype)
        with np.errstate(all="ignore"):
            if not shape or shape[0] <= 1:  # nothing to chunk: run the ops as NumPy would
                slots = list(xs)
                for ins in prog:
                    slots.append(np.asarray(ins.op.compute(*(slots[a] for a in ins.args))))
                res = np.asarray(slots[-1], final_dt)
                if self.reduce_sum:
                    return _into(out, np.asarray(np.add.reduce(res, axis=None), final_dt))
                res = np.broadcast_to(res, shape)
                if out is None:
                    return np.array(res)
                out[...] = res
                return out
            return self._chunked(xs, shape, final_dt, out)

    def _chunked(self, xs, shape, final_dt, out):
        rows = shape[0]
        row_size = int(np.prod(shape[1:], dtype=np.int64))
        step = max(1, BLOCK // max(row_size, 1))
        sliced = tuple(x.ndim == len(shape) and x.shape[0] == rows for x in xs)
        hoisted, steps, buf_dtypes = self._plan(sliced)
        block = (min(step, rows),) + tuple(shape[1:])
        bufs = [np.empty(block, dt) for dt in buf_dtypes]
        # values that are the same for every block (scalars, biases) are computed once
        fixed = list(xs)
        for op, args in hoisted:
            a = [fixed[i] for i in args]
            fixed.append(a[0] if isinstance(op, BroadcastTo) else np.asarray(op.compute(*a)))
        reduce_sum = self.reduce_sum
        if reduce_sum:
            total = np.zeros((), np.float64 if final_dt.kind == "f" else final_dt)
        elif out is None:
            out = np.empty(shape, final_dt)
        last = steps[-1][2]
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            vals = [v[r0:r1] if s else v for v, s in zip(fixed, sliced)] + fixed[len(xs):]
            vals.extend(bufs if r1 - r0 == block[0] else [b[: r1 - r0] for b in bufs])
            for fn, args, o in steps:
                fn(vals[o], *[vals[a] for a in args])
            res = vals[last]
            if reduce_sum:
                total += np.add.reduce(res, axis=None)
            else:
                np.copyto(out[r0:r1], res, casting="unsafe")
        if reduce_sum:
            return _into(out, np.asarray(total, final_dt))
        return out

    def _plan(self, sliced: tuple[bool, ...]):
        """Per slicing pattern: instructions reading only block-invariant values are
        hoisted out of the loop; the rest write scratch buffers, each freed after its
        value's last use (inputs are never overwritten). Cached on the op."""
        cache = self.__dict__.setdefault("_plans", {})
        plan = cache.get(sliced)
        if plan is not None:
            return plan
        n = self.n_inputs
        prog = self.program
        invariant = [not s for s in sliced]
        for k, ins in enumerate(prog):
            invariant.append(k < len(prog) - 1 and all(invariant[a] for a in ins.args))
        hoisted = []
        where: dict[int, int] = {}  # program slot -> index into the per-block value list
        for a in range(n):
            where[a] = a
        for k, ins in enumerate(prog):
            if invariant[n + k]:
                where[n + k] = n + len(hoisted)
                hoisted.append((ins.op, tuple(where[a] for a in ins.args)))
        base = n + len(hoisted)
        last = self._last
        free: dict[str, list[int]] = {}
        buf_dtypes: list[str] = []
        steps = []
        for k, ins in enumerate(prog):
            if invariant[n + k]:
                continue
            pool = free.get(ins.dtype)
            if pool:
                b = pool.pop()
            else:
                b = len(buf_dtypes)
                buf_dtypes.append(ins.dtype)
            args = tuple(where[a] for a in ins.args)
            where[n + k] = base + b
            steps.append((_kernel(ins.op), args, base + b))
            for a in set(ins.args):
                if a >= n and not invariant[a] and last.get(a) == k:
                    free.setdefault(prog[a - n].dtype, []).append(where[a] - base)
        plan = (hoisted, steps, buf_dtypes)
        cache[sliced] = plan
        return plan


def _into(out: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    """Honour a caller's preallocated ``out`` buffer (the executor passes one)."""
    if out is None:
        return value
    out[...] = value
    return out


def _last_uses(program: tuple[Instr, ...], n: int) -> dict[int, int]:
    last: dict[int, int] = {}
    for k, ins in enumerate(program):
        for a in ins.args:
            last[a] = k
    return last


def _kernel(op: Op):
    """An ``fn(out, *args)`` computing ``op`` into ``out`` (a ufunc with ``out=`` if we know one)."""
    from ..ops.activations import Gelu

    if isinstance(op, Gelu) and op.approximate == "tanh":
        return lambda out, x: _gelu_tanh_kernel(out, x) if out.dtype.kind == "f" else np.copyto(out, op.compute(x))
    kern = _KERNELS.get(type(op))
    if kern is not None:
        return kern
    uf = _FLOAT_ONLY.get(type(op))
    if uf is not None:
        return lambda out, *xs: uf(*xs, out=out) if out.dtype.kind == "f" else np.copyto(out, op.compute(*xs), casting="unsafe")
    if isinstance(op, BroadcastTo):
        return lambda out, x, *like: np.copyto(out, x, casting="unsafe")

    def generic(out, *xs):
        out[...] = op.compute(*xs)

    return generic


@dataclasses.dataclass(frozen=True)
class MatMulBiasAct(Op):
    """``act(a @ w + bias)``: the matmul writes its result buffer, bias and activation are
    applied in place (``activation`` is an op or ``None``)."""

    name: ClassVar[str] = "matmul_bias_act"
    activation: Op | None = None
    absorbed: tuple[str, ...] = ()

    def _emit(self, inputs: Sequence[Node]) -> Node:
        from ..ops.linalg import matmul

        a, w, b = inputs
        z = ew.add(matmul(a, w), b)
        return apply(self.activation, z) if self.activation is not None else z

    def infer(self, a: TensorType, w: TensorType, b: TensorType) -> TensorType:
        from ..ops.linalg import MatMul

        z = ew.Add().infer(MatMul().infer(a, w), b)
        return self.activation.infer(z) if self.activation is not None else z

    def compute(self, a, w, b, out=None):
        z = np.matmul(a, w, out=out) if out is not None else np.matmul(a, w)
        if z.dtype != np.result_type(z, b) or z.shape != np.broadcast_shapes(z.shape, b.shape):
            z = z + b
        else:
            np.add(z, b, out=z)
        if self.activation is None:
            return z
        kern = _KERNELS.get(type(self.activation))
        if kern is not None:
            kern(z, z)
            return z
        return _into(out, self.activation.compute(z))

    def vjp(self, node, g):
        return _unfuse_vjp(node, g, self._emit)


@dataclasses.dataclass(frozen=True)
class LogSumExp(Op):
    """``log(sum(exp(x), axis, keepdims))`` computed as ``m + log(sum(exp(x - m)))`` with
    ``m = max(x)``: finite for logits of any size. Its gradient ``g * softmax(x)`` reads
    the output, so it never overflows either."""

    name: ClassVar[str] = "logsumexp"
    axis: tuple[int, ...]
    keepdims: bool = False

    def infer(self, x: TensorType) -> TensorType:
        from ..ops.reduce import Sum

        return Sum(self.axis, self.keepdims).infer(x)

    def compute(self, x):
        m = np.max(x, axis=self.axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        with np.errstate(under="ignore"):
            s = np.sum(np.exp(x - m), axis=self.axis, keepdims=True)
        out = np.log(s) + m
        return out if self.keepdims else np.squeeze(out, self.axis)

    def vjp(self, node, g):
        from ..ops.reduce import expand_to_input

        x = node.inputs[0]
        y = node if self.keepdims else expand_to_input(node, x, self.axis, False)
        gk = expand_to_input(g, x, self.axis, self.keepdims)
        return (gk * ew.exp(ew.subtract(x, y)),)


@dataclasses.dataclass(frozen=True)
class SoftmaxCrossEntropy(Op):
    """``-sum(t * log_softmax(x), axis)`` for probability targets ``t``, as
    ``logsumexp(x) * sum(t) - sum(t * x)``. Gradient wrt ``x``: ``softmax(x) * sum(t) - t``
    (``softmax - one_hot`` for one-hot rows), finite for any logits."""

    name: ClassVar[str] = "softmax_cross_entropy_fused"
    axis: int = -1

    def infer(self, x: TensorType, t: TensorType) -> TensorType:
        from ..ops.reduce import Sum

        z = ew.Multiply().infer(x, t)
        if z.shape != x.shape:
            raise shape_error("targets must broadcast to the logits' shape")
        return Sum((self.axis % x.ndim,), False).infer(z)

    def compute(self, x, t):
        ax = self.axis
        lse = LogSumExp((ax % x.ndim,), True).compute(x)
        with np.errstate(invalid="ignore"):
            tx = np.where(t == 0, 0, t * x)  # 0 * (-inf) logits contribute nothing
        out = np.sum(t * lse, axis=ax) - np.sum(tx, axis=ax)
        return out.astype(np.result_type(x, t), copy=False)

    def vjp(self, node, g):
        from ..ops.reduce import sum as reduce_sum

        x, t = node.inputs
        ax = self.axis % x.ndim
        lse = apply(LogSumExp((ax,), True), x)
        p = ew.exp(ew.subtract(x, lse))
        ge = apply(sh_expand(ax), g)
        gx = ge * (p * reduce_sum(t, axis=ax, keepdims=True) - t)
        gt = ge * (lse - x) if t.dtype.kind == "f" else None
        return gx, gt


def sh_expand(axis: int):
    from ..ops.shape import ExpandDims

    return ExpandDims(axis)
