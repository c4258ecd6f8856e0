"""Character-level LSTM language model: embedding -> LSTM (``gb.scan``) -> linear -> softmax-CE.

Run: ``python examples/lstm_charlm.py`` (or ``graphbp demo --model lstm`` for the tuned run
with the progress bar, gradient norms and diagrams). Render its loss-and-gradient program
with ``graphbp render examples/lstm_charlm.py:build``: the forward view holds one ``scan``
node whose body is one LSTM step; the gradient view holds the reverse ``scan`` over the
step's pullback, whose carry sums the weights' gradients over the steps.

Training is truncated backpropagation through time: ``gb.data.bptt_windows`` cuts the text
into one contiguous stream per batch row, each step trains on the next window of every
stream, and the step program outputs the final ``(h, c)`` which is fed back as the next
window's initial carry (an input, so gradients stop at the window's edge).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np

import graphbp as gb
from graphbp.train.charlm import bigram_bits


def model(vocab_size: int | None = None, embed: int = 32, hidden: int = 128, seed: int = 0) -> SimpleNamespace:
    """Ids ``x``, next ids ``y`` (B, T) and the carry ``(h0, c0)`` in; loss and final carry out.
    ``vocab_size`` defaults to the bundled corpus's."""
    if vocab_size is None:
        vocab_size = gb.data.CharVocab.from_text(gb.data.load_text()).size
    rng = np.random.default_rng(seed)
    s = 1.0 / math.sqrt(hidden)
    x, y = gb.input("x", (None, None), "int64"), gb.input("y", (None, None), "int64")
    h0, c0 = gb.input("h0", (None, hidden)), gb.input("c0", (None, hidden))
    with gb.scope("embedding"):
        table = gb.param("embedding", rng.normal(size=(vocab_size, embed)).astype(np.float32))
        e = gb.nn.embedding(table, gb.transpose(x))  # (T, B, E): time first for the scan
    with gb.scope("lstm"):
        w_ih = gb.param("w_ih", rng.uniform(-s, s, (4 * hidden, embed)).astype(np.float32))
        w_hh = gb.param("w_hh", rng.uniform(-s, s, (4 * hidden, hidden)).astype(np.float32))
        b = gb.param("b", np.zeros(4 * hidden, np.float32))
        xp = gb.nn.input_projection(e, w_ih, b)  # every step's x_t W_ih^T + b in one matmul

        def step(carry, xp_t):  # called once, on symbolic nodes
            h, c = gb.nn.lstm_cell(xp_t, carry, w_ih, w_hh, project=False)
            return (h, c), h

        (h, c), hs = gb.scan(step, (h0, c0), xp)
    with gb.scope("output"):
        w_o = gb.param("w_out", rng.uniform(-s, s, (hidden, vocab_size)).astype(np.float32))
        b_o = gb.param("b_out", np.zeros(vocab_size, np.float32))
        loss = gb.mean(gb.softmax_cross_entropy(hs @ w_o + b_o, gb.transpose(y)))
    return SimpleNamespace(x=x, y=y, h0=h0, c0=c0, h=h, c=c, loss=loss, params=[table, w_ih, w_hh, b, w_o, b_o])


def build() -> gb.Program:
    """The loss and its gradients as one program (forward and backward schedules)."""
    m = model()
    return gb.compile(inputs=[m.x, m.y, m.h0, m.c0], outputs=[m.loss, *gb.grad(m.loss, m.params)])


def main(epochs: int = 2, batch_size: int = 32, window: int = 64, chars: int | None = None, seed: int = 0) -> float:
    """Train, then print held-out bits per character next to a bigram count model's."""
    text = gb.data.load_text()[:chars]
    vocab = gb.data.CharVocab.from_text(text)
    train_ids, test_ids = gb.data.split_ids(vocab.encode(text), 0.1)
    m = model(vocab.size, seed=seed)
    opt = gb.optim.Adam(lr=3e-3, clip_norm=1.0)  # clip the global gradient norm at 1
    step = gb.compile([m.x, m.y, m.h0, m.c0], [m.loss, m.h, m.c], updates=opt.updates(m.loss, m.params))
    evaluate = gb.compile([m.x, m.y, m.h0, m.c0], [m.loss, m.h, m.c])
    zeros = lambda rows: (np.zeros((rows, m.h0.shape[1]), np.float32),) * 2
    start = time.perf_counter()
    for epoch in range(epochs):
        h, c = zeros(batch_size)
        losses = []
        for xb, yb in gb.data.bptt_windows(train_ids, batch_size, window, drop_last=True):
            loss, h, c = step(xb, yb, h, c)  # the carry runs on into the next window
            losses.append(loss)
        print(f"epoch {epoch + 1}  train {np.mean(losses) / math.log(2):.3f} bits/char")
    x_te, y_te = gb.data.streams(test_ids, 16)
    h, c = zeros(16)
    total = 0.0
    for s in range(0, x_te.shape[1], 256):
        loss, h, c = evaluate(x_te[:, s:s + 256], y_te[:, s:s + 256], h, c)
        total += float(loss) * x_te[:, s:s + 256].size
    bits = total / x_te.size / math.log(2)
    print(f"held-out: LSTM {bits:.3f} bits/char, bigram {bigram_bits(train_ids, x_te, y_te, vocab.size):.3f} "
          f"bits/char, after {time.perf_counter() - start:.1f}s")
    return bits


if __name__ == "__main__":
    main()
