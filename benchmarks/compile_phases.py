"""W5 compile time split by phase, in a fresh process per run.

``python benchmarks/compile_phases.py LAYERS [RUNS]`` builds the ``LAYERS``-deep chain of
W5, differentiates it, compiles it and calls it once, RUNS times, each in a fresh process,
and prints the median seconds of each phase: building the graph, ``gb.grad``, each rewrite
pass (``program.pass_timings``), the rest of ``gb.compile`` (partition, schedules), the
first call's shape check, memory plan and code generation (``program.plan_timings()``) and
the first step itself. Process CPU time is printed next to the wall time of the three big
phases: on a shared machine it moves less with the load.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def one(layers: int) -> dict[str, float]:
    import numpy as np

    import graphbp as gb
    import workloads

    out: dict[str, float] = {}
    wall, cpu = time.perf_counter, time.process_time
    w, c = wall(), cpu()
    x, t, params, loss = workloads.deep_chain(layers)
    out["build"] = wall() - w
    w1 = wall()
    grads = gb.grad(loss, params)
    updates = {p: p - workloads.LR * g for p, g in zip(params, grads)}
    out["grad"] = wall() - w1
    out["build+grad cpu"] = cpu() - c
    w, c = wall(), cpu()
    prog = gb.compile([x, t], [loss], updates=updates)
    out["compile"] = wall() - w
    out["compile cpu"] = cpu() - c
    for name, seconds in prog.pass_timings.items():
        out[f"  pass {name}"] = seconds
    out["  partition, schedules"] = out["compile"] - sum(prog.pass_timings.values())
    feed = np.zeros((16, 32), np.float32)
    w, c = wall(), cpu()
    prog(feed, feed)
    out["first call"] = wall() - w
    out["first call cpu"] = cpu() - c
    for name, seconds in prog.plan_timings().items():
        out[f"  {name}"] = seconds
    out["  step"] = out["first call"] - sum(prog.plan_timings().values())
    out["compile + first call"] = out["compile"] + out["first call"]
    return out


def main() -> None:
    layers = int(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rows = [json.loads(subprocess.run([sys.executable, __file__, "--one", str(layers)], check=True,
                                      capture_output=True, text=True).stdout) for _ in range(runs)]
    print(f"{layers} layers, median of {runs} fresh processes (seconds):")
    for key in rows[0]:
        print(f"  {key:28s} {statistics.median(r[key] for r in rows):8.3f}")


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        print(json.dumps(one(int(sys.argv[2]))))
    else:
        main()
