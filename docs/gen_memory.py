"""Generate the diagrams of docs/memory.md: a small swish MLP compiled with
``remat="min_cut"``, whose joint and backward views draw the recomputed values as dashed cyan
``↻ recompute`` boxes. Run: ``python docs/gen_memory.py``. Deterministic: rerunning changes
nothing.
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import graphbp as gb  # noqa: E402
from graphbp.render import dot_available  # noqa: E402


def swish_mlp(layers: int = 2, width: int = 64, remat: str = "min_cut"):
    """``h = a * sigmoid(a)`` with ``a = h @ W``: the cut saves each ``a`` and recomputes the
    ``sigmoid`` and the product (two tensors a layer saved without rematerialisation, one with)."""
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, width), dtype="float64")
    ws = [gb.param(f"W{k}", rng.normal(size=(width, width)) / np.sqrt(width)) for k in range(layers)]
    h = x
    for k, w in enumerate(ws):
        with gb.scope(f"layer{k}"):
            a = h @ w
            h = a * gb.sigmoid(a)
    loss = gb.mean(h * h)
    return gb.compile([x], [loss, *gb.grad(loss, ws)], remat=remat)


def main() -> None:
    prog = swish_mlp()
    fmt = "svg" if dot_available() else "dot"
    for view in ("joint", "backward"):
        path = os.path.join(HERE, "memory", f"remat_{view}.{fmt}")
        gb.render(prog, path, view=view)
        print("wrote", os.path.relpath(path, os.path.dirname(HERE)))


if __name__ == "__main__":
    main()
