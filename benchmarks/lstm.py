"""W7 lstm-charlm: one float32 SGD step of a character LSTM language model, in graphbp and its
references.

tokens (T=32, B=32) over a vocabulary of 64 -> embedding 32 -> one LSTM layer of 128 (PyTorch's
gate order i, f, g, o) -> logits (128 -> 64) at every step -> mean softmax cross-entropy over all
positions; full backpropagation through time; SGD lr 0.1.

Each ``make_*`` returns ``(step, feeds)`` like ``workloads.make_mlp``. References: a hand-written
NumPy BPTT (buffers preallocated, the input projection and every weight gradient as one matmul
over all steps, gate activations saved for the backward loop), PyTorch ``nn.LSTM`` and an
unrolled ``nn.LSTMCell`` loop, JAX jit with ``lax.scan`` (each when installed).

    python benchmarks/lstm.py probe IMPL      # build + compile + first step, fresh process (JSON)
    python benchmarks/lstm.py compile T       # graphbp build + grad + compile at sequence T (JSON)
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

LR = 0.1
T, B, V, E, H = 32, 32, 64, 32, 128


def w7_data(seed: int = 0, steps: int = T) -> dict:
    rng = np.random.default_rng(seed)

    def u(shape, fan):  # PyTorch's default init for LSTM and Linear: U(-1/sqrt(fan), 1/sqrt(fan))
        return rng.uniform(-fan ** -0.5, fan ** -0.5, shape).astype(np.float32)

    return {
        "emb": rng.standard_normal((V, E)).astype(np.float32),
        "w_ih": u((4 * H, E), H), "w_hh": u((4 * H, H), H), "b_ih": u((4 * H,), H), "b_hh": u((4 * H,), H),
        "w_out": u((V, H), H), "b_out": u((V,), H),
        "tokens": rng.integers(0, V, (steps, B)).astype(np.int64),
        "targets": rng.integers(0, V, (steps, B)).astype(np.int64),
    }


PARAMS = ("emb", "w_ih", "w_hh", "b_ih", "b_hh", "w_out", "b_out")


# ------------------------------------------------------------------------- graphbp
def build_graphbp(d: dict):
    """The W7 program: ``gb.take`` embedding, ``gb.nn.lstm_cell`` in a ``gb.scan``."""
    import graphbp as gb

    p = {k: gb.param(k, d[k]) for k in PARAMS}
    steps = d["tokens"].shape[0]
    tokens = gb.input("tokens", (steps, B), "int64")
    targets = gb.input("targets", (steps, B), "int64")
    x = gb.take(p["emb"], tokens, axis=0)  # (T, B, E)
    zeros = gb.constant(np.zeros((B, H), np.float32))

    def step(state, x_t):
        h, c = gb.nn.lstm_cell(x_t, state, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"])
        return (h, c), h

    _, hs = gb.scan(step, (zeros, zeros), x)
    logits = hs @ p["w_out"].T + p["b_out"]  # (T, B, V)
    loss = gb.mean(gb.softmax_cross_entropy(logits, targets))
    params = [p[k] for k in PARAMS]
    grads = gb.grad(loss, params)
    return gb.compile([tokens, targets], [loss], updates={q: q - LR * g for q, g in zip(params, grads)})


def make_graphbp(seed: int = 0):
    d = w7_data(seed)
    return build_graphbp(d), (d["tokens"], d["targets"])


# ------------------------------------------------------------------------- NumPy by hand
def make_numpy(seed: int = 0):
    d = w7_data(seed)
    emb, w_ih, w_hh, b_ih, b_hh, w_out, b_out = (d[k].copy() for k in PARAMS)
    f32 = np.float32
    n = T * B
    X = np.empty((T, B, E), f32)
    G = np.empty((T, B, 4 * H), f32)  # pre-activations, then the gate activations (saved)
    Hs = np.zeros((T + 1, B, H), f32)  # Hs[0] = h_0 = 0
    Cs = np.zeros((T + 1, B, H), f32)
    TC = np.empty((T, B, H), f32)  # tanh(c_t), saved
    L = np.empty((n, V), f32)
    P = np.empty((n, V), f32)
    col = np.empty((n, 1), f32)
    DZ = np.empty((T, B, 4 * H), f32)
    dHs = np.empty((n, H), f32)
    dh, dc, tmp, tmp2 = (np.empty((B, H), f32) for _ in range(4))
    rec = np.empty((B, 4 * H), f32)
    gW_out, gb_out = np.empty_like(w_out), np.empty_like(b_out)
    gW_hh, gW_ih, gbias = np.empty_like(w_hh), np.empty_like(w_ih), np.empty_like(b_ih)
    dX = np.empty((n, E), f32)
    gE = np.empty_like(emb)
    rows = np.arange(n)
    bias = np.empty_like(b_ih)

    def sigmoid(a):
        np.negative(a, a)
        np.exp(a, a)
        np.add(a, 1.0, a)
        np.reciprocal(a, a)

    def step(tokens, targets):
        np.take(emb, tokens, axis=0, out=X)
        np.add(b_ih, b_hh, bias)
        np.dot(X.reshape(n, E), w_ih.T, G.reshape(n, 4 * H))  # the input projection, all steps
        np.add(G, bias, G)
        for t in range(T):
            z = G[t]
            np.dot(Hs[t], w_hh.T, rec)
            np.add(z, rec, z)
            i, f, g, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
            sigmoid(z[:, :2 * H])
            np.tanh(g, g)
            sigmoid(o)
            c = Cs[t + 1]
            np.multiply(f, Cs[t], c)
            np.multiply(i, g, tmp)
            np.add(c, tmp, c)
            np.tanh(c, TC[t])
            np.multiply(o, TC[t], Hs[t + 1])
        hflat = Hs[1:].reshape(n, H)
        np.dot(hflat, w_out.T, L)
        np.add(L, b_out, L)
        np.maximum.reduce(L, 1, None, col, True)
        np.subtract(L, col, P)
        np.exp(P, P)
        picked = L[rows, targets.ravel()] - col[:, 0]
        np.add.reduce(P, 1, None, col, True)
        loss = float(np.mean(np.log(col[:, 0]) - picked))
        np.divide(P, col, P)
        P[rows, targets.ravel()] -= 1.0
        np.multiply(P, 1.0 / n, P)  # dL/dlogits
        np.dot(P.T, hflat, gW_out)
        np.add.reduce(P, 0, None, gb_out)
        np.dot(P, w_out, dHs)
        dHs3 = dHs.reshape(T, B, H)
        dh.fill(0.0)
        dc.fill(0.0)
        for t in range(T - 1, -1, -1):
            a = G[t]
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            dz = DZ[t]
            di, df, dg, do = dz[:, :H], dz[:, H:2 * H], dz[:, 2 * H:3 * H], dz[:, 3 * H:]
            np.add(dh, dHs3[t], dh)
            tc = TC[t]
            np.multiply(dh, tc, do)  # d o (before the sigmoid)
            np.subtract(1.0, o, tmp)
            np.multiply(tmp, o, tmp)
            np.multiply(do, tmp, do)
            np.multiply(tc, tc, tmp)  # dc += dh * o * (1 - tanh(c)^2)
            np.subtract(1.0, tmp, tmp)
            np.multiply(tmp, o, tmp)
            np.multiply(tmp, dh, tmp)
            np.add(dc, tmp, dc)
            np.multiply(dc, g, di)
            np.subtract(1.0, i, tmp)
            np.multiply(tmp, i, tmp)
            np.multiply(di, tmp, di)
            np.multiply(dc, Cs[t], df)
            np.subtract(1.0, f, tmp)
            np.multiply(tmp, f, tmp)
            np.multiply(df, tmp, df)
            np.multiply(dc, i, dg)
            np.multiply(g, g, tmp2)
            np.subtract(1.0, tmp2, tmp2)
            np.multiply(dg, tmp2, dg)
            np.multiply(dc, f, dc)
            np.dot(dz, w_hh, dh)
        dzf = DZ.reshape(n, 4 * H)
        np.dot(dzf.T, Hs[:-1].reshape(n, H), gW_hh)  # weight gradients: one matmul over all steps
        np.dot(dzf.T, X.reshape(n, E), gW_ih)
        np.add.reduce(dzf, 0, None, gbias)
        np.dot(dzf, w_ih, dX)
        gE.fill(0.0)
        np.add.at(gE, tokens.ravel(), dX)
        for w, gw in ((emb, gE), (w_ih, gW_ih), (w_hh, gW_hh), (b_ih, gbias), (b_hh, gbias),
                      (w_out, gW_out), (b_out, gb_out)):
            w -= np.float32(LR) * gw
        return loss

    return step, (d["tokens"], d["targets"])


# ------------------------------------------------------------------------- PyTorch, JAX
def _torch_model(d: dict, cells: bool):
    import torch

    torch.set_num_threads(1)
    emb = torch.nn.Embedding(V, E)
    lstm = torch.nn.LSTMCell(E, H) if cells else torch.nn.LSTM(E, H)
    out = torch.nn.Linear(H, V)
    suffix = "" if cells else "_l0"
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(d["emb"]))
        for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
            kind, part = k.split("_")
            getattr(lstm, ("weight_" if kind == "w" else "bias_") + part + suffix).copy_(torch.from_numpy(d[k]))
        out.weight.copy_(torch.from_numpy(d["w_out"]))
        out.bias.copy_(torch.from_numpy(d["b_out"]))
    params = [*emb.parameters(), *lstm.parameters(), *out.parameters()]
    opt = torch.optim.SGD(params, lr=LR)

    def step(tokens, targets):
        tok, tgt = torch.from_numpy(tokens), torch.from_numpy(targets)
        x = emb(tok)  # (T, B, E)
        if cells:
            h = c = torch.zeros(B, H)
            hs = []
            for t in range(x.shape[0]):
                h, c = lstm(x[t], (h, c))
                hs.append(h)
            hs = torch.stack(hs)
        else:
            hs, _ = lstm(x)
        loss = torch.nn.functional.cross_entropy(out(hs).reshape(-1, V), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    return step, (d["tokens"], d["targets"])


def make_torch(seed: int = 0):
    return _torch_model(w7_data(seed), cells=False)


def make_torch_cells(seed: int = 0):
    return _torch_model(w7_data(seed), cells=True)


def make_jax(seed: int = 0):
    import jax
    import jax.numpy as jnp

    d = w7_data(seed)
    ps = {k: jnp.asarray(d[k]) for k in PARAMS}

    def loss_fn(p, tokens, targets):
        x = p["emb"][tokens]

        def cell(state, x_t):
            h, c = state
            z = x_t @ p["w_ih"].T + p["b_ih"] + h @ p["w_hh"].T + p["b_hh"]
            i, f, g, o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((B, H), jnp.float32)
        _, hs = jax.lax.scan(cell, (zeros, zeros), x)
        logits = hs @ p["w_out"].T + p["b_out"]
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))

    @jax.jit
    def update(p, tokens, targets):
        loss, g = jax.value_and_grad(loss_fn)(p, tokens, targets)
        return loss, {k: p[k] - LR * g[k] for k in p}

    state = {"p": ps}

    def step(tokens, targets):
        loss, state["p"] = update(state["p"], tokens, targets)
        return float(loss)

    return step, (d["tokens"], d["targets"])


IMPLS = {"graphbp": make_graphbp, "numpy-hand": make_numpy, "torch nn.LSTM": make_torch,
         "torch cell loop": make_torch_cells, "jax scan": make_jax}


def load_impls(peers_on: bool) -> dict:
    impls = {"graphbp": make_graphbp(), "numpy-hand": make_numpy()}
    if peers_on:
        for name in ("torch nn.LSTM", "torch cell loop", "jax scan"):
            try:
                impls[name] = IMPLS[name]()
            except ImportError:
                pass
    return impls


# ------------------------------------------------------------------------- probes
def probe(impl: str) -> dict:
    """Seconds from building the model to the end of its first step (a fresh process; the
    framework is imported before the clock starts)."""
    for module in {"graphbp": ("graphbp",), "torch nn.LSTM": ("torch",), "torch cell loop": ("torch",),
                   "jax scan": ("jax", "jax.numpy")}.get(impl, ()):
        __import__(module)
    t0 = time.perf_counter()
    step, feeds = IMPLS[impl]()
    step(*feeds)
    return {"first_call": time.perf_counter() - t0}


def compile_probe(steps: int) -> dict:
    """graphbp build + grad + compile at sequence length ``steps``, and the first call."""
    import graphbp  # noqa: F401 - imports are not compile time

    d = w7_data(0, steps)
    t0 = time.perf_counter()
    prog = build_graphbp(d)
    t1 = time.perf_counter()
    prog(d["tokens"], d["targets"])
    return {"steps": steps, "build_compile": t1 - t0, "first_call": time.perf_counter() - t1}


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        print(json.dumps(probe(sys.argv[2])))
    elif sys.argv[1] == "compile":
        print(json.dumps(compile_probe(int(sys.argv[2]))))
    else:
        raise SystemExit(__doc__)


# ------------------------------------------------------------------------- run.py and report.py
FIRST_CALL_TARGET, COMPILE_RATIO_TARGET = 0.3, 1.2


def run(results: dict, repeats: int, peers_on: bool, interleaved) -> None:
    """The W7 rows of ``benchmarks/run.py``: step times (interleaved medians), first calls
    and graphbp's build + compile time at sequence 32 and 1,024 (fresh processes, median of 3)."""
    import statistics
    import subprocess

    med = interleaved(load_impls(peers_on), repeats, 3)
    results["times"]["W7"] = med
    print("W7 lstm-charlm: emb 32, LSTM 128, seq 32, batch 32, vocab 64, softmax-CE, SGD")
    for name, t in med.items():
        print(f"  {name:24s} {t * 1e3:9.3f} ms   ratio {t / med['numpy-hand']:5.2f}")

    def fresh(*argv: str) -> dict:
        out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    results["w7_probe"] = {}
    for impl in med:
        runs = [fresh("probe", impl) for _ in range(3)]
        results["w7_probe"][impl] = statistics.median(r["first_call"] for r in runs)
        print(f"  {impl:24s} first call {results['w7_probe'][impl]:.3f} s")
    results["w7_compile"] = []
    for steps in (32, 1024):
        runs = [fresh("compile", str(steps)) for _ in range(3)]
        r = {k: statistics.median(q[k] for q in runs) for k in ("build_compile", "first_call")}
        results["w7_compile"].append(dict(r, steps=steps))
        print(f"  graphbp seq {steps:5d}: build + grad + compile {r['build_compile']:.3f} s, "
              f"first call {r['first_call']:.3f} s")


def report(res: dict) -> list[str]:
    """docs/performance.md lines for W7's first calls and compile times."""
    lines: list[str] = []
    if res.get("w7_probe"):
        lines += ["", "## W7 first call (fresh process: build, compile or jit, first step; median of 3)", "",
                  "| implementation | first call (s) |", "|---|---|"]
        lines += [f"| {impl} | {t:.3f} |" for impl, t in res["w7_probe"].items()]
        g = res["w7_probe"].get("graphbp")
        if g is not None:
            lines += ["", f"Target for graphbp: <= {FIRST_CALL_TARGET} s "
                          f"({'met' if g <= FIRST_CALL_TARGET else 'missed'})."]
    if res.get("w7_compile"):
        lines += ["", "## W7 build + compile time against the sequence length (graphbp, fresh process, median of 3)",
                  "", "| sequence | build + grad + compile (s) | first call (s, runs every step) |", "|---|---|---|"]
        lines += [f"| {r['steps']} | {r['build_compile']:.3f} | {r['first_call']:.3f} |" for r in res["w7_compile"]]
        a, b = res["w7_compile"][0]["build_compile"], res["w7_compile"][-1]["build_compile"]
        lines += ["", f"Target: 1,024 within {COMPILE_RATIO_TARGET}x of 32: {b / a:.2f}x "
                      f"({'met' if b / a <= COMPILE_RATIO_TARGET else 'missed'})."]
    return lines
