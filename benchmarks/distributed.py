"""Data-parallel scaling of W2 (784-512-512-10 MLP, global batch 256) over MPI.

    python benchmarks/distributed.py [--steps 200]     # needs pip install 'graphbp[mpi]'

Every process is pinned to one BLAS thread (but in the last launch). Four launches,
about a minute in all on an idle machine:

* one process: the step on the whole batch of 256 rows, and on 128 rows (what each of
  two ranks computes: the smaller matmuls' own efficiency, without any second process);
* ``mpiexec -n 2``, ``mpiexec -bind-to core -n 2`` and ``mpiexec -n 2`` with the BLAS
  thread variables unset: on each rank, interleaved, the
  data-parallel step with blocking allreduces (2 MiB buckets, so one bucket for W2),
  with overlapped ones (``overlap=True``, 1 MiB buckets: two buckets, the first started
  while the first layer's gradient is computed), the same step with the one-process
  communicator (the arithmetic alone, both ranks computing at once), and the allreduce
  of a gradient-sized buffer alone.

Medians of per-step times over rounds of 5 calls, the ranks starting each round together;
the slowest rank's median counts. It prints the table of docs/distributed.md with the
load average it ran under (the machine may be shared) and writes benchmarks/distributed.json.
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
OVERLAP_BUCKET_BYTES = 1 << 20


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
    d = data("W2")

    def program(c=None, **options):
        x, t, params, loss = mlp_graph("W2", data("W2"))
        opt = gb.optim.SGD(0.01)
        if c is not None:
            opt = gb.distributed.data_parallel(opt, c, **options)
        return gb.compile([x, t], [loss], updates=opt.updates(loss, params))

    if comm is None:
        whole, half = program(), program()
        return {"ranks": 1, **_median_steps({
            "step_s": lambda: whole(d["x"], d["t"]),
            "step_half_s": lambda: half(d["x"][:GLOBAL_BATCH // 2], d["t"][:GLOBAL_BATCH // 2]),
        }, steps)}
    per = GLOBAL_BATCH // comm.size
    feeds = (d["x"][comm.rank * per:(comm.rank + 1) * per], d["t"][comm.rank * per:(comm.rank + 1) * per])
    blocking = program(comm)
    overlapped = program(comm, overlap=True, bucket_bytes=OVERLAP_BUCKET_BYTES)
    no_comm = program(gb.distributed.single_process())
    grad_bytes = sum(int(np.prod(a.shape)) * 4 for a in d["Ws"] + d["bs"])
    buf = np.ones(grad_bytes // 4, np.float32)
    out = np.empty_like(buf)
    result = {"ranks": comm.size, "grad_bytes": grad_bytes, **_median_steps({
        "step_s": lambda: blocking(*feeds),
        "step_overlap_s": lambda: overlapped(*feeds),
        "step_no_comm_s": lambda: no_comm(*feeds),
        "allreduce_s": lambda: comm.allreduce_mean(buf, out),
        # MPI's own blocking Allreduce (no signature check, no deadline) for comparison
        "mpi_allreduce_s": lambda: comm._comm.Allreduce(buf, out, op=comm._mpi.SUM),
    }, steps, comm)}
    gathered = comm._comm.allgather(result)  # the slowest rank sets the pace
    if comm.rank != 0:
        return {}
    return {k: max(r[k] for r in gathered) if k.endswith("_s") else v for k, v in result.items()}


def _table(runs: dict, load: tuple[float, float]) -> str:
    one = runs["1 process"]
    rate1 = GLOBAL_BATCH / one["step_s"]
    lines = [f"W2, global batch {GLOBAL_BATCH}, 1 BLAS thread per process; load average "
             f"{load[0]:.2f} before, {load[1]:.2f} after ({os.cpu_count()} cores)", "",
             "| run | step (ms) | samples/s | scaling | allreduce share |", "|---|---|---|---|---|",
             f"| 1 process, batch 256 | {1e3 * one['step_s']:.2f} | {rate1:,.0f} | 1.00x | |",
             f"| 1 process, batch 128 (one rank's share, alone) | {1e3 * one['step_half_s']:.2f} | "
             f"{GLOBAL_BATCH / 2 / one['step_half_s']:,.0f} | | |"]
    for label in ("2 ranks", "2 ranks, -bind-to core", "2 ranks, BLAS threads not pinned"):
        r = runs[label]
        for key, what in (("step_s", "blocking allreduce"), ("step_overlap_s", "overlapped allreduce"),
                          ("step_no_comm_s", "no communication")):
            rate = GLOBAL_BATCH / r[key]
            share = "" if key == "step_no_comm_s" else f"{100 * (1 - r['step_no_comm_s'] / r[key]):.0f}%"
            lines.append(f"| {label}, {what} | {1e3 * r[key]:.2f} | {rate:,.0f} | {rate / rate1:.2f}x | {share} |")
    r = runs["2 ranks"]
    lines += ["", f"allreduce of {r['grad_bytes'] / 2**20:.2f} MiB alone: {1e3 * r['allreduce_s']:.2f} ms "
              f"({1e3 * runs['2 ranks, -bind-to core']['allreduce_s']:.2f} ms bound to cores; MPI's blocking "
              f"Allreduce {1e3 * r['mpi_allreduce_s']:.2f} ms); "
              f"one rank's 128 rows take {r['step_no_comm_s'] / one['step_half_s']:.2f}x as long with "
              "the other rank computing at the same time as alone",
              "allreduce share = 1 - (step without communication) / step"]
    return "\n".join(lines)


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
    beside = Path(sys.executable).with_name("mpiexec")
    mpiexec = str(beside) if beside.exists() else "mpiexec"
    load_before = os.getloadavg()[0]
    runs = {}
    unpinned = {k: v for k, v in env.items() if k not in THREAD_VARS}  # BLAS picks its thread count
    few = [*me[:-1], str(max(20, args.steps // 5))]  # unpinned threads oversubscribe: ~10x slower steps
    for label, cmd, run_env in (("1 process", me, env), ("2 ranks", [mpiexec, "-n", "2", *me], env),
                                ("2 ranks, -bind-to core", [mpiexec, "-bind-to", "core", "-n", "2", *me], env),
                                ("2 ranks, BLAS threads not pinned", [mpiexec, "-n", "2", *few], unpinned)):
        out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, check=True).stdout
        runs[label] = json.loads(out.strip().splitlines()[-1])
    load = (load_before, os.getloadavg()[0])
    print(_table(runs, load))
    (HERE / "distributed.json").write_text(json.dumps({"load_average": load, **runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
