"""Before/after on the W4 chains: several copies of graphbp timed in one process, round by round.

On a shared machine, load moves absolute times by 10x between runs, so a change is judged
by interleaving: each round runs every tree's program and the hand-written reference once.
Each tree is a directory holding a ``graphbp`` package (``git worktree add`` or
``git archive REV graphbp | tar -x -C DIR``), imported under its own module name; a tree
may carry RuntimeOptions fields (``NAME=DIR:merged_block_elements=32768``).

``python benchmarks/chains_ab.py base=/tmp/old new=. [--kinds gelu,silu,softplus] [--rounds 21]``

Prints the NumPy calls per block of each program's merged loop and, per chain, the median
wall-clock and process CPU time of each implementation with its ratio to the reference
(CPU time leaves out the time other processes hold the core).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def load_tree(name: str, root: str) -> ModuleType:
    """``root/graphbp`` imported as the package ``name`` (its imports are relative)."""
    pkg = Path(root) / "graphbp"
    spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def calls_per_block(program) -> int:
    """NumPy calls in one iteration of the step's first blocked loop (0 if none)."""
    src = program.source().split("def step")[1]
    if "for i in range(" not in src:
        return 0
    loop = src.split("for i in range(")[1].split("\n    i, j =")[0]
    stmts = [ln.split("  #")[0] for ln in loop.splitlines()[2:] if "  #" in ln]
    return sum(len([c for c in st.split(";") if c.strip()]) for st in stmts)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", help="NAME=DIR[:option=value,...]")
    ap.add_argument("--kinds", default="gelu,silu,softplus")
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args(argv)
    trees: dict[str, tuple[ModuleType, dict]] = {}
    loaded: dict[str, ModuleType] = {}
    for k, spec in enumerate(args.trees):
        name, _, rest = spec.partition("=")
        root, _, opts = rest.partition(":")
        if root not in loaded:
            loaded[root] = load_tree(f"graphbp_tree{k}", root)
        trees[name] = (loaded[root], {o: int(v) for o, v in (kv.split("=") for kv in opts.split(",") if kv)})
    sys.modules["graphbp"] = next(iter(loaded.values()))  # what workloads/handwritten import
    import handwritten
    import workloads

    for kind in args.kinds.split(","):
        impls = {}
        for name, (gb, opts) in trees.items():
            workloads.gb = gb  # make_chain builds with the module global ``gb``
            compile_ = gb.compile
            if opts:
                gb.compile = lambda *a, _c=compile_, _o=opts, _gb=gb, **kw: _c(*a, runtime=_gb.RuntimeOptions(**_o), **kw)
            try:
                prog, feeds = workloads.make_chain(kind)
            finally:
                gb.compile = compile_
            prog(*feeds)
            print(f"{kind} {name}: {calls_per_block(prog)} calls per block")
            impls[name] = (prog, feeds)
        impls["hand"] = handwritten.make_chain(kind)
        wall: dict[str, list[float]] = {k: [] for k in impls}
        cpu: dict[str, list[float]] = {k: [] for k in impls}
        for _ in range(args.rounds):
            for k, (f, feeds) in impls.items():
                c0, t0 = time.process_time(), time.perf_counter()
                f(*feeds)
                wall[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
        for label, t in (("wall", wall), ("cpu", cpu)):
            med = {k: float(np.median(v)) * 1e3 for k, v in t.items()}
            print(f"{kind} {label:4s}", "  ".join(f"{k} {v:.2f} ms ({v / med['hand']:.3f})" for k, v in med.items()),
                  f"| load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
