"""W8 (and W6) per rematerialisation mode, and the flow algorithms of docs/memory.md (issue 14).

    python benchmarks/memory.py            # W8 + W6 tables, partition times, flow algorithms
    python benchmarks/memory.py --quick    # fewer timing rounds
    python benchmarks/memory.py probe w8 "budget 25%"   # one fresh-process RSS probe (JSON)

W8: 64 tanh layers of width 1024, batch 256, float32, MSE loss, one SGD step. W6: the CNN of
benchmarks/cnn.py. Per mode (remat none, min_cut, memory budget 25% and 10% of none's saved
bytes): saved bytes, peak bytes of the memory plan (the larger of its forward and backward
peaks), peak RSS above the imports (a fresh process per mode: build, compile, three steps),
step time relative to none (medians of rounds interleaving the modes; indicative on a
shared machine) and the partition time of the joint graph. Then the flow algorithms on a
joint graph of about 10,000 nodes. ``nox -s bench`` runs it; run with one BLAS thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

import graphbp as gb  # noqa: E402
from graphbp.graph.traverse import toposort  # noqa: E402
from graphbp.runtime import remat as remat_mod  # noqa: E402
from graphbp.runtime.schedule import partition  # noqa: E402

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
MODES = ("none", "min_cut", "budget 25%", "budget 10%")
PARTITION_TARGET_S = {"w8": 0.2, "joint10k": 1.0}


def w8(layers: int = 64, width: int = 1024, batch: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    x, t = gb.input("x", (None, width)), gb.input("t", (None, width))
    ws = [gb.param(f"W{k}", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
          for k in range(layers)]
    h = x
    for w in ws:
        h = gb.tanh(h @ w)
    loss = gb.mean((h - t) ** 2)
    feeds = [rng.standard_normal((batch, width)).astype(np.float32),
             rng.standard_normal((batch, width)).astype(np.float32)]
    return [x, t], loss, ws, feeds


def w6():
    sys.path.insert(0, str(HERE))
    import cnn

    inputs, loss, params, feeds = cnn.w6_graph()
    return inputs, loss, params, list(feeds)


WORKLOADS = {"w8": (w8, 0.01), "w6": (w6, 0.01)}


def compile_modes(name: str, only: str | None = None):
    """``(params, feeds, {mode: program or error text})`` for workload ``name``."""
    build, lr = WORKLOADS[name]
    inputs, loss, params, feeds = build()
    grads = gb.grad(loss, params)
    updates = {p: p - lr * g for p, g in zip(params, grads)}
    saved_none = gb.compile(inputs, [loss], updates=updates).remat.saved_after
    kwargs = {"none": {}, "min_cut": {"remat": "min_cut"},
              "budget 25%": {"remat": "min_cut", "memory_budget": saved_none // 4},
              "budget 10%": {"remat": "min_cut", "memory_budget": saved_none // 10}}
    progs: dict[str, object] = {}
    for mode in MODES:
        if only is not None and mode != only:
            continue
        try:
            progs[mode] = gb.compile(inputs, [loss], updates=updates, **kwargs[mode])
        except gb.GraphError as e:
            progs[mode] = str(e)
    return params, feeds, progs


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def probe(name: str, mode: str) -> dict:
    """Peak RSS above the imports of building, compiling and running three steps (fresh process)."""
    base = _status("VmRSS")
    _, feeds, progs = compile_modes(name, only=mode)
    prog = progs[mode]
    if isinstance(prog, str):
        return {"mode": mode, "refused": prog}
    for _ in range(3):
        prog(*feeds)
    return {"mode": mode, "peak_rss": max(_status("VmHWM") - base, 0)}


def _fresh_probe(name: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "probe", name, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def table(name: str, rounds: int) -> list[dict]:
    params, feeds, progs = compile_modes(name)
    start = [p.value.copy() for p in params]
    live = {m: p for m, p in progs.items() if not isinstance(p, str)}
    times: dict[str, list[float]] = {m: [] for m in live}
    for _ in range(rounds):
        for mode, prog in live.items():
            for p, v in zip(params, start):
                p.value[...] = v
            t0 = time.perf_counter()
            prog(*feeds)
            times[mode].append(time.perf_counter() - t0)
    none_t = statistics.median(times["none"])
    rows = []
    param_mib = sum(p.value.nbytes for p in params) / MIB
    print(f"| {name.upper()} mode | saved (plan) | plan peak (fwd / bwd) | peak RSS above imports "
          f"(incl. {param_mib:.1f} MiB of parameters) | step time / none | recomputed | partition |")
    print("|---|---|---|---|---|---|---|")
    for mode, prog in progs.items():
        if isinstance(prog, str):
            smallest = prog.rsplit("memory_budget>=", 1)[-1].rstrip(".")
            print(f"| {mode} | refused: smallest budget that fits {int(smallest) / MIB:.2f} MiB | | | | | |")
            rows.append({"mode": mode, "refused": prog})
            continue
        plan = prog.memory_plan()
        r = prog.remat
        rss = statistics.median(_fresh_probe(name, mode)["peak_rss"] for _ in range(3))
        row = {"mode": mode, "saved": plan.saved, "forward_peak": plan.forward_peak,
               "backward_peak": plan.backward_peak, "peak_rss": rss,
               "time_ratio": statistics.median(times[mode]) / none_t, "recomputed": len(r.recomputed),
               "recompute_flops": r.flops, "partition_s": r.seconds}
        rows.append(row)
        print(f"| {mode} | {plan.saved / MIB:.2f} MiB | {max(plan.forward_peak, plan.backward_peak) / MIB:.2f} MiB "
              f"({plan.forward_peak / MIB:.2f} / {plan.backward_peak / MIB:.2f}) | {rss / MIB:.1f} MiB "
              f"({(rss / MIB - param_mib):.1f} without parameters) "
              f"| {row['time_ratio']:.2f}x | {len(r.recomputed)} ({r.flops / 1e9:.2f} GFLOP) "
              f"| {r.seconds * 1000:.0f} ms |")
    return rows


def partition_time(name: str) -> float:
    """Seconds of ``rematerialize(..., "min_cut")`` on the workload's joint graph, best of 3."""
    build, lr = WORKLOADS[name]
    inputs, loss, params, _ = build()
    grads = gb.grad(loss, params)
    part = partition(toposort([loss, *(p - lr * g for p, g in zip(params, grads))]))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        remat_mod.rematerialize(part, "min_cut")
        best = min(best, time.perf_counter() - t0)
    return best


def joint_graph(layers: int = 650, width: int = 8):
    """A joint forward+backward graph of about 10,000 nodes: a chain of matmul, tanh, scale
    and shift layers with its weight gradients (16 nodes per layer)."""
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, width))
    ws, h = [], x
    for k in range(layers):
        w = gb.param(f"W{k}", rng.standard_normal((width, width)).astype(np.float32))
        ws.append(w)
        h = gb.tanh(h @ w) * 0.5 + 0.1
    loss = gb.sum(h * h)
    return toposort([loss, *gb.grad(loss, ws)])


def flow_algorithms() -> list[tuple[str, float, int]]:
    order = joint_graph()
    part = partition(order)
    rows = []
    for name in ("preflow_push", "shortest_augmenting_path", "boykov_kolmogorov", "edmonds_karp"):
        remat_mod.FLOW = getattr(nx.algorithms.flow, name)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            _, _, report = remat_mod.rematerialize(part, "min_cut")
            times.append(time.perf_counter() - start)
        rows.append((name, min(times), report.saved_after))
    remat_mod.FLOW = nx.algorithms.flow.shortest_augmenting_path
    print(f"joint graph: {len(order)} nodes ({len(part.forward)} forward, {len(part.backward)} backward); "
          f"target < {PARTITION_TARGET_S['joint10k']} s")
    for name, sec, saved in rows:
        print(f"  {name:<26} partition {sec * 1000:8.1f} ms  saved {saved} B")
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        print(json.dumps(probe(sys.argv[2], sys.argv[3])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workloads", default="w8,w6")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)")
    for name in args.workloads.split(","):
        table(name, 3 if args.quick else (9 if name == "w8" else 41))
        t = partition_time(name)
        target = PARTITION_TARGET_S.get(name)
        print(f"{name.upper()} joint graph partition (min_cut, best of 3): {t * 1000:.0f} ms"
              + (f" (target < {target * 1000:.0f} ms: {'met' if t < target else 'missed'})" if target else ""))
        print()
    flow_algorithms()
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
