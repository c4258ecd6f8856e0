"""gb.scan against the same RNN step unrolled with a Python loop: build + compile + first
call, and the median time of one training-gradient call, for several sequence lengths.

Run with one BLAS thread: ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python
benchmarks/scan_vs_unrolled.py`` (figures in docs/sequences.md).
"""

from __future__ import annotations

import time

import numpy as np

import graphbp as gb

B, I, H = 32, 32, 128


def build(T: int, unrolled: bool, rng: np.random.Generator):
    x = gb.input("x", (T, B, I), "float32")
    Wx = gb.param("Wx", (0.1 * rng.normal(size=(I, H))).astype(np.float32))
    Wh = gb.param("Wh", (0.1 * rng.normal(size=(H, H))).astype(np.float32))

    def step(h, x_t):
        h = gb.tanh(x_t @ Wx + h @ Wh)
        return h, h

    h0 = gb.constant(np.zeros((B, H), np.float32))
    if unrolled:
        h, ys = h0, []
        for t in range(T):
            h, y = step(h, x[t])
            ys.append(y)
        hs = gb.stack(ys)
    else:
        h, hs = gb.scan(step, h0, x)
    loss = gb.mean(hs * hs)
    return gb.compile([x], [loss, *gb.grad(loss, [Wx, Wh])])


def main() -> None:
    rng = np.random.default_rng(0)
    for T in (32, 256, 1024):
        for unrolled in (False, True):
            if unrolled and T > 256:
                continue  # the unrolled graph's compile time grows with T
            xv = rng.normal(size=(T, B, I)).astype(np.float32)
            t0 = time.perf_counter()
            f = build(T, unrolled, rng)
            f(xv)
            first = time.perf_counter() - t0
            times = []
            for _ in range(9):
                t1 = time.perf_counter()
                f(xv)
                times.append(time.perf_counter() - t1)
            kind = "unrolled" if unrolled else "scan"
            print(f"T={T:5d} {kind:8s}: build+compile+first call {first:6.2f} s, "
                  f"step {1e3 * np.median(times):7.1f} ms")


if __name__ == "__main__":
    main()
