"""XOR with a 2-4-1 tanh network and full-batch SGD with momentum.

XOR is the classic problem a linear model cannot solve; one hidden tanh layer can.
Run: ``python examples/xor_tanh.py``; render: ``graphbp render examples/xor_tanh.py:build``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

import graphbp as gb

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
Y = np.array([[-1], [1], [1], [-1]], dtype=np.float64)  # XOR in tanh's range


def model(hidden: int = 4, seed: int = 0) -> SimpleNamespace:
    x = gb.input("x", (None, 2), dtype="float64")
    y = gb.input("y", (None, 1), dtype="float64")
    W1 = gb.param("W1", gb.init.glorot_uniform((2, hidden), seed=seed, dtype="float64"))
    b1 = gb.param("b1", np.zeros(hidden))
    W2 = gb.param("W2", gb.init.glorot_uniform((hidden, 1), seed=seed + 1, dtype="float64"))
    b2 = gb.param("b2", np.zeros(1))
    out = gb.tanh(gb.tanh(x @ W1 + b1) @ W2 + b2)
    loss = gb.mean(gb.square(out - y))
    return SimpleNamespace(x=x, y=y, params=[W1, b1, W2, b2], out=out, loss=loss)


def build() -> gb.Program:
    """Loss and gradients of the XOR network as one program."""
    m = model()
    return gb.compile([m.x, m.y], [m.loss, *gb.grad(m.loss, m.params)])


def main(steps: int = 500, seed: int = 0) -> np.ndarray:
    m = model(seed=seed)
    opt = gb.optim.SGD(0.2, momentum=0.9)
    step = gb.compile([m.x, m.y], [m.loss], updates=opt.updates(m.loss, m.params))
    for i in range(steps):
        (loss,) = step(X, Y)
        if i % 100 == 0:
            print(f"step {i:4d}  loss {float(loss):.6f}")
    pred = gb.compile([m.x], [m.out])(X)[0]
    for xi, p in zip(X, pred[:, 0]):
        print(f"xor({int(xi[0])}, {int(xi[1])}) = {p:+.3f}")
    solved = bool(np.all(np.sign(pred) == Y))
    print(f"final loss {float(loss):.6f}; solved: {solved}")
    return pred


if __name__ == "__main__":
    main()
