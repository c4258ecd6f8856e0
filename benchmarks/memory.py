"""W8 and the flow-algorithm measurement of docs/memory.md (rematerialisation, issue 14).

    python benchmarks/memory.py            # W8 table + flow algorithms on a 10,000-node graph
    python benchmarks/memory.py --quick    # fewer timing rounds

W8: 64 tanh layers of width 1024, batch 256, float32, MSE loss, one SGD step. Per mode
(remat none, min_cut, memory budget 25% and 10% of none's saved bytes): saved bytes, peak
bytes of the memory plan, partition time, step time relative to none (medians of rounds
interleaving the modes; indicative on a shared machine). Run with one BLAS thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

import graphbp as gb  # noqa: E402
from graphbp.graph.traverse import toposort  # noqa: E402
from graphbp.runtime import remat as remat_mod  # noqa: E402
from graphbp.runtime.schedule import partition  # noqa: E402

MIB = 1 << 20


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
    algos = ("preflow_push", "shortest_augmenting_path", "boykov_kolmogorov", "edmonds_karp")
    for name in algos:
        remat_mod.FLOW = getattr(nx.algorithms.flow, name)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            _, _, report = remat_mod.rematerialize(part, "min_cut")
            times.append(time.perf_counter() - start)
        rows.append((name, min(times), report.saved_after))
    remat_mod.FLOW = nx.algorithms.flow.shortest_augmenting_path
    print(f"joint graph: {len(order)} nodes ({len(part.forward)} forward, {len(part.backward)} backward)")
    for name, sec, saved in rows:
        print(f"  {name:<26} partition {sec * 1000:8.1f} ms  saved {saved} B")
    return rows


def w8_table(rounds: int) -> None:
    inputs, loss, ws, feeds = w8()
    start = [w.value.copy() for w in ws]
    updates = gb.optim.SGD(0.01).updates(loss, ws)
    base = gb.compile(inputs, [loss], updates=updates)
    saved_none = base.remat.saved_after
    modes = [("none", {}), ("min_cut", {"remat": "min_cut"}),
             ("budget 25%", {"remat": "min_cut", "memory_budget": saved_none // 4}),
             ("budget 10%", {"remat": "min_cut", "memory_budget": saved_none // 10})]
    progs = {}
    for label, kw in modes:
        try:
            progs[label] = gb.compile(inputs, [loss], updates=updates, **kw)
        except gb.GraphError as e:
            print(f"{label}: refused: {e}")
    times: dict[str, list[float]] = {k: [] for k in progs}
    for _ in range(rounds):
        for label, prog in progs.items():
            for w, v in zip(ws, start):
                w.value[...] = v
            t0 = time.perf_counter()
            prog(*feeds)
            times[label].append(time.perf_counter() - t0)
    none_t = statistics.median(times["none"])
    print("| mode | saved (plan) | kept (saved + recompute peak, remat) | forward peak | backward peak "
          "| step time / none | recomputed values | partition |")
    print("|---|---|---|---|---|---|---|---|")
    for label, prog in progs.items():
        plan = prog.memory_plan()
        r = prog.remat
        print(f"| {label} | {plan.saved / MIB:.1f} MiB | {r.kept / MIB:.1f} MiB | {plan.forward_peak / MIB:.1f} MiB "
              f"| {plan.backward_peak / MIB:.1f} MiB "
              f"| {statistics.median(times[label]) / none_t:.2f}x | {len(r.recomputed)} "
              f"({r.flops / 1e9:.2f} GFLOP) | {r.seconds * 1000:.0f} ms |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    flow_algorithms()
    w8_table(3 if args.quick else 9)


if __name__ == "__main__":
    main()
