"""Run the benchmarks of docs/performance.md and rewrite its results table.

    nox -s bench                      # or: python benchmarks/run.py [--repeats 31] [--quick]

Every implementation runs on one thread. The script re-executes itself with the thread
pins set (OMP/OpenBLAS/MKL/XLA) and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed from the
environment, for this command only. Timings interleave the implementations round by round
(so load from other processes hits them alike) and report medians of per-call times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
UNSET_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

TARGETS = {"W1": 1.05, "W2": 1.03, "W3": 1.10, "W4": 0.55, "W4p": 0.50, "W4s": 0.50, "W4l": 0.50, "W6": 1.10,
           "W7": 1.05}
CHAINS = {"W4p": "gelu", "W4s": "silu", "W4l": "softplus"}  # W4 rows written from primitive ops
TITLES = {
    "W1": "W1 MLP 64-128-128-10 relu, softmax-CE, batch 128",
    "W2": "W2 MLP 784-512-512-10 relu, softmax-CE, batch 256",
    "W3": "W3 32 layers x 32 tanh, MSE, batch 16",
    "W4": "W4 sum(gb.gelu(x*a+b)*c) (tanh form, built from primitives), 4M elements, value + grad",
    "W4p": "W4p the same gelu_tanh written out by the user (tanh, +, *), value + grad",
    "W4s": "W4s sum(silu(x*a+b)*c), silu = u * sigmoid(u), 4M elements, value + grad",
    "W4l": "W4l sum(softplus(u) - t*u), u = x*a+b, 4M elements, value + grad",
    "W6": "W6 cnn-mnist: 2 x (conv3x3+bias, relu, maxpool2), dense, softmax-CE, batch 64",
    "W7": "W7 lstm-charlm: emb 32, LSTM 128 (gb.scan), seq 32, batch 32, vocab 64, softmax-CE",
}
W6_FIRST_CALL_TARGET, W6_RSS_TARGET_MIB = 0.3, 25.0
COMPILE_TARGET = 0.25
MEMORY_TARGET_MIB = 20.0


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET_VARS}
    for k in THREAD_VARS:
        env[k] = "1"
    env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["GRAPHBP_BENCH_CHILD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def interleaved(impls: dict, repeats: int, inner: int) -> dict[str, float]:
    """Median seconds per call of each implementation, rounds interleaved and rotated."""
    import numpy as np

    names = list(impls)
    for name in names:  # warm up (JIT compilation, first-call planning, caches)
        step, feeds = impls[name]
        for _ in range(3):
            step(*feeds)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            step, feeds = impls[name]
            t0 = time.perf_counter()
            for _ in range(inner):
                step(*feeds)
            times[name].append((time.perf_counter() - t0) / inner)
    return {n: float(np.median(v)) for n, v in times.items()}


def load_impls(workload: str, peers_on: bool) -> dict:
    import handwritten
    import peers
    import workloads

    impls = {}
    if workload == "W4":
        impls["graphbp"] = workloads.make_w4()
        impls["numpy-hand"] = handwritten.make_w4()
    elif workload in CHAINS:
        impls["graphbp"] = workloads.make_chain(CHAINS[workload])
        impls["numpy-hand"] = handwritten.make_chain(CHAINS[workload])
    else:
        impls["graphbp"] = workloads.make_mlp(workload)
        impls["numpy-hand"] = handwritten.make_mlp(workload)
        if workload == "W1":
            impls["graphbp check_numerics"] = workloads.make_mlp(workload, check_numerics=True)
    if peers_on:
        for fw in peers.FRAMEWORKS:
            try:
                impls[fw] = peers.make(fw, workload)
            except ImportError:
                pass
    return impls


def probe(*args: str, timeout: float = 600) -> dict | None:
    """Run ``probes.py`` in a fresh process; None if it takes longer than ``timeout`` seconds."""
    try:
        out = subprocess.run([sys.executable, str(HERE / "probes.py"), *args], capture_output=True, text=True,
                             env=os.environ.copy(), check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores (shared), Linux {platform.release()}, Python "
            f"{platform.python_version()}, NumPy {np.__version__}, 1 thread")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--quick", action="store_true", help="few repeats, no chains beyond 4k layers")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--compile-timeout", type=float, default=300.0)
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W4p,W4s,W4l,W5,MEM,W6,W7")
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = ap.parse_args(argv)
    if os.environ.get("GRAPHBP_BENCH_CHILD") != "1":
        env = bench_env()
        return subprocess.call([sys.executable, __file__, *argv], env=env)
    sys.path.insert(0, str(HERE))
    repeats = 5 if args.quick else args.repeats
    chosen = args.workloads.split(",")
    results: dict = {"machine": machine(), "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "repeats": repeats, "times": {}, "compile": [], "memory": {}}
    inner = {"W1": 20, "W2": 2, "W3": 20, "W4": 1, "W4p": 1, "W4s": 1, "W4l": 1}
    for w in ("W1", "W2", "W3", "W4", *CHAINS):
        if w not in chosen:
            continue
        impls = load_impls(w, not args.no_peers and w not in CHAINS)
        med = interleaved(impls, repeats if not w.startswith("W4") else max(5, repeats // 3), inner[w])
        results["times"][w] = med
        ref = med["numpy-hand"]
        print(f"{TITLES[w]}")
        for name, t in med.items():
            print(f"  {name:24s} {t * 1e3:9.3f} ms   ratio {t / ref:5.2f}")
    if "W6" in chosen:
        import cnn

        med = interleaved(cnn.load_impls(not args.no_peers), repeats, 5)
        results["times"]["W6"] = med
        print(TITLES["W6"])
        for name, t in med.items():
            print(f"  {name:24s} {t * 1e3:9.3f} ms   ratio {t / med['numpy-hand']:5.2f}")
        results["w6_probe"] = {}
        for impl in med:  # first call and peak RSS: a fresh process each, median of three
            runs = [json.loads(subprocess.run([sys.executable, str(HERE / "cnn.py"), "probe", impl], capture_output=True,
                                              text=True, check=True).stdout) for _ in range(3)]
            results["w6_probe"][impl] = {k: statistics.median(r[k] for r in runs) for k in ("first_call", "peak_rss")}
            r = results["w6_probe"][impl]
            print(f"  {impl:24s} first call {r['first_call']:.3f} s, peak RSS above imports {r['peak_rss'] / 2**20:.1f} MiB")
    if "W7" in chosen:
        import lstm

        lstm.run(results, repeats, not args.no_peers, interleaved)
    if "W5" in chosen:
        sizes = [256, 1024, 4096] + ([] if args.quick else [16384])
        for layers in sizes:
            # cold compiles are noisy on a shared machine: median of several fresh processes
            runs = []
            for _ in range(1 if args.quick else (5 if layers <= 1024 else 3)):
                r = probe("compile", str(layers), timeout=args.compile_timeout)
                if r is None:
                    break
                runs.append(r)
            if not runs:
                print(f"W5 {layers:6d} layers: more than {args.compile_timeout:.0f} s, stopped")
                results["compile"].append({"layers": layers, "timeout": args.compile_timeout})
                break
            totals = sorted(runs, key=lambda q: q["compile"] + q["first_call"])
            r = dict(totals[len(totals) // 2], runs=len(runs),
                     **{k: statistics.median(q[k] for q in runs) for k in ("build_grad", "compile", "first_call")})
            results["compile"].append(r)
            print(f"W5 {layers:6d} layers (median of {len(runs)}): build+grad {r['build_grad']:.3f} s, "
                  f"compile {r['compile']:.3f} s, first call {r['first_call']:.3f} s")
    if "MEM" in chosen:
        for impl in ("graphbp", "numpy-hand"):
            r = probe("memory", impl)
            results["memory"][impl] = r
            print(f"W2 peak memory above imports, {impl}: {r['peak'] / 2**20:.2f} MiB")
    if args.out:  # results.json is the record behind performance.md: a partial run (--out '') keeps both
        (HERE / "results.json").write_text(json.dumps(results, indent=1))
        from report import render

        Path(args.out).write_text(render(results, " ".join(["python benchmarks/run.py", *argv])))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
