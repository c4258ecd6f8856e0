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

``python benchmarks/ufunc_cost.py [--repeats N] [--json PATH]``; the minimum over interleaved
rounds of the process's CPU time (on a shared machine wall-clock time mostly measures the
other processes; CPU time still pays for the caches they evict), one thread. Not a test:
the figures depend on the machine and its load.
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
FULL = 4_000_000  # the W4 size: the per-call table's last column, as the hand-written steps run
BLOCK = 1 << 16  # the merged loop's block (RuntimeOptions.merged_block_elements)

# The calls per element of each W4 chain, by the names of the per-call table: graphbp's
# merged loop (``program.source()``, 64K-element blocks) and the hand-written reference
# (benchmarks/handwritten.py, full-size arrays). "(s)" marks a scalar operand.
CHAINS = {
    "W4p gelu-tanh from primitives": (
        ["multiply scalar", "add scalar", "square", "multiply scalar", "add scalar", "multiply", "tanh",
         "add scalar", "vdot",  # forward: u, k u (1 + c u^2), tanh, 1 + t, sum(u (1 + t))
         "square", "add scalar", "multiply", "add scalar", "multiply", "multiply scalar", "add",
         "multiply scalar"],  # derivative: (1 - t^2) u (k' u^2 + k) + q, times the seed's scalars
        ["multiply scalar", "add scalar", "multiply", "multiply scalar", "add scalar", "multiply",
         "multiply scalar", "tanh", "add scalar", "multiply", "add_reduce float32", "multiply scalar",
         "add scalar", "multiply scalar", "multiply", "multiply", "add scalar", "multiply", "add",
         "multiply scalar"]),
    "W4s silu u * sigmoid(u)": (
        ["multiply scalar", "add scalar", "clip", "exp", "add scalar", "divide", "vdot", "multiply",
         "add scalar", "multiply", "add", "multiply scalar"],
        ["multiply scalar", "add scalar", "negative", "exp", "add scalar", "reciprocal", "multiply",
         "add_reduce float32", "add scalar", "multiply", "add scalar", "multiply", "multiply scalar"]),
    "W4l softplus(u) - t u": (
        ["multiply scalar", "add scalar", "minimum scalar", "negative", "negative", "minimum scalar",
         "exp", "log1p", "add", "multiply", "add", "add_reduce float32", "clip", "exp", "add scalar",
         "divide", "add", "multiply scalar"],
        ["multiply scalar", "add scalar", "logaddexp", "add_reduce float32", "multiply", "add_reduce float32",
         "negative", "exp", "add scalar", "reciprocal", "add", "multiply scalar"]),
}


def _aligned(n: int) -> np.ndarray:
    """float32 scratch on a 64-byte boundary, as the blocked loop allocates it."""
    raw = np.empty(4 * n + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + 4 * n].view(np.float32)


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
        "divide": lambda: np.divide(a, b, c),
        "add": lambda: np.add(a, b, c),
        "exp": lambda: np.exp(a, c),
        "tanh": lambda: np.tanh(a, c),
        "log1p": lambda: np.log1p(b, c),
        "add_reduce float64": lambda: np.add.reduce(a, None, f64),
        "add_reduce float32": lambda: np.add.reduce(a, None),
        "vdot": lambda: np.vdot(a, b),
        "logaddexp": lambda: np.logaddexp(np.float32(0), a, c),
    }


def silu_chain(x: np.ndarray, out: np.ndarray, block: int, aligned: bool = True) -> float:
    """The 12 calls per block of W4s's generated loop (value and gradient of
    ``sum(u * sigmoid(u) * c)``, ``u = x a + b``), in block-sized scratch: the whole 4M-element
    step at one block size, as the blocked loop runs it (slices, calls, the Python loop)."""
    s0, s1, s2 = (_aligned(block) if aligned else np.empty(block, np.float32) for _ in range(3))
    a, b, scale, acc = np.float32(1.1), np.float32(0.1), np.float32(0.7), 0.0
    n = x.shape[0] - x.shape[0] % block
    for i in range(0, n, block):
        j = i + block
        bx, bo = x[i:j], out[i:j]
        np.multiply(bx, a, s0)
        np.add(s0, b, s0)
        np.clip(s0, -86.0, 86.0, out=s1)
        np.exp(s1, s1)
        np.add(s1, 1.0, s2)
        np.divide(s1, s2, s1)
        acc += float(np.vdot(s0, s1))
        np.multiply(s0, s1, s0)
        np.subtract(1.0, s1, s2)
        np.multiply(s2, s0, s2)
        np.add(s1, s2, s1)
        np.multiply(scale, s1, bo)
    return acc


def chain_by_block(repeats: int) -> dict:
    """ms per 4M-element W4s step (12 calls per block) against the block size, and the fixed
    cost of one call (a 16-element multiply)."""
    x = np.random.default_rng(2).standard_normal(FULL).astype(np.float32)
    out = np.empty_like(x)
    samples: dict[int, list[float]] = {n: [] for n in BLOCKS}
    unaligned = []
    for _ in range(repeats):
        for n in BLOCKS:
            t0 = time.process_time()
            silu_chain(x, out, n)
            samples[n].append(time.process_time() - t0)
        t0 = time.process_time()
        silu_chain(x, out, BLOCK, aligned=False)
        unaligned.append(time.process_time() - t0)
    a, c = np.ones(16, np.float32), np.empty(16, np.float32)
    fixed = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(10000):
            np.multiply(a, a, c)
        fixed.append((time.process_time() - t0) / 10000)
    return {"ms_per_step": {n: float(np.min(v)) * 1e3 for n, v in samples.items()},
            "us_per_call_fixed": float(np.min(fixed)) * 1e6,
            "ms_unaligned_scratch": float(np.min(unaligned)) * 1e3}


def per_call(repeats: int) -> dict:
    """ns per element of each call at each block size (the loop over one 4M array's worth of
    blocks, so the per-call fixed cost is included as the blocked loop pays it)."""
    rng = np.random.default_rng(0)
    out: dict = {}
    for n in BLOCKS + (FULL,):
        # blocks in cache-line-aligned scratch (the loop's); full size as np.empty gives it
        a, b, c = (_aligned(n) if n != FULL else np.empty(n, np.float32) for _ in range(3))
        a[:] = rng.standard_normal(n)
        b[:] = rng.random(n) + 0.5
        calls = _calls(a, b, c)
        reps = max(1, FULL // n)
        samples: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(repeats):
            for name, fn in calls.items():
                t0 = time.process_time()
                for _ in range(reps):
                    fn()
                samples[name].append((time.process_time() - t0) / (reps * n) * 1e9)
        out[n] = {k: float(np.min(v)) for k, v in samples.items()}
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
            t0 = time.process_time()
            fn()
            samples[name].append(time.process_time() - t0)
    return {k: {"ms": float(np.min(v)) * 1e3, "GB/s": cases[k][1] / float(np.min(v)) / 1e9}
            for k, v in samples.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    calls = per_call(args.repeats)
    bw = bandwidth(args.repeats * 3)
    chain = chain_by_block(args.repeats)
    names = list(next(iter(calls.values())))
    print(f"ns per element per call (CPU time, min of {args.repeats}), float32, operands in place")
    print(f"{'call':22s}" + "".join(f"{n:>9d}" for n in calls))
    for name in names:
        print(f"{name:22s}" + "".join(f"{calls[n][name]:9.3f}" for n in calls))
    print("\nfull-size (4M float32, 16 MB) passes")
    for name, r in bw.items():
        print(f"{name:26s} {r['ms']:7.2f} ms  {r['GB/s']:6.1f} GB/s")
    print(f"\nlower bound from the table: graphbp's calls at {BLOCK} elements against the hand-written "
          f"ones at {FULL}")
    for name, (ours, hand) in CHAINS.items():
        t_ours = sum(calls[BLOCK][c] for c in ours) * FULL / 1e6
        t_hand = sum(calls[FULL][c] for c in hand) * FULL / 1e6
        print(f"{name:32s} {len(ours):2d} calls {t_ours:6.2f} ms   hand {len(hand):2d} calls {t_hand:6.2f} ms"
              f"   ratio {t_ours / t_hand:.2f}")
    print(f"\nW4s's 12-call loop over 4M float32 (fixed cost of one call: {chain['us_per_call_fixed']:.2f} us)")
    for n, ms in chain["ms_per_step"].items():
        print(f"block {n:>8d}: {ms:7.2f} ms per step")
    print(f"block {BLOCK:>8d}: {chain['ms_unaligned_scratch']:7.2f} ms per step with np.empty's 16-byte-aligned scratch")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_call_ns_per_element": {str(k): v for k, v in calls.items()}, "bandwidth": bw,
                       "silu_chain": chain}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
