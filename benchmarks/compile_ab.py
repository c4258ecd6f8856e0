"""W5 compile time of several source trees of graphbp, interleaved, in process CPU seconds.

    python benchmarks/compile_ab.py LAYERS RUNS TREE [TREE ...]

Each run starts a fresh process per tree (``TREE`` first on ``sys.path``), in turn, that
builds the ``LAYERS``-deep chain of W5 (``benchmarks/workloads.py`` of that tree),
differentiates it, compiles it and calls it once, and reports the process CPU time of
each phase. A cold compile is a single measurement that load moves by tens of percent;
CPU time leaves out the time spent waiting for a core, and interleaving the trees makes
what load remains hit them alike. Prints each tree's medians over ``RUNS`` runs.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

PHASES = ("build + grad", "compile", "first call", "compile + first call")


def one(tree: str, layers: int) -> dict[str, float]:
    sys.path[:0] = [tree, f"{tree}/benchmarks"]
    import numpy as np

    import graphbp as gb
    import workloads

    assert gb.__file__.startswith(tree), f"imported {gb.__file__}, not {tree}"
    cpu, out = time.process_time, {}
    c = cpu()
    x, t, params, loss = workloads.deep_chain(layers)
    grads = gb.grad(loss, params)
    updates = {p: p - workloads.LR * g for p, g in zip(params, grads)}
    out["build + grad"] = cpu() - c
    c = cpu()
    prog = gb.compile([x, t], [loss], updates=updates)
    out["compile"] = cpu() - c
    feed = np.zeros((16, 32), np.float32)
    c = cpu()
    prog(feed, feed)
    out["first call"] = cpu() - c
    out["compile + first call"] = out["compile"] + out["first call"]
    return out


def main() -> None:
    layers, runs, trees = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    rows: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
    for _ in range(runs):
        for tree in trees:
            done = subprocess.run([sys.executable, __file__, "--one", tree, str(layers)], check=True,
                                  capture_output=True, text=True)
            rows[tree].append(json.loads(done.stdout))
    print(f"W5, {layers} layers: process CPU seconds, median of {runs} fresh processes per tree, interleaved")
    print(f"  {'tree':40s}" + "".join(f"{p:>22s}" for p in PHASES))
    for tree, rs in rows.items():
        print(f"  {tree:40s}" + "".join(f"{statistics.median(r[p] for r in rs):22.3f}" for p in PHASES))


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
