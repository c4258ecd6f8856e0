"""W6 cnn-mnist: one float32 SGD step of a small CNN, in graphbp and its references.

x (64, 1, 28, 28); conv 3x3 1->16 pad 1 + bias, relu, max-pool 2; conv 3x3 16->32 pad 1 + bias,
relu, max-pool 2; flatten; dense 1568->10 + bias; mean softmax cross-entropy; SGD lr 0.01.

Each ``make_*`` returns ``(step, feeds)`` like ``workloads.make_mlp``. The references: a
hand-written NumPy step (im2col with one strided copy per convolution, preallocated buffers),
PyTorch eager and JAX jit when installed. ``python benchmarks/cnn.py probe IMPL`` prints, for a
fresh process, the seconds from building to the end of the first step and the peak RSS above
the imports.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

LR = 0.01
BATCH = 64


def w6_data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "w1": he((16, 1, 3, 3), 9), "b1": np.zeros(16, np.float32),
        "w2": he((32, 16, 3, 3), 144), "b2": np.zeros(32, np.float32),
        "w3": he((1568, 10), 1568), "b3": np.zeros(10, np.float32),
        "x": rng.random((BATCH, 1, 28, 28), dtype=np.float32),
        "t": rng.integers(0, 10, BATCH).astype(np.int64),
    }


# ------------------------------------------------------------------------- graphbp
def w6_graph(seed: int = 0):
    """W6's graph: ``(inputs, loss, params, feeds)`` (benchmarks/memory.py compiles it per remat mode)."""
    import graphbp as gb

    d = w6_data(seed)
    x = gb.input("x", (None, 1, 28, 28))
    t = gb.input("t", (None,), dtype="int64")
    p = {k: gb.param(k, d[k]) for k in ("w1", "b1", "w2", "b2", "w3", "b3")}
    with gb.scope("conv1"):
        h = gb.max_pool2d(gb.relu(gb.conv2d(x, p["w1"], p["b1"], padding=1)), 2)
    with gb.scope("conv2"):
        h = gb.max_pool2d(gb.relu(gb.conv2d(h, p["w2"], p["b2"], padding=1)), 2)
    with gb.scope("dense"):
        logits = gb.flatten(h) @ p["w3"] + p["b3"]
    loss = gb.mean(gb.softmax_cross_entropy(logits, t))
    return [x, t], loss, list(p.values()), (d["x"], d["t"])


def make_graphbp(seed: int = 0):
    import graphbp as gb

    inputs, loss, params, feeds = w6_graph(seed)
    grads = gb.grad(loss, params)
    step = gb.compile(inputs, [loss], updates={q: q - LR * g for q, g in zip(params, grads)})
    return step, feeds


# ------------------------------------------------------------------------- hand-written NumPy
class _Conv:
    """3x3 pad-1 convolution + bias + relu + 2x2 max-pool in NHWC, with its backward."""

    def __init__(self, n: int, h: int, c: int, co: int):
        self.n, self.h, self.c, self.co = n, h, c, co
        self.xp = np.zeros((n, h + 2, h + 2, c), np.float32)  # padded input, NHWC
        self.cols = np.empty((n, h, h, 3, 3, c), np.float32)
        self.z = np.empty((n * h * h, co), np.float32)
        self.pooled = np.empty((n, h // 2, h // 2, co), np.float32)
        self.dxp = np.zeros_like(self.xp)
        self.dz = np.empty_like(self.z)

    def forward(self, x_nhwc: np.ndarray, w2d: np.ndarray, b: np.ndarray) -> np.ndarray:
        n, h, c = self.n, self.h, self.c
        self.xp[:, 1:-1, 1:-1] = x_nhwc
        s = self.xp.strides
        view = as_strided(self.xp, (n, h, h, 3, 3, c), (s[0], s[1], s[2], s[1], s[2], s[3]))
        np.copyto(self.cols, view)  # the one strided copy
        np.dot(self.cols.reshape(n * h * h, 9 * c), w2d.T, self.z)
        self.z += b
        np.maximum(self.z, 0, out=self.z)
        zz = self.z.reshape(n, h // 2, 2, h // 2, 2, self.co)
        np.max(zz, axis=(2, 4), out=self.pooled)
        self.mask = zz == self.pooled[:, :, None, :, None]
        return self.pooled

    def backward(self, dpooled: np.ndarray, w2d: np.ndarray, need_dx: bool):
        n, h, c = self.n, self.h, self.c
        dz = self.dz.reshape(n, h // 2, 2, h // 2, 2, self.co)
        np.multiply(self.mask, dpooled[:, :, None, :, None], dz)  # through pool and relu (z > 0 where hit)
        dz *= self.z.reshape(dz.shape) > 0
        dw = self.dz.T @ self.cols.reshape(n * h * h, 9 * c)
        db = self.dz.sum(0)
        if not need_dx:
            return dw, db, None
        dcols = (self.dz @ w2d).reshape(n, h, h, 3, 3, c)
        self.dxp.fill(0)
        for i in range(3):
            for j in range(3):
                self.dxp[:, i: i + h, j: j + h] += dcols[:, :, :, i, j]
        return dw, db, self.dxp[:, 1:-1, 1:-1]


def make_handwritten(seed: int = 0):
    d = w6_data(seed)
    # Weights in the matmul layout of NHWC im2col: (C_out, kH * kW * C_in).
    w1 = np.ascontiguousarray(d["w1"].transpose(0, 2, 3, 1).reshape(16, 9))
    w2 = np.ascontiguousarray(d["w2"].transpose(0, 2, 3, 1).reshape(32, 144))
    w3, b1, b2, b3 = d["w3"].copy(), d["b1"].copy(), d["b2"].copy(), d["b3"].copy()
    n = BATCH
    c1, c2 = _Conv(n, 28, 1, 16), _Conv(n, 14, 16, 32)
    rows = np.arange(n)

    def step(x, t):
        p1 = c1.forward(x.transpose(0, 2, 3, 1), w1, b1)
        p2 = c2.forward(p1, w2, b2)
        flat = p2.transpose(0, 3, 1, 2).reshape(n, 1568)  # PyTorch's (C, H, W) flatten order
        logits = flat @ w3 + b3
        m = logits.max(1, keepdims=True)
        e = np.exp(logits - m)
        s = e.sum(1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - logits[rows, t]))
        dlog = e / s
        dlog[rows, t] -= 1.0
        dlog *= np.float32(1.0 / n)
        dw3, db3 = flat.T @ dlog, dlog.sum(0)
        dp2 = (dlog @ w3.T).reshape(n, 32, 7, 7).transpose(0, 2, 3, 1)
        dw2, db2, dp1 = c2.backward(dp2, w2, True)
        dw1, db1, _ = c1.backward(dp1, w1, False)
        for p, g in ((w1, dw1), (b1, db1), (w2, dw2), (b2, db2), (w3, dw3), (b3, db3)):
            p -= np.float32(LR) * g
        return loss

    return step, (d["x"], d["t"])


# ------------------------------------------------------------------------- peers
def make_torch(seed: int = 0):
    import torch

    torch.set_num_threads(1)
    F = torch.nn.functional
    d = w6_data(seed)
    ps = {k: torch.tensor(d[k], requires_grad=True) for k in ("w1", "b1", "w2", "b2", "w3", "b3")}
    x, t = torch.from_numpy(d["x"]), torch.from_numpy(d["t"])

    def step(x, t):
        h = F.max_pool2d(F.relu(F.conv2d(x, ps["w1"], ps["b1"], padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, ps["w2"], ps["b2"], padding=1)), 2)
        loss = F.cross_entropy(h.flatten(1) @ ps["w3"] + ps["b3"], t)
        for p in ps.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in ps.values():
                p.sub_(LR * p.grad)
        return loss.item()

    return step, (x, t)


def make_jax(seed: int = 0):
    import jax
    import jax.numpy as jnp

    d = w6_data(seed)
    params = {k: jnp.asarray(d[k]) for k in ("w1", "b1", "w2", "b2", "w3", "b3")}

    def block(h, w, b):
        h = jax.lax.conv_general_dilated(h, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = jax.nn.relu(h + b[None, :, None, None])
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def loss_fn(p, x, t):
        h = block(block(x, p["w1"], p["b1"]), p["w2"], p["b2"])
        logits = h.reshape(h.shape[0], -1) @ p["w3"] + p["b3"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), t[:, None], 1))

    @jax.jit
    def update(p, x, t):
        loss, g = jax.value_and_grad(loss_fn)(p, x, t)
        return loss, jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)

    state = {"p": params}
    x, t = jnp.asarray(d["x"]), jnp.asarray(d["t"])

    def step(x, t):
        loss, state["p"] = update(state["p"], x, t)
        return float(loss)

    return step, (x, t)


MAKERS = {"graphbp": make_graphbp, "numpy-hand": make_handwritten, "pytorch-eager": make_torch, "jax-jit": make_jax}


def load_impls(peers_on: bool = True) -> dict:
    impls = {"graphbp": make_graphbp(), "numpy-hand": make_handwritten()}
    if peers_on:
        for name in ("pytorch-eager", "jax-jit"):
            try:
                impls[name] = MAKERS[name]()
            except ImportError:
                pass
    return impls


# ------------------------------------------------------------------------- first call and memory
def _status(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) in bytes. Unlike ``ru_maxrss``, the peak starts
    afresh at ``exec``, so the parent's size at fork does not leak into it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def probe(impl: str) -> dict:
    """Seconds from building to the end of the first step, and peak RSS above the imports."""
    if impl == "graphbp":
        import graphbp  # noqa: F401
    elif impl in ("pytorch-eager", "jax-jit"):
        __import__(impl.split("-")[0].replace("pytorch", "torch"))
    base = _status("VmRSS")
    t0 = time.perf_counter()
    step, feeds = MAKERS[impl]()
    step(*feeds)
    first = time.perf_counter() - t0
    for _ in range(4):
        step(*feeds)
    peak = _status("VmHWM")
    return {"impl": impl, "first_call": first, "peak_rss": max(peak - base, 0)}


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[2])))
