"""Time the joint view of residual MLPs (docs/explorer.md, "Large joint views").

Run: ``python benchmarks/render_large.py [BLOCKS ...]``. For each size it renders the joint
view as SVG with every box (``max_nodes=None``) and with the default budget, and the HTML
explorer's joint tab, and prints the boxes, whether the two-pass layout was used, the wall
time and the CPU time of the Graphviz processes (the figure that does not depend on load).
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import graphbp as gb  # noqa: E402
from graphbp.render.dot import scene_of  # noqa: E402


def residual(blocks: int, scoped: bool) -> gb.Program:
    x = gb.input("x", (None, 8))
    h, params = x, []
    for i in range(blocks):
        W = gb.param(f"W{i}", np.zeros((8, 8), np.float32))
        b = gb.param(f"b{i}", np.zeros(8, np.float32))
        params += [W, b]
        with gb.scope(f"block{i}") if scoped else contextlib.nullcontext():
            h = h + gb.tanh(h @ W + b)
    loss = gb.mean(gb.square(h))
    return gb.compile(inputs=[x], outputs=[loss, *gb.grad(loss, params)], optimize=False)


def timed(*call, **options) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    gb.render(*call, **options)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main(sizes: list[int]) -> None:
    print(f"{'model':28s} {'max_nodes':>9s} {'fmt':>4s} {'boxes':>6s} {'two-pass':>8s} {'wall s':>7s} {'graphviz cpu s':>14s}")
    with tempfile.TemporaryDirectory() as tmp:
        for blocks in sizes:
            for scoped in (False, True):
                prog = residual(blocks, scoped)
                for max_nodes, fmt in ((None, "svg"), (250, "svg"), (None, "html")):
                    scene = scene_of(prog, "joint", max_nodes=max_nodes)
                    path = os.path.join(tmp, f"g.{fmt}")
                    if fmt == "html":
                        wall, cpu = timed(prog, path, views=["joint"], equations=False, max_nodes=max_nodes)
                    else:
                        wall, cpu = timed(prog, path, "joint", max_nodes=max_nodes)
                    name = f"residual {blocks} blocks{' scoped' if scoped else ''}"
                    print(f"{name:28s} {str(max_nodes):>9s} {fmt:>4s} {len(scene):6d} {str(scene.layered()):>8s} "
                          f"{wall:7.1f} {cpu:14.1f}", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [120])
