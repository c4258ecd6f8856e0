"""Hand-written NumPy backprop: the reference every workload's ratio is measured against.

Explicit formulas, buffers preallocated once, NumPy calls with ``out=``: what a careful
person writes by hand for one fixed model. Same data, same arithmetic (float32) as the
graphbp programs in ``workloads.py``.
"""

from __future__ import annotations

import numpy as np

from workloads import GELU_K, LR, data, w4_data, w4_targets


def make_mlp(name: str, seed: int = 0):
    """One SGD step of an MLP workload; returns ``(step, feeds)``, ``step`` returns the loss."""
    d = data(name, seed)
    Ws = [w.copy() for w in d["Ws"]]
    bs = [b.copy() for b in d["bs"]]
    x, t = d["x"], d["t"]
    B = x.shape[0]
    n = len(Ws)
    relu = d["act"] == "relu"
    hs = [np.empty((B, W.shape[1]), np.float32) for W in Ws]  # activations (last: logits)
    ds = [np.empty((B, W.shape[1]), np.float32) for W in Ws]  # gradients wrt pre-activations
    gWs = [np.empty_like(W) for W in Ws]
    gbs = [np.empty_like(b) for b in bs]
    rows = np.arange(B)
    col = np.empty((B, 1), np.float32)
    mask = [np.empty((B, W.shape[1]), bool) for W in Ws]

    def step(x, t):
        h = x
        for i in range(n):
            z = hs[i]
            np.dot(h, Ws[i], z)
            np.add(z, bs[i], z)
            if i < n - 1:
                if relu:
                    np.maximum(z, 0, out=z)
                else:
                    np.tanh(z, z)
            h = z
        d = ds[-1]
        if d_loss_is_ce:
            # softmax cross-entropy, stable: subtract the row max
            np.maximum.reduce(h, 1, None, col, True)
            np.subtract(h, col, d)
            np.exp(d, d)
            np.add.reduce(d, 1, None, col, True)
            picked = h[rows, t] - np.log(col[:, 0]) - np.max(h, axis=1)  # log p[t]
            loss = -np.add.reduce(picked) / B
            np.divide(d, col, d)
            d[rows, t] -= 1.0
            np.multiply(d, 1.0 / B, d)
        else:
            np.subtract(h, t, d)
            loss = np.add.reduce(np.square(d), None) / d.size
            np.multiply(d, 2.0 / d.size, d)
        for i in range(n - 1, -1, -1):
            prev = x if i == 0 else hs[i - 1]
            np.dot(prev.T, ds[i], gWs[i])
            np.add.reduce(ds[i], 0, None, gbs[i])
            if i > 0:
                g = ds[i - 1]
                np.dot(ds[i], Ws[i].T, g)
                if relu:
                    np.greater(prev, 0, mask[i - 1])
                    np.multiply(g, mask[i - 1], g)
                else:
                    np.square(prev, hs[i - 1])  # prev (tanh output) is not needed after this
                    np.subtract(1.0, hs[i - 1], hs[i - 1])
                    np.multiply(g, hs[i - 1], g)
            np.multiply(gWs[i], LR, gWs[i])
            np.subtract(Ws[i], gWs[i], Ws[i])
            np.multiply(gbs[i], LR, gbs[i])
            np.subtract(bs[i], gbs[i], bs[i])
        return loss

    d_loss_is_ce = d["loss"] == "softmax_ce"
    return step, (x, t)


def make_w4(seed: int = 0):
    """Value and gradient of ``sum(gelu_tanh(x*a+b)*c)``, unfused NumPy with full-size buffers."""
    d = w4_data(seed)
    a, b, c = d["a"], d["b"], d["c"]
    n = d["x"].shape[0]
    u, s, th, tmp, yb = (np.empty(n, np.float32) for _ in range(5))
    C3 = np.float32(0.044715)
    K = np.float32(GELU_K)

    def step(x):
        np.multiply(x, a, u)
        np.add(u, b, u)                       # u = x*a + b
        np.multiply(u, u, s)                  # u^2
        np.multiply(s, C3, tmp)
        np.add(tmp, 1.0, tmp)
        np.multiply(tmp, u, tmp)
        np.multiply(tmp, K, tmp)              # k (u + 0.044715 u^3)
        np.tanh(tmp, th)
        np.add(th, 1.0, tmp)                  # 1 + tanh
        np.multiply(u, tmp, yb)
        value = np.add.reduce(yb, None) * np.float32(0.5) * c
        # d/du gelu = 0.5 (1 + t) + 0.5 u (1 - t^2) k (1 + 3 * 0.044715 u^2)
        np.multiply(s, 3 * C3, s)
        np.add(s, 1.0, s)
        np.multiply(s, K, s)
        np.multiply(s, u, s)
        np.multiply(th, th, th)
        np.subtract(1.0, th, th)
        np.multiply(s, th, s)
        np.add(s, tmp, s)
        gx = np.multiply(s, 0.5 * c * a)      # the returned gradient is a fresh array
        return value, gx

    return step, (d["x"],)


def make_chain(kind: str, seed: int = 0):
    """NumPy references for ``workloads.make_chain``: full-size preallocated buffers, the
    derivative written out by hand with the forward's values reused."""
    if kind == "gelu":
        return make_w4(seed)
    d = w4_data(seed)
    a, b, c = d["a"], d["b"], d["c"]
    n = d["x"].shape[0]
    u, s, tmp = (np.empty(n, np.float32) for _ in range(3))
    one = np.float32(1.0)

    def sigmoid(z, out):
        np.negative(z, out)
        np.exp(out, out)
        np.add(out, one, out)
        np.divide(one, out, out)

    if kind == "silu":
        def step(x):
            np.multiply(x, a, u)
            np.add(u, b, u)
            sigmoid(u, s)
            np.multiply(u, s, tmp)
            value = np.add.reduce(tmp, None) * c
            # d/du u s = s (1 + u (1 - s))
            np.subtract(one, s, tmp)
            np.multiply(tmp, u, tmp)
            np.add(tmp, one, tmp)
            np.multiply(tmp, s, tmp)
            return value, np.multiply(tmp, c * a)
        return step, (d["x"],)

    def step(x, t):  # sum(softplus(u) - t u); d/du = sigmoid(u) - t
        np.multiply(x, a, u)
        np.add(u, b, u)
        np.logaddexp(np.float32(0), u, tmp)
        value = np.add.reduce(tmp, None)
        np.multiply(t, u, tmp)
        value -= np.add.reduce(tmp, None)
        sigmoid(u, s)
        np.subtract(s, t, s)
        return value, np.multiply(s, a)
    return step, (d["x"], w4_targets(seed))
