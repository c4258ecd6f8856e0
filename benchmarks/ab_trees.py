"""Step time of two source trees of graphbp, interleaved round by round in one run.

    python benchmarks/ab_trees.py OLD_TREE NEW_TREE [--workloads W1,W3] [--rounds 41] [--inner 50] [--cpu]

Two versions of the package cannot share a process, so each tree gets a worker process
(``PYTHONPATH=TREE``, one thread) that builds the workload's graphbp step and the
hand-written NumPy step of ``benchmarks/handwritten.py`` (W6: ``benchmarks/cnn.py``, W7:
``benchmarks/lstm.py``; the new tree's copy, for both).
The controller asks the workers for one timed round each in turn, rotating the order, so
load from other processes hits both trees alike; it prints medians and each tree's ratio to
the hand-written step timed in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker(workload: str, inner: int, cpu: bool) -> None:
    """Answer each line on stdin with the seconds per step of graphbp and hand-written
    (wall-clock, or with ``cpu`` the process's CPU time, which waiting for a core on a
    loaded machine does not add to)."""
    sys.path.insert(0, str(HERE))
    import handwritten
    import workloads

    if workload == "W6":
        import cnn

        impls = [cnn.make_graphbp(), cnn.make_handwritten()]
    elif workload == "W7":
        import lstm

        impls = [lstm.make_graphbp(), lstm.make_numpy()]
    else:
        impls = [workloads.make_mlp(workload), handwritten.make_mlp(workload)]
    for step, feeds in impls:
        for _ in range(5):
            step(*feeds)
    print("ready", flush=True)
    clock = time.process_time if cpu else time.perf_counter
    for _ in sys.stdin:
        times = []
        for step, feeds in impls:
            t0 = clock()
            for _ in range(inner):
                step(*feeds)
            times.append((clock() - t0) / inner)
        print(" ".join(map(repr, times)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--workloads", default="W1,W3")
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--inner", type=int, default=50)
    ap.add_argument("--cpu", action="store_true", help="time by process CPU time (for a loaded machine)")
    args = ap.parse_args()
    for workload in args.workloads.split(","):
        procs = []
        for tree in args.trees:
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
            env.update({k: "1" for k in THREAD_VARS})
            p = subprocess.Popen([sys.executable, __file__, "--worker", workload, str(args.inner), str(int(args.cpu))], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "ready"
            procs.append(p)
        gb_times: list[list[float]] = [[] for _ in procs]
        hand_times: list[list[float]] = [[] for _ in procs]
        for r in range(args.rounds):
            order = list(range(len(procs)))
            order = order[r % 2:] + order[: r % 2]
            for i in order:
                procs[i].stdin.write("go\n")
                procs[i].stdin.flush()
                g, h = map(float, procs[i].stdout.readline().split())
                gb_times[i].append(g)
                hand_times[i].append(h)
        for p in procs:
            p.stdin.close()
            p.wait()
        print(f"{workload}: {args.rounds} rounds x {args.inner} steps")
        for tree, g, h in zip(args.trees, gb_times, hand_times):
            ratios = [a / b for a, b in zip(g, h)]
            print(f"  {tree}: graphbp {statistics.median(g) * 1e3:.4f} ms, hand-written "
                  f"{statistics.median(h) * 1e3:.4f} ms, ratio of medians "
                  f"{statistics.median(g) / statistics.median(h):.3f}, median of ratios "
                  f"{statistics.median(ratios):.3f}")
        print(f"  new / old graphbp: {statistics.median(gb_times[1]) / statistics.median(gb_times[0]):.3f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
    else:
        main()
