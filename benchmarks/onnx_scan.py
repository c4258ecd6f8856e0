"""The W7 LSTM training step exported to ONNX (gb.scan as ONNX ``Loop``), run by ONNX Runtime.

    python benchmarks/onnx_scan.py            # 21 rounds
    python benchmarks/onnx_scan.py --quick    # 5 rounds

W7's shapes (issue 12): vocab 64, embedding 32, one LSTM layer of 128 (``gb.nn.lstm_cell``
in ``gb.scan``), sequence 32, batch 32, logits at every step, mean softmax-CE, full BPTT,
SGD lr 0.1, float32. Prints the export time, the ONNX model's size and node count, and
the median step time of graphbp's compiled step against ONNX Runtime running the export
(one thread each; interleaved rounds; indicative on a shared machine). Checks first that
both compute the same updated parameters.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

import graphbp as gb  # noqa: E402


def build(vocab=64, emb=32, hidden=128, seq=32, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    tokens = gb.input("tokens", (seq, batch), dtype="int64")
    targets = gb.input("targets", (seq, batch), dtype="int64")
    shapes = {"E": (vocab, emb), "w_ih": (4 * hidden, emb), "w_hh": (4 * hidden, hidden), "b": (4 * hidden,),
              "W": (hidden, vocab), "c": (vocab,)}
    p = {k: gb.param(k, (0.1 * rng.standard_normal(s)).astype(np.float32)) for k, s in shapes.items()}
    zeros = np.zeros((batch, hidden), np.float32)

    def step(hc, tok):
        h, c = gb.nn.lstm_cell(gb.take(p["E"], tok, axis=0), hc, p["w_ih"], p["w_hh"], p["b"])
        return (h, c), h @ p["W"] + p["c"]

    _, logits = gb.scan(step, (zeros, zeros), tokens)
    loss = gb.mean(gb.softmax_cross_entropy(logits, targets))
    program = gb.compile([tokens, targets], [loss], updates=gb.optim.SGD(lr=0.1).updates(loss, list(p.values())))
    feeds = {"tokens": rng.integers(0, vocab, size=(seq, batch)), "targets": rng.integers(0, vocab, size=(seq, batch))}
    return program, p, feeds


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    rounds = 5 if ap.parse_args().quick else 21
    program, params, feeds = build()
    start = time.perf_counter()
    model = gb.export_onnx(program)
    export_s = time.perf_counter() - start
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    before = {k: p.value.copy() for k, p in params.items()}
    got = dict(zip(names, sess.run(None, feeds)))
    program(feeds["tokens"], feeds["targets"])
    worst = max(float(np.max(np.abs(got[f"{k}.new"] - p.value))) for k, p in params.items())
    for k, p in params.items():  # restore, so every timed step starts from the same weights
        p.op.assign(before[k])
    ours, theirs = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        program(feeds["tokens"], feeds["targets"])
        t1 = time.perf_counter()
        sess.run(None, feeds)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    g, o = statistics.median(ours), statistics.median(theirs)
    print(f"export {export_s * 1e3:.0f} ms, {len(model.SerializeToString()) / 1024:.0f} KiB, "
          f"{len(model.graph.node)} top-level ONNX nodes ({sum(n.op_type == 'Loop' for n in model.graph.node)} Loop)")
    print(f"max |updated param difference| graphbp vs ONNX Runtime: {worst:.2e}")
    print(f"step (median of {rounds}): graphbp {g * 1e3:.1f} ms, ONNX Runtime {o * 1e3:.1f} ms (ratio {o / g:.2f})")


if __name__ == "__main__":
    main()
