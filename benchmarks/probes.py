"""Measurements that need a fresh process: cold compile time (W5) and peak memory (W2).

``python benchmarks/probes.py compile LAYERS`` prints JSON with the seconds spent building
the graph and its gradient, in ``gb.compile`` and in the first call (memory plan and code
generation for the feed shapes). ``python benchmarks/probes.py memory IMPL`` prints the peak
traced allocation (tracemalloc) of building and running five W2 steps, above the imports.
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402

import graphbp as gb  # noqa: E402
import handwritten  # noqa: E402
import workloads  # noqa: E402


def compile_probe(layers: int) -> dict:
    t0 = time.perf_counter()
    x, t, params, loss = workloads.deep_chain(layers)
    grads = gb.grad(loss, params)
    t1 = time.perf_counter()
    prog = gb.compile([x, t], [loss], updates={p: p - workloads.LR * g for p, g in zip(params, grads)})
    t2 = time.perf_counter()
    feed = np.zeros((16, 32), np.float32)
    prog(feed, feed)
    t3 = time.perf_counter()
    return {"layers": layers, "build_grad": t1 - t0, "compile": t2 - t1, "first_call": t3 - t2}


def memory_probe(impl: str) -> dict:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    if impl == "graphbp":
        step, feeds = workloads.make_mlp("W2")
    else:
        step, feeds = handwritten.make_mlp("W2")
    for _ in range(5):
        step(*feeds)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    data = sum(a.nbytes for a in feeds)
    return {"impl": impl, "peak": peak, "feeds": data}


if __name__ == "__main__":
    kind, arg = sys.argv[1], sys.argv[2]
    result = compile_probe(int(arg)) if kind == "compile" else memory_probe(arg)
    print(json.dumps(result))
