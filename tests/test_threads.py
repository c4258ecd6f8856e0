"""A Program called from several threads at once returns each call's own results.

Guards the executor (which may reuse buffers between calls): every concurrent result must
equal the result of the same call made alone.
"""

from __future__ import annotations

import threading

import numpy as np

import graphbp as gb


def test_concurrent_calls_do_not_mix_results():
    x = gb.input("x", (None, 16), dtype="float64")
    W = gb.param("W", np.random.default_rng(0).normal(size=(16, 16)))
    h = x
    for _ in range(6):
        h = gb.tanh(h @ W) + h
    loss = gb.sum(h * h)
    prog = gb.compile([x], [h, loss, gb.grad(loss, x)])
    feeds = [np.random.default_rng(k).normal(size=(4 + k % 3, 16)) for k in range(8)]
    expected = [prog(f) for f in feeds]
    errors: list[str] = []
    start = threading.Barrier(4)

    def worker(tid: int) -> None:
        start.wait()
        for rep in range(40):
            k = (tid + rep) % len(feeds)
            got = prog(feeds[k])
            if any(a.tobytes() != b.tobytes() for a, b in zip(got, expected[k])):
                errors.append(f"thread {tid} call {rep} feed {k}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def test_concurrent_training_steps_apply_every_update_once():
    x = gb.input("x", (None, 2), dtype="float64")
    w = gb.param("w", np.zeros(2))
    step = gb.compile([x], [gb.sum(w)], updates=[(w, w + gb.mean(x, axis=0))])
    threads = [threading.Thread(target=lambda: [step(np.ones((3, 2))) for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.value.tolist() == [200.0, 200.0]  # calls are serialised: no lost update
