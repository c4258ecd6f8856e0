"""Digits MLP (the README example): 64-128-10 ReLU network, softmax cross-entropy, Adam.

Run: ``python examples/mlp_digits.py``. Render its loss-and-gradient program with
``graphbp render examples/mlp_digits.py:build``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

import graphbp as gb


def model(seed: int = 0) -> SimpleNamespace:
    """The graph of the README: inputs, parameters, logits and mean cross-entropy loss."""
    x = gb.input("x", (None, 64))  # float32 unless dtype= says otherwise; None = unknown dim
    t = gb.input("t", (None,), dtype="int64")
    W1 = gb.param("W1", gb.init.he_normal((64, 128), seed=seed))
    b1 = gb.param("b1", np.zeros(128, np.float32))
    W2 = gb.param("W2", gb.init.glorot_uniform((128, 10), seed=seed + 1))
    b2 = gb.param("b2", np.zeros(10, np.float32))
    logits = gb.relu(x @ W1 + b1) @ W2 + b2
    loss = gb.mean(gb.softmax_cross_entropy(logits, t))
    return SimpleNamespace(x=x, t=t, params=[W1, b1, W2, b2], logits=logits, loss=loss)


def build() -> gb.Program:
    """The loss and its gradients as one program (forward and backward schedules)."""
    m = model()
    grads = gb.grad(m.loss, m.params)  # symbolic nodes of the gradient graph
    return gb.compile(inputs=[m.x, m.t], outputs=[m.loss, *grads])


def main(epochs: int = 20, seed: int = 0) -> float:
    X, T = gb.data.load_digits()
    X_train, X_test, T_train, T_test = gb.data.train_test_split(X, T, test_fraction=0.2, seed=seed, stratify=T)
    m = model(seed)

    f = build()
    loss_value, *grad_values = f(X_train[:8], T_train[:8])  # NumPy arrays
    print(f"initial loss {float(loss_value):.4f}; gradient shapes {[g.shape for g in grad_values]}")

    opt = gb.optim.Adam(lr=1e-3)
    step = gb.compile(inputs=[m.x, m.t], outputs=[m.loss], updates=opt.updates(m.loss, m.params))
    predict = gb.compile(inputs=[m.x], outputs=[m.logits])
    start = time.perf_counter()
    for epoch in range(epochs):
        losses = [step(xb, tb)[0] for xb, tb in gb.data.batches(X_train, T_train, batch_size=32, shuffle=True, seed=epoch)]
        acc = np.mean(np.argmax(predict(X_test)[0], axis=1) == T_test)
        print(f"epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}  test accuracy {100 * acc:.2f}%")
    print(f"test accuracy {100 * acc:.2f}% after {time.perf_counter() - start:.2f}s")
    return float(acc)


if __name__ == "__main__":
    main()
