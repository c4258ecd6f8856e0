"""Cost of one NumPy call against the block size, and this machine's memory bandwidth.

The lower bound of a cache-blocked elementwise chain (docs/performance.md, "Elementwise
chains") is a number of NumPy calls per element times the cost of one call per element at
the block size the loop uses, plus the bytes that must still reach memory. This script
measures both ingredients:

- per-call time of the ufuncs the W4 chains use (in place, operands in cache) for blocks of
  4K to 1M float32 elements, as nanoseconds per element: small blocks pay the fixed cost
  of a call (argument parsing, dispatch), large ones fall out of L2 and pay memory;
- the bandwidth of full-size (16 MB) passes, as the hand-written references make them:
  a copy, an in-place multiply, a two-operand add into a third array, a sum.

``python benchmarks/ufunc_cost.py [--repeats N] [--json PATH]``; medians of interleaved
rounds, one thread. Not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

BLOCKS = (1 << 12, 1 << 13, 1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 20)
FULL = 4_000_000  # the W4 size


def _calls(a, b, c):
    """One representative call of each kind, in place on block-sized arrays."""
    f64 = np.float64
    return {
        "multiply": lambda: np.multiply(a, b, c),
        "multiply scalar": lambda: np.multiply(a, np.float32(1.0001), c),
        "add scalar": lambda: np.add(c, 0.5, c),
        "square": lambda: np.square(a, c),
        "minimum scalar": lambda: np.minimum(a, 80.0, out=c),
        "clip": lambda: np.clip(a, -80.0, 80.0, out=c),
        "negative": lambda: np.negative(a, c),
        "reciprocal": lambda: np.reciprocal(b, c),
        "exp": lambda: np.exp(a, c),
        "tanh": lambda: np.tanh(a, c),
        "log1p": lambda: np.log1p(b, c),
        "add_reduce float64": lambda: np.add.reduce(a, None, f64),
        "add_reduce float32": lambda: np.add.reduce(a, None),
        "dot": lambda: np.dot(a, b),
    }


def per_call(repeats: int) -> dict:
    """ns per element of each call at each block size (the loop over one 4M array's worth of
    blocks, so the per-call fixed cost is included as the blocked loop pays it)."""
    rng = np.random.default_rng(0)
    out: dict = {}
    for n in BLOCKS:
        a = rng.standard_normal(n).astype(np.float32)
        b = (rng.random(n) + 0.5).astype(np.float32)
        c = np.empty(n, np.float32)
        calls = _calls(a, b, c)
        reps = max(1, FULL // n)
        samples: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(repeats):
            for name, fn in calls.items():
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                samples[name].append((time.perf_counter() - t0) / (reps * n) * 1e9)
        out[n] = {k: float(np.median(v)) for k, v in samples.items()}
    return out


def bandwidth(repeats: int) -> dict:
    """GB/s of full-size passes (bytes read + written per call over its time)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(FULL).astype(np.float32)
    y = rng.standard_normal(FULL).astype(np.float32)
    z = np.empty(FULL, np.float32)
    nb = x.nbytes
    cases = {
        "copy (r+w)": (lambda: np.copyto(z, x), 2 * nb),
        "multiply in place (r+w)": (lambda: np.multiply(z, np.float32(1.0001), z), 2 * nb),
        "add x+y -> z (2r+w)": (lambda: np.add(x, y, z), 3 * nb),
        "add_reduce (r)": (lambda: np.add.reduce(x, None), nb),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, (fn, _) in cases.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {k: {"ms": float(np.median(v)) * 1e3, "GB/s": cases[k][1] / float(np.median(v)) / 1e9}
            for k, v in samples.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    calls = per_call(args.repeats)
    bw = bandwidth(args.repeats * 3)
    names = list(next(iter(calls.values())))
    print(f"ns per element per call (medians of {args.repeats}), float32, operands in place")
    print(f"{'call':22s}" + "".join(f"{n:>9d}" for n in calls))
    for name in names:
        print(f"{name:22s}" + "".join(f"{calls[n][name]:9.3f}" for n in calls))
    print("\nfull-size (4M float32, 16 MB) passes")
    for name, r in bw.items():
        print(f"{name:26s} {r['ms']:7.2f} ms  {r['GB/s']:6.1f} GB/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_call_ns_per_element": {str(k): v for k, v in calls.items()}, "bandwidth": bw}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
