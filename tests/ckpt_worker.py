"""Training process for the SIGKILL test: resume from a checkpoint if any, then train,
checkpointing after every step and printing ``saved <step>`` once each save returned."""

from __future__ import annotations

import os
import sys

import numpy as np

import graphbp as gb

TOTAL_STEPS = 250


def model():
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 64))
    W = gb.param("W", (rng.normal(size=(64, 2048)) * 0.05).astype(np.float32))
    v = gb.param("v", (rng.normal(size=(2048,)) * 0.05).astype(np.float32))
    loss = gb.mean(gb.square(gb.tanh(x @ W) @ v - 1.0))
    opt = gb.optim.Adam(1e-3)
    step = gb.compile([x], [loss], updates=opt.updates(loss, [W, v]))
    return step, [W, v], opt


def batch(k: int) -> np.ndarray:
    return np.random.default_rng(1000 + k).normal(size=(8, 64)).astype(np.float32)


def train(path: str | None, upto: int = TOTAL_STEPS, out=None):
    step, params, opt = model()
    done = 0
    if path is not None and os.path.exists(path):
        done, _ = gb.load_checkpoint(path, params, opt)
    for k in range(done, upto):
        step(batch(k))
        if path is not None:
            gb.save_checkpoint(path, params, opt, step=k + 1, extra={"k": k + 1})
            if out is not None:
                print(f"saved {k + 1}", file=out, flush=True)
    return params, opt


if __name__ == "__main__":
    print("ready", flush=True)
    train(sys.argv[1], out=sys.stdout)
    print("done", flush=True)
