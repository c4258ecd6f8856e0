"""Data-parallel scaling of W2 (784-512-512-10 MLP, global batch 256) over MPI.

    python benchmarks/distributed.py [--steps 200]     # needs pip install 'graphbp[mpi]'

Runs, each pinned to one BLAS thread per process: one process stepping on the whole batch
of 256, then ``mpiexec -n 2`` with each rank stepping on 128 rows and averaging the
gradients (one 2.7 MB bucket ... see docs/distributed.md). Under MPI it also times, on the
same ranks, the step with the one-process communicator (same arithmetic, no
communication) and the allreduce of a gradient-sized buffer alone, which give the share
of step time spent communicating. Medians of per-step times; this machine is shared, so
the figures are indicative. Prints a Markdown table and writes benchmarks/distributed.json.
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

HERE = Path(__file__).parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
GLOBAL_BATCH = 256


def _median_steps(variants: dict, steps: int, comm=None) -> dict:
    """Median seconds per call of each variant, interleaved round by round (blocks of 5
    calls, ranks starting each block together) so load from other processes hits all alike."""
    for f in variants.values():
        for _ in range(3):
            f()
    times: dict = {k: [] for k in variants}
    for _ in range(max(1, steps // 5)):
        for k, f in variants.items():
            if comm is not None:
                comm.barrier()
            t0 = time.perf_counter()
            for _ in range(5):
                f()
            times[k].append((time.perf_counter() - t0) / 5)
    return {k: statistics.median(v) for k, v in times.items()}


def worker(steps: int) -> dict:
    import numpy as np

    import graphbp as gb
    from workloads import data, mlp_graph

    comm = gb.distributed.world() if gb.distributed.under_mpi() else None
    size = 1 if comm is None else comm.size
    d = data("W2")
    per = GLOBAL_BATCH // size
    rank = 0 if comm is None else comm.rank
    feeds = (d["x"][rank * per:(rank + 1) * per], d["t"][rank * per:(rank + 1) * per])

    def program(c):
        x, t, params, loss = mlp_graph("W2", data("W2"))
        opt = gb.optim.SGD(0.01)
        if c is not None:
            opt = gb.distributed.data_parallel(opt, c)
        return gb.compile([x, t], [loss], updates=opt.updates(loss, params))

    if comm is None:
        step = program(None)
        return {"ranks": 1, **_median_steps({"step_s": lambda: step(*feeds)}, steps)}
    step, no_comm = program(comm), program(gb.distributed.single_process())
    grad_bytes = sum(int(np.prod(a.shape)) * 4 for a in d["Ws"] + d["bs"])
    buf = np.ones(grad_bytes // 4, np.float32)
    out = np.empty_like(buf)
    MPI = comm._mpi

    def sequential():
        no_comm(*feeds)
        comm.allreduce_mean(buf, out)

    def overlapped():
        # The best a graph-level overlap could do: start the allreduce of the gradient
        # bytes, run the whole step's arithmetic, then wait.
        request = comm._comm.Iallreduce(buf, out, op=MPI.SUM)
        no_comm(*feeds)
        request.Wait()

    result = {"ranks": size, "grad_bytes": grad_bytes, **_median_steps({
        "step_s": lambda: step(*feeds),
        "step_no_comm_s": lambda: no_comm(*feeds),
        "allreduce_s": lambda: comm.allreduce_mean(buf, out),
        "sequential_s": sequential,
        "overlapped_s": overlapped,
    }, steps, comm)}
    gathered = comm._comm.allgather(result)  # the slowest rank sets the pace
    if comm.rank != 0:
        return {}
    return {k: max(r[k] for r in gathered) if k.endswith("_s") else v for k, v in result.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    if args.worker:
        res = worker(args.steps)
        if res:
            print(json.dumps(res))
        return 0
    env = {**os.environ, **{k: "1" for k in THREAD_VARS}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(args.steps)]
    mpiexec = Path(sys.executable).with_name("mpiexec")
    two_ranks = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", "2", *me]
    runs = {}
    for label, cmd, extra in (("1 process", me, {}), ("2 ranks", two_ranks, {}),
                              ("2 ranks, async progress", two_ranks, {"MPIR_CVAR_ASYNC_PROGRESS": "1"})):
        out = subprocess.run(cmd, env={**env, **extra}, capture_output=True, text=True, check=True).stdout
        runs[label] = json.loads(out.strip().splitlines()[-1])
    one, two = runs["1 process"], runs["2 ranks"]
    rate1, rate2 = GLOBAL_BATCH / one["step_s"], GLOBAL_BATCH / two["step_s"]
    share = two["allreduce_s"] / two["step_s"]
    share_diff = 1 - two["step_no_comm_s"] / two["step_s"]
    print("| run | step (ms) | samples/s | scaling |")
    print("|---|---|---|---|")
    print(f"| 1 process x 1 thread, batch 256 | {1e3 * one['step_s']:.2f} | {rate1:,.0f} | 1.00x |")
    print(f"| 2 ranks x 1 thread, 128 rows each | {1e3 * two['step_s']:.2f} | {rate2:,.0f} | {rate2 / rate1:.2f}x |")
    print(f"| 2 ranks, same steps without communication | {1e3 * two['step_no_comm_s']:.2f} | "
          f"{GLOBAL_BATCH / two['step_no_comm_s']:,.0f} | {one['step_s'] / two['step_no_comm_s']:.2f}x |")
    print(f"\nallreduce of {two['grad_bytes'] / 2**20:.2f} MiB alone: {1e3 * two['allreduce_s']:.2f} ms = "
          f"{100 * share:.1f}% of the step; step with vs without communication: {100 * share_diff:.1f}%")
    print("\noverlap probe (2 ranks: step arithmetic + allreduce of the gradient bytes, ms):")
    print("| MPI progress | sequential | overlapped (Iallreduce started first) |")
    print("|---|---|---|")
    for label, note in (("2 ranks", "polled (default)"), ("2 ranks, async progress", "MPIR_CVAR_ASYNC_PROGRESS=1")):
        r = runs[label]
        print(f"| {note} | {1e3 * r['sequential_s']:.2f} | {1e3 * r['overlapped_s']:.2f} |")
    (HERE / "distributed.json").write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
