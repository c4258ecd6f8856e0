"""Nonlinear regression with mean squared error: fit y = sin(3x) + noise with a small MLP.

Run: ``python examples/regression_mse.py``; render: ``graphbp render examples/regression_mse.py:build``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import graphbp as gb


def dataset(n: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, 1)).astype(np.float32)
    y = (np.sin(3.0 * x) + 0.05 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def model(hidden: int = 32, seed: int = 0) -> SimpleNamespace:
    x = gb.input("x", (None, 1))
    y = gb.input("y", (None, 1))
    W1 = gb.param("W1", gb.init.glorot_uniform((1, hidden), seed=seed))
    b1 = gb.param("b1", np.zeros(hidden, np.float32))
    W2 = gb.param("W2", gb.init.glorot_uniform((hidden, 1), seed=seed + 1))
    b2 = gb.param("b2", np.zeros(1, np.float32))
    pred = gb.tanh(x @ W1 + b1) @ W2 + b2
    loss = gb.mse(pred, y)
    return SimpleNamespace(x=x, y=y, params=[W1, b1, W2, b2], pred=pred, loss=loss)


def build() -> gb.Program:
    """Loss and gradients of the regression network as one program."""
    m = model()
    return gb.compile([m.x, m.y], [m.loss, *gb.grad(m.loss, m.params)])


def main(epochs: int = 150, seed: int = 0) -> float:
    X, Y = dataset(seed=seed)
    X_test, Y_test = dataset(128, seed=seed + 100)
    m = model(seed=seed)
    opt = gb.optim.Adam(lr=1e-2)
    step = gb.compile([m.x, m.y], [m.loss], updates=opt.updates(m.loss, m.params))
    evaluate = gb.compile([m.x, m.y], [m.loss])
    baseline = float(np.mean((Y_test - Y.mean()) ** 2))
    for epoch in range(epochs):
        for xb, yb in gb.data.batches(X, Y, batch_size=32, shuffle=True, seed=epoch):
            step(xb, yb)
        if epoch % 25 == 0 or epoch == epochs - 1:
            print(f"epoch {epoch:3d}  test mse {float(evaluate(X_test, Y_test)[0]):.5f}")
    test_mse = float(evaluate(X_test, Y_test)[0])
    print(f"test mse {test_mse:.5f} (predicting the mean: {baseline:.5f}; noise floor 0.0025)")
    return test_mse


if __name__ == "__main__":
    main()
