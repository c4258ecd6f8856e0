"""Vanishing and exploding gradients, measured: gradient norm per layer and per time step.

Run: ``python examples/vanishing_gradients.py [out.svg]`` (default
``docs/vanishing_gradients.svg``). Prints two tables and writes a two-panel SVG figure
(drawn here by hand: no plotting library needed).

Left panel, depth: the norm of ``dL/dW_l`` for each layer ``l`` of a 20-layer, 64-wide MLP,
(a) sigmoid with the naive N(0, 0.1^2) initialisation, (b) ReLU with He initialisation
N(0, 2 / fan_in). Backpropagation multiplies the gradient by ``W_l^T diag(f'(z_l))`` once per
layer; sigmoid's slope is at most 1/4 and small weights shrink it further, so the first
layers' gradients are orders of magnitude below the last's. ReLU's slope is 1 where active
and He's variance keeps the product's scale near 1, so every layer learns.

Right panel, time: the norm of ``dL/dx_t`` for each of 100 steps of a tanh RNN and of an
LSTM (the same 32-wide state, PyTorch's initialisation), ``L`` a loss on the final state only.
Both are ``gb.scan`` loops and the gradients come from their reverse scans. In the RNN the
gradient reaching step ``t`` has been multiplied by ``W_hh^T diag(1 - h^2)`` ``T - t`` times
and shrinks geometrically; a tanh RNN whose ``W_hh`` is scaled up explodes instead (the third
curve), which is what clipping by global norm bounds. The LSTM's cell state is updated
additively, ``c' = f * c + i * g``, so its gradient is multiplied only by the forget gate
``f``: with the forget bias at 3 (gate about 0.95 open) it still carries signal from 100
steps back.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import graphbp as gb

DEPTH, WIDTH, BATCH = 20, 64, 128
STEPS, HIDDEN, INPUTS = 100, 32, 8


def model(activation: str = "sigmoid", seed: int = 0) -> SimpleNamespace:
    """The 20-layer, 64-wide MLP without biases: sigmoid with the naive N(0, 0.1^2) weights,
    or ReLU with He's N(0, 2 / fan_in); loss = mean squared error against ``y``."""
    rng = np.random.default_rng(seed)
    act = gb.sigmoid if activation == "sigmoid" else gb.relu
    x, y = gb.input("x", (None, WIDTH), "float64"), gb.input("y", (None, WIDTH), "float64")
    params = []
    h = x
    for layer in range(DEPTH):
        if activation == "sigmoid":
            w0 = rng.normal(0.0, 0.1, (WIDTH, WIDTH))  # naive: a small fixed scale
        else:
            w0 = gb.init.he_normal((WIDTH, WIDTH), seed=seed + layer).astype(np.float64)
        params.append(gb.param(f"W{layer}", w0))
        h = act(h @ params[-1])
    return SimpleNamespace(x=x, y=y, params=params, loss=gb.mean(gb.square(h - y)))


def mlp_grad_norms(activation: str, seed: int = 0) -> np.ndarray:
    """``||dL/dW_l||`` for each layer of the MLP on 128 random inputs, target 0."""
    m = model(activation, seed)
    rng = np.random.default_rng(seed)
    grads = gb.compile([m.x, m.y], gb.grad(m.loss, m.params))(rng.normal(size=(BATCH, WIDTH)), np.zeros((BATCH, WIDTH)))
    return np.array([np.linalg.norm(g) for g in grads])


def _weights(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    s = 1.0 / np.sqrt(HIDDEN)  # PyTorch's default for RNN/LSTM weights
    return rng.uniform(-s, s, (rows, cols))


def rnn_grad_norms(cell: str, seed: int = 0, w_hh_scale: float = 1.0, forget_bias: float = 3.0) -> np.ndarray:
    """``||dL/dx_t||`` for t = 0..99, L = mean squared final hidden state."""
    rng = np.random.default_rng(seed)
    xs = gb.input("xs", (STEPS, 4, INPUTS), "float64")
    gates = 4 if cell == "lstm" else 1
    w_ih = gb.param("w_ih", _weights(rng, gates * HIDDEN, INPUTS))
    w_hh = gb.param("w_hh", w_hh_scale * _weights(rng, gates * HIDDEN, HIDDEN))
    bias = np.zeros(gates * HIDDEN)
    if cell == "lstm":
        bias[HIDDEN:2 * HIDDEN] = forget_bias  # gate order i, f, g, o
    b = gb.param("b", bias)
    h0 = np.zeros((4, HIDDEN))
    if cell == "lstm":
        (h, _), _ = gb.scan(lambda hc, x_t: (gb.nn.lstm_cell(x_t, hc, w_ih, w_hh, b), None), (h0, h0), xs)
    else:
        h, _ = gb.scan(lambda h, x_t: (gb.nn.rnn_cell(x_t, h, w_ih, w_hh, b), None), h0, xs)
    loss = gb.mean(gb.square(h))
    (g,) = gb.compile([xs], [gb.grad(loss, xs)])(rng.normal(size=(STEPS, 4, INPUTS)))
    return np.sqrt(np.sum(g * g, axis=(1, 2)))


def measure() -> dict[str, dict[str, np.ndarray]]:
    return {
        "depth": {"sigmoid, N(0, 0.1²) init": mlp_grad_norms("sigmoid"),
                  "ReLU, He init": mlp_grad_norms("relu")},
        "time": {"tanh RNN": rnn_grad_norms("rnn"),
                 "tanh RNN, W_hh × 4": rnn_grad_norms("rnn", w_hh_scale=4.0),
                 "LSTM, forget bias 3": rnn_grad_norms("lstm")},
    }


def table(series: dict[str, np.ndarray], index: str, every: int) -> str:
    names = list(series)
    rows = [f"{index:>6}  " + "  ".join(f"{n:>26}" for n in names)]
    n = len(next(iter(series.values())))
    for i in list(range(0, n, every)) + ([n - 1] if (n - 1) % every else []):
        rows.append(f"{i:>6}  " + "  ".join(f"{series[k][i]:>26.3e}" for k in names))
    return "\n".join(rows)


# -- the figure: two log-scale line charts in one SVG, drawn by hand ------------------------
COLOURS = ("#b91c1c", "#1d4ed8", "#15803d")


def _panel(series: dict[str, np.ndarray], title: str, xlabel: str, x0: float) -> list[str]:
    w, h, left, top = 420.0, 260.0, x0 + 60.0, 40.0
    logs = {k: np.log10(np.maximum(v, 1e-300)) for k, v in series.items()}
    lo = np.floor(min(v.min() for v in logs.values()))
    hi = np.ceil(max(v.max() for v in logs.values()))
    hi = hi if hi > lo else lo + 1
    n = len(next(iter(series.values())))
    px = lambda i: left + w * i / max(n - 1, 1)
    py = lambda v: top + h * (hi - v) / (hi - lo)
    out = [f'<text x="{left + w / 2:.1f}" y="22" text-anchor="middle" font-weight="bold">{title}</text>',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#6b7280"/>']
    step = max(1, int(np.ceil((hi - lo) / 8)))
    for e in np.arange(lo, hi + 1, step):
        y = py(e)
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">1e{int(e)}</text>')
    for i in np.linspace(0, n - 1, 6).round().astype(int):
        out.append(f'<text x="{px(i):.1f}" y="{top + h + 16}" text-anchor="middle" font-size="11">{i}</text>')
    out.append(f'<text x="{left + w / 2:.1f}" y="{top + h + 34}" text-anchor="middle" font-size="12">{xlabel}</text>')
    out.append(f'<text x="{x0 + 14}" y="{top + h / 2:.1f}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 {x0 + 14} {top + h / 2:.1f})">gradient norm (log scale)</text>')
    for k, (name, v) in enumerate(logs.items()):
        pts = " ".join(f"{px(i):.1f},{py(y):.1f}" for i, y in enumerate(v))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{COLOURS[k]}" stroke-width="2"/>')
        ly = top + h + 54 + 16 * k
        out.append(f'<line x1="{left}" x2="{left + 24}" y1="{ly - 4}" y2="{ly - 4}" stroke="{COLOURS[k]}" stroke-width="2"/>')
        out.append(f'<text x="{left + 30}" y="{ly}" font-size="12">{name}</text>')
    return out


def to_svg(results: dict[str, dict[str, np.ndarray]]) -> str:
    parts = _panel(results["depth"], "per layer: 20-layer MLP, dL/dW_l", "layer (0 = first)", 0.0)
    parts += _panel(results["time"], "per time step: 100-step scan, dL/dx_t", "time step t (loss at t = 99)", 520.0)
    body = "\n".join(parts)
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="1020" height="400" viewBox="0 0 1020 400" '
            'font-family="Helvetica, Arial, sans-serif">\n<rect width="1020" height="400" fill="white"/>\n'
            f"{body}\n</svg>\n")


def build() -> gb.Program:
    """The 100-step tanh RNN's gradient with respect to every step's input (a reverse scan)."""
    rng = np.random.default_rng(0)
    xs = gb.input("xs", (STEPS, 4, INPUTS), "float64")
    w_ih, w_hh = gb.param("w_ih", _weights(rng, HIDDEN, INPUTS)), gb.param("w_hh", _weights(rng, HIDDEN, HIDDEN))
    h, _ = gb.scan(lambda h, x_t: (gb.nn.rnn_cell(x_t, h, w_ih, w_hh), None), np.zeros((4, HIDDEN)), xs)
    loss = gb.mean(gb.square(h))
    return gb.compile([xs], [loss, gb.grad(loss, xs)])


def main(out: str | Path = Path(__file__).resolve().parent.parent / "docs" / "vanishing_gradients.svg") -> dict:
    results = measure()
    print("gradient norm per layer, 20-layer MLP (layer 0 is the first):")
    print(table(results["depth"], "layer", 2))
    print("\ngradient norm per time step, 100-step scan (the loss reads the last step only):")
    print(table(results["time"], "step", 10))
    Path(out).write_text(to_svg(results))
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main(*sys.argv[1:2])
