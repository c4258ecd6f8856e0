"""A graph touching every registered op (forward, first and second order gradients, an
optimizer step), used by the graph-file tests. ``missing_ops`` tells which op classes of
``OP_CLASSES`` it does not reach, so a new op without an entry here fails a test."""

from __future__ import annotations

import numpy as np

import graphbp as gb
from graphbp.ops import OP_CLASSES, AddN, ConvBiasAct, MatMulBiasAct, SoftmaxCrossEntropyProbs, TupleGet
from graphbp.ops.base import apply


def build(seed: int = 0):
    """Return ``(program, feeds)``: a training step over a model using every op."""
    rng = np.random.default_rng(seed)
    x = gb.input("x", (None, 4))
    t = gb.input("t", (None,), dtype="int64")
    key = gb.input("key", (), dtype="int64")
    W = gb.param("W", rng.normal(size=(4, 3)).astype(np.float32))
    b = gb.param("b", np.linspace(-1, 1, 3, dtype=np.float32))
    v = gb.param("v", rng.uniform(0.5, 2.0, size=(3,)).astype(np.float32))
    kc = gb.param("kc", rng.normal(size=(2, 1, 1, 2)).astype(np.float32))
    with gb.scope("layer1"):
        h = x @ W + b
        h = gb.dropout(h, 0.25, key)
        acts = [gb.relu(h), gb.leaky_relu(h, 0.1), gb.elu(h, 0.5), gb.gelu(h, "tanh"),
                gb.gelu(h, "none"), gb.sigmoid(h), gb.softplus(h), gb.tanh(h), gb.erf(h)]
    with gb.scope("mix"):
        z = acts[0]
        for a in acts[1:]:
            z = z + a
        pos = gb.exp(h) + 1.0
        u = (gb.log(pos) + gb.log1p(pos) + gb.sqrt(pos) + gb.reciprocal(pos) + gb.square(h)
             + gb.abs(h) * gb.sign(h) + gb.sin(h) * gb.cos(h) - gb.negative(h) / pos + pos ** v)
        u = gb.maximum(u, z) + gb.minimum(u, z) + gb.where(gb.greater(h, 0.0), u, z)
        cmp = (gb.greater_equal(h, 0.0), gb.less(h, 1.0), gb.less_equal(h, 2.0),
               gb.equal(h, 0.5), gb.not_equal(h, 0.25))
        for c in cmp:
            u = u + gb.cast(c, "float32")
        u = gb.clip(u, -5.0, 5.0)
    with gb.scope("shape"):
        r = gb.reshape(u, (-1,))
        r = gb.reshape_like(r, u)
        tr = gb.transpose(gb.expand_dims(r, 0), (1, 0, 2))
        sq = gb.squeeze(tr, 1)
        parts = gb.split(sq, [1], axis=1)
        cat = gb.concatenate([parts[1], parts[0]], axis=1)
        st = gb.stack([cat, sq], axis=0)
        sl = st[0, :, 1:]
        tk = gb.take(sq, np.array([2, 0]), axis=1)
        bt = gb.broadcast_to(gb.sum(cat, axis=0, keepdims=True), (2, 3))
        oh = gb.one_hot(t, 3)
    with gb.scope("heads"):
        logits = cat * gb.softmax(sq) + gb.log_softmax(sq, axis=1)
        ce = gb.mean(gb.softmax_cross_entropy(logits, t))
        bce = gb.mean(gb.sigmoid_binary_cross_entropy(sq, oh))
        red = (gb.mean(gb.max(sq, axis=1)) + gb.mean(gb.min(sq, axis=0)) + gb.mean(gb.prod(gb.tanh(sq), axis=1))
               + gb.logsumexp(sl) + gb.mean(gb.concatenate([sq, sq * 2.0], axis=0)) + gb.var(tk) + gb.sum(bt) * 1e-3 + gb.mse(sq, oh))
        c0, c1 = gb.cond(gb.greater(gb.sum(sq), 0.0), lambda a: (a * v, gb.tanh(a)),  # v is captured
                         lambda a: (a + 1.0, a * a), sq)
        h_end, hs = gb.scan(lambda h, r: (gb.tanh(h * v + r), h * r), sq[0], sq)  # a loop over sq's rows
        # the ops passes make, as a rewritten program holds them
        fused = apply(MatMulBiasAct("tanh", ("matmul", "add", "tanh")), x, W, b)
        ce_p = apply(SoftmaxCrossEntropyProbs(1), logits, t)
        ce = ce + 0.1 * gb.mean(apply(TupleGet(0), ce_p)) + gb.mean(gb.square(apply(TupleGet(1), ce_p)))
    with gb.scope("image"):
        img = gb.reshape(u, (-1, 1, 1, 3))
        c = gb.conv2d(img, kc, padding=(0, 1))
        pools = gb.mean(gb.square(gb.max_pool2d(c, (1, 2)))) + gb.mean(gb.avg_pool2d(c, (1, 2), padding=(0, 1)))
        pools = pools + gb.mean(gb.conv_transpose2d(c, kc, stride=2))
        cba = apply(ConvBiasAct.of(c.op, "relu", ("conv2d", "add", "relu")), img, kc, gb.reshape(gb.sum(kc, axis=(1, 2, 3)), (-1, 1, 1)))
        pools = pools + gb.mean(cba)
    with gb.scope("heads"):
        loss = ce + bce + red + gb.mean(apply(AddN(3), fused, sq, sq * 0.5)) + pools + gb.mean(c0 * c1) + gb.mean(hs) + gb.sum(h_end)
    (gv,) = gb.grad(loss, [v])
    hvp = gb.grad(gb.sum(gv * gv), W)  # second order: differentiates gradient nodes
    opt = gb.optim.SGD(0.01, momentum=0.9)
    dp = gb.distributed.data_parallel(opt, gb.distributed.single_process())
    ups = dp.updates(loss + 1e-3 * gb.sum(hvp * hvp), [W, b, v, kc])
    full = gb.zeros_like(x) + gb.full_like(W, 2.0).sum()
    gv_mean = gb.distributed.allreduce_mean(gv, gb.distributed.single_process(), overlap=True)  # start/wait pair
    step = gb.compile([x, t, key], [loss, gv_mean, hvp, full], updates=ups, optimize=False)
    feeds = (rng.normal(size=(5, 4)).astype(np.float32), rng.integers(0, 3, size=5), np.int64(7))
    return step, feeds


def reached_ops(program) -> set[type]:
    from graphbp.io.format import _closure

    roots = list(program.user_outputs) + [n for pair in program.updates for n in pair]
    return {type(n.op) for n in _closure(roots)}


def missing_ops(program) -> list[str]:
    reached = reached_ops(program)
    return sorted(cls.__name__ for cls in OP_CLASSES if cls not in reached)


__all__ = ["build", "missing_ops", "reached_ops", "apply"]
