"""Digits CNN: conv-relu, conv-relu-maxpool, dense-relu, dense, on the 8x8 digit images.

Run: ``python examples/cnn_digits.py`` (or ``graphbp demo --model cnn`` for the tuned run
with the progress bar and diagrams). Render its loss-and-gradient program with
``graphbp render examples/cnn_digits.py:build`` (``--collapse scope``: one box per layer). The
gradient graph shows the second convolution's input gradient as a ``conv_transpose2d`` (the
first one's input needs none) and each weight gradient as a ``conv2d_weight_grad``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

import graphbp as gb


def model(seed: int = 0) -> SimpleNamespace:
    """Inputs (N, 1, 8, 8) images and int labels; one scope per layer."""
    x = gb.input("x", (None, 1, 8, 8))
    t = gb.input("t", (None,), dtype="int64")
    with gb.scope("conv1"):
        w1 = gb.param("w1", gb.init.he_normal((16, 1, 3, 3), seed=seed))  # (C_out, C_in, kH, kW)
        b1 = gb.param("b1", np.zeros(16, np.float32))
        h = gb.relu(gb.conv2d(x, w1, b1, padding=1))
    with gb.scope("conv2"):
        w2 = gb.param("w2", gb.init.he_normal((32, 16, 3, 3), seed=seed + 1))
        b2 = gb.param("b2", np.zeros(32, np.float32))
        h = gb.max_pool2d(gb.relu(gb.conv2d(h, w2, b2, padding="same")), 2)  # (N, 32, 4, 4)
    with gb.scope("dense1"):
        w3 = gb.param("w3", gb.init.he_normal((512, 64), seed=seed + 2))
        b3 = gb.param("b3", np.zeros(64, np.float32))
        h = gb.relu(gb.flatten(h) @ w3 + b3)
    with gb.scope("dense2"):
        w4 = gb.param("w4", gb.init.glorot_uniform((64, 10), seed=seed + 3))
        b4 = gb.param("b4", np.zeros(10, np.float32))
        logits = h @ w4 + b4
    loss = gb.mean(gb.softmax_cross_entropy(logits, t))
    return SimpleNamespace(x=x, t=t, params=[w1, b1, w2, b2, w3, b3, w4, b4], logits=logits, loss=loss)


def build() -> gb.Program:
    """The loss and its gradients as one program (forward and backward schedules)."""
    m = model()
    return gb.compile(inputs=[m.x, m.t], outputs=[m.loss, *gb.grad(m.loss, m.params)])


def main(epochs: int = 8, seed: int = 0) -> float:
    X, T = gb.data.load_digits(images=True)  # (1797, 1, 8, 8)
    X_train, X_test, T_train, T_test = gb.data.train_test_split(X, T, test_fraction=0.2, seed=seed, stratify=T)
    m = model(seed)
    opt = gb.optim.Adam(lr=3e-3)
    step = gb.compile(inputs=[m.x, m.t], outputs=[m.loss], updates=opt.updates(m.loss, m.params))
    predict = gb.compile(inputs=[m.x], outputs=[m.logits])
    start = time.perf_counter()
    for epoch in range(epochs):
        shifted = gb.data.random_shift(X_train, 1, seed=epoch)  # a fresh one-pixel jitter per epoch
        losses = [step(xb, tb)[0] for xb, tb in gb.data.batches(shifted, T_train, batch_size=32, shuffle=True, seed=epoch)]
        acc = np.mean(np.argmax(predict(X_test)[0], axis=1) == T_test)
        print(f"epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}  test accuracy {100 * acc:.2f}%")
    print(f"test accuracy {100 * acc:.2f}% after {time.perf_counter() - start:.2f}s")
    return float(acc)


if __name__ == "__main__":
    main()
