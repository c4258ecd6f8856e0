"""The benchmark workloads as graphbp programs (W1-W5 of docs/performance.md).

Each ``make_*`` returns ``(step, feeds)``: ``step(*feeds)`` runs one full training step
(forward, loss, backward, SGD update of the parameters in place) and returns the loss.
Data and initial parameters come from :func:`data`, shared with the reference versions in
``handwritten.py`` and ``peers.py`` so every implementation does the same arithmetic.
"""

from __future__ import annotations

import numpy as np

import graphbp as gb

LR = 0.01
W4_SIZE = 4_000_000
GELU_K = float(np.sqrt(2.0 / np.pi))

# name -> (layer sizes, activation, loss, batch)
MLPS = {
    "W1": ((64, 128, 128, 10), "relu", "softmax_ce", 128),
    "W2": ((784, 512, 512, 10), "relu", "softmax_ce", 256),
    "W3": ((32,) * 33, "tanh", "mse", 16),
}


def data(name: str, seed: int = 0) -> dict:
    """Float32 parameters (Glorot-scaled), a batch of inputs and targets."""
    sizes, act, loss, batch = MLPS[name]
    rng = np.random.default_rng(seed)
    Ws = [(rng.standard_normal((a, b)) * np.sqrt(1.0 / a)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
    bs = [np.zeros(b, np.float32) for b in sizes[1:]]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    if loss == "softmax_ce":
        t = rng.integers(0, sizes[-1], batch).astype(np.int64)
    else:
        t = rng.standard_normal((batch, sizes[-1])).astype(np.float32)
    return {"Ws": Ws, "bs": bs, "x": x, "t": t, "act": act, "loss": loss}


def mlp_graph(name: str, d: dict):
    """Inputs, parameters and loss node of an MLP workload, written as a user would."""
    x = gb.input("x", (None, d["x"].shape[1]))
    if d["loss"] == "softmax_ce":
        t = gb.input("t", (None,), dtype="int64")
    else:
        t = gb.input("t", (None, d["t"].shape[1]))
    params = []
    h = x
    n = len(d["Ws"])
    for i, (W, b) in enumerate(zip(d["Ws"], d["bs"])):
        Wn, bn = gb.param(f"W{i + 1}", W), gb.param(f"b{i + 1}", b)
        params += [Wn, bn]
        h = h @ Wn + bn
        if i < n - 1:
            h = gb.relu(h) if d["act"] == "relu" else gb.tanh(h)
    if d["loss"] == "softmax_ce":
        loss = gb.mean(gb.softmax_cross_entropy(h, t))
    else:
        loss = gb.mean(gb.square(h - t))
    return x, t, params, loss


def make_mlp(name: str, *, check_numerics: bool = False, seed: int = 0):
    d = data(name, seed)
    x, t, params, loss = mlp_graph(name, d)
    grads = gb.grad(loss, params)
    step = gb.compile([x, t], [loss], updates={p: p - LR * g for p, g in zip(params, grads)},
                      check_numerics=check_numerics)
    return step, (d["x"], d["t"])


def w4_data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(W4_SIZE).astype(np.float32), "a": np.float32(1.3), "b": np.float32(0.1),
            "c": np.float32(0.7)}


def make_w4(seed: int = 0):
    """``y = sum(gelu_tanh(x * a + b) * c)``; outputs the value and the gradient wrt ``x``."""
    d = w4_data(seed)
    x = gb.input("x", (None,))
    a, b, c = gb.param("a", d["a"]), gb.param("b", d["b"]), gb.param("c", d["c"])
    y = gb.sum(gb.gelu(x * a + b, approximate="tanh") * c)
    gx = gb.grad(y, x)
    return gb.compile([x], [y, gx]), (d["x"],)


def make_chain(kind: str, seed: int = 0):
    """W4 variants written from primitive ops, value and gradient wrt ``x`` over 4M floats:
    ``gelu`` (W4's formula spelled out), ``silu`` (``u * sigmoid(u)``) and ``softplus``
    (a logistic loss, ``softplus(u) - t * u`` with 0/1 targets ``t``), ``u = x * a + b``."""
    d = w4_data(seed)
    x = gb.input("x", (None,))
    a, b, c = gb.param("a", d["a"]), gb.param("b", d["b"]), gb.param("c", d["c"])
    u = x * a + b
    feeds = [x]
    if kind == "gelu":
        y = gb.sum(0.5 * u * (1 + gb.tanh(GELU_K * (u + 0.044715 * u * u * u))) * c)
    elif kind == "silu":
        y = gb.sum(u * gb.sigmoid(u) * c)
    else:
        t = gb.input("t", (None,))
        feeds.append(t)
        y = gb.sum(gb.softplus(u) - t * u)
    gx = gb.grad(y, x)
    arrays = (d["x"],) if kind != "softplus" else (d["x"], w4_targets(seed))
    return gb.compile(feeds, [y, gx]), arrays


def w4_targets(seed: int = 0):
    return (np.random.default_rng(seed + 1).random(W4_SIZE) < 0.5).astype(np.float32)


def deep_chain(layers: int, width: int = 32, seed: int = 0):
    """The W3 model with ``layers`` layers: the loss graph and its SGD updates (W5)."""
    rng = np.random.default_rng(seed)
    x = gb.input("x", (None, width))
    t = gb.input("t", (None, width))
    h = x
    params = []
    for i in range(layers):
        W = gb.param(f"W{i}", (rng.standard_normal((width, width)) * np.sqrt(1.0 / width)).astype(np.float32))
        b = gb.param(f"b{i}", np.zeros(width, np.float32))
        params += [W, b]
        h = h @ W + b
        if i < layers - 1:
            h = gb.tanh(h)
    loss = gb.mean(gb.square(h - t))
    return x, t, params, loss


def compile_deep(layers: int, width: int = 32) -> "gb.Program":
    """Build, differentiate and compile the ``layers``-deep model (what W5 times)."""
    x, t, params, loss = deep_chain(layers, width)
    grads = gb.grad(loss, params)
    return gb.compile([x, t], [loss], updates={p: p - LR * g for p, g in zip(params, grads)})
