"""The character-level LSTM language model behind ``graphbp demo --model lstm``.

embedding -> one LSTM layer run by ``gb.scan`` -> linear -> softmax cross-entropy at every
position, trained by truncated backpropagation through time: the bundled quotations are cut
into contiguous streams (one per batch row, :func:`graphbp.data.bptt_windows`), each step
trains on a window of ``T`` characters, and the final ``(h, c)`` of a window is fed back as
the initial carry of the next (an input of the step program, not a parameter, so gradients
stop at the window's edge while the state runs on). Gradients are clipped by their global
norm and Adam applies them. At the end the held-out cross-entropy in bits per character is
set beside that of a bigram count model on the same split, and a few samples are drawn.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from .. import nn, ops
from ..autodiff import grad
from ..data.text import CharVocab, bptt_windows, load_text, num_windows, split_ids, streams
from ..graph.context import scope
from ..graph.node import Node
from ..runtime import Program, compile
from .clip import gradient_norms
from .optim import Adam, cosine_decay
from .progress import ProgressBar


@dataclass
class CharLSTM:
    """The model as nodes. ``x``/``y`` are ``(B, T)`` int64 ids and next ids (batch and time
    may be any size), ``h0``/``c0`` the ``(B, H)`` initial carry, ``h``/``c`` the final one,
    ``logits`` ``(B, T, V)``, ``loss`` the mean cross-entropy in nats."""

    x: Node
    y: Node
    h0: Node
    c0: Node
    params: list[Node]
    logits: Node
    loss: Node
    h: Node
    c: Node

    @property
    def hidden(self) -> int:
        return int(self.h0.shape[1])


def build_char_lstm(vocab_size: int, embed: int = 32, hidden: int = 128, seed: int = 0) -> CharLSTM:
    """Build the model in PyTorch's layouts (``nn.Embedding``, ``nn.LSTM``, ``nn.Linear``).

    LSTM weights are uniform in ``±1/sqrt(H)`` as PyTorch draws them, with the forget
    gate's bias at 1 (a common start that lets the cell state run on early in training);
    the input projection ``x_t W_ih^T + b`` of every step is one matmul before the scan.
    """
    rng = np.random.default_rng(seed)
    s = 1.0 / math.sqrt(hidden)
    f32 = np.float32
    x = ops.input("x", (None, None), "int64")
    y = ops.input("y", (None, None), "int64")
    h0 = ops.input("h0", (None, hidden))
    c0 = ops.input("c0", (None, hidden))
    with scope("embedding"):
        table = ops.param("embedding", rng.normal(0.0, 1.0, (vocab_size, embed)).astype(f32))
        e = nn.embedding(table, ops.transpose(x))  # (T, B, E): time first, for the scan
    with scope("lstm"):
        w_ih = ops.param("w_ih", rng.uniform(-s, s, (4 * hidden, embed)).astype(f32))
        w_hh = ops.param("w_hh", rng.uniform(-s, s, (4 * hidden, hidden)).astype(f32))
        bias = np.zeros(4 * hidden, f32)
        bias[hidden:2 * hidden] = 1.0  # gates i, f, g, o: forget gate open at the start
        b = ops.param("b", bias)
        xp = nn.input_projection(e, w_ih, b)

        def step(carry, xp_t):
            h, c = nn.lstm_cell(xp_t, carry, w_ih, w_hh, project=False)
            return (h, c), h

        (h, c), hs = ops.scan(step, (h0, c0), xp)  # hs: (T, B, H)
    with scope("output"):
        w_o = ops.param("w_out", rng.uniform(-s, s, (hidden, vocab_size)).astype(f32))
        b_o = ops.param("b_out", np.zeros(vocab_size, f32))
        logits_tb = hs @ w_o + b_o  # (T, B, V)
        loss = ops.mean(ops.softmax_cross_entropy(logits_tb, ops.transpose(y)))
        logits = ops.transpose(logits_tb, (1, 0, 2))
    return CharLSTM(x, y, h0, c0, [table, w_ih, w_hh, b, w_o, b_o], logits, loss, h, c)


def bigram_bits(train_ids: np.ndarray, x: np.ndarray, y: np.ndarray, vocab_size: int, alpha: float = 0.1) -> float:
    """Held-out cross-entropy (bits per character) of a bigram count model: ``p(b | a)``
    from counts of the pairs in ``train_ids`` plus ``alpha`` (additive smoothing), scored
    on the pairs ``x -> y``."""
    counts = np.full((vocab_size, vocab_size), alpha)
    np.add.at(counts, (train_ids[:-1], train_ids[1:]), 1.0)
    logp = np.log2(counts / counts.sum(axis=1, keepdims=True))
    return float(-np.mean(logp[x.reshape(-1), y.reshape(-1)]))


@dataclass
class CharLMResult:
    test_bits: float
    bigram_bits: float
    train_seconds: float
    total_seconds: float
    history: list[dict[str, float]]
    samples: list[str]
    grad_norms: dict[str, list[float]]
    diagrams: list[Path] = field(default_factory=list)
    svg: bool = False


class CharLM:
    """Compiled programs over one :class:`CharLSTM`: the truncated-BPTT training step, a
    forward pass for held-out scoring, and a one-character step for sampling."""

    def __init__(self, model: CharLSTM, optimizer: Adam, *, record_grad_norms: bool = True) -> None:
        self.model = m = model
        grads = grad(m.loss, m.params)
        self.names = [p.op.param_name for p in m.params]
        norms = gradient_norms(grads) if record_grad_norms else []
        self.step_program: Program = compile(
            [m.x, m.y, m.h0, m.c0], [m.loss, m.h, m.c, *norms],
            updates=optimizer.apply_gradients(m.params, grads))
        self.eval_program: Program = compile([m.x, m.y, m.h0, m.c0], [m.loss, m.h, m.c])
        self.sample_program: Program = compile([m.x, m.h0, m.c0], [m.logits, m.h, m.c])
        self.grad_norms: dict[str, list[float]] = {n: [] for n in self.names} if record_grad_norms else {}

    def zeros(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        z = np.zeros((batch, self.model.hidden), np.float32)
        return z, z.copy()

    def train_epoch(self, ids: np.ndarray, batch_size: int, window: int, bar: ProgressBar) -> float:
        """One pass over ``ids`` with the carry handed from window to window; mean loss (nats)."""
        h, c = self.zeros(batch_size)
        total = 0.0
        n = 0
        for x, y in bptt_windows(ids, batch_size, window, drop_last=True):
            loss, h, c, *norms = self.step_program(x, y, h, c)
            for name, v in zip(self.names, norms):
                self.grad_norms[name].append(float(v))
            total += float(loss)
            n += 1
            bar.update(bits_per_char=total / n / math.log(2))
        return total / max(n, 1)

    def evaluate(self, x: np.ndarray, y: np.ndarray, window: int) -> float:
        """Mean cross-entropy (nats) of ``y`` given ``x`` (``(B, L)`` streams), the carry
        passed through windows of ``window`` steps."""
        h, c = self.zeros(x.shape[0])
        total = 0.0
        for s in range(0, x.shape[1], window):
            loss, h, c = self.eval_program(x[:, s:s + window], y[:, s:s + window], h, c)
            total += float(loss) * x[:, s:s + window].size
        return total / x.size

    def sample(self, vocab: CharVocab, prompt: str, length: int, temperature: float, seed: int) -> str:
        """``length`` characters after ``prompt``, each drawn from ``softmax(logits / temperature)``."""
        rng = np.random.default_rng(seed)
        h, c = self.zeros(1)
        ids = vocab.encode(prompt)
        logits, h, c = self.sample_program(ids[None, :], h, c)
        out = []
        for _ in range(length):
            z = logits[0, -1].astype(np.float64) / temperature
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(vocab.chars[nxt])
            logits, h, c = self.sample_program(np.array([[nxt]], np.int64), h, c)
        return "".join(out)


def write_scan_bodies(program: Program, out: Path, suffix: str) -> list[Path]:
    """Draw the body of the forward ``scan`` (one LSTM step) and of the reverse ``scan`` of
    its gradient (the step's pullback) as ``scan_body`` and ``reverse_scan_body``."""
    from ..ops.loop import Scan
    from ..render import render

    part = program.partition
    paths = []
    for name, reverse, view in (("scan_body", False, "forward"), ("reverse_scan_body", True, "backward")):
        node = next(n for n in [*part.forward, *part.backward] if isinstance(n.op, Scan) and n.op.reverse is reverse)
        path = out / f"{name}{suffix}"
        render(list(node.op.subgraphs()[0].outputs), path, view=view)  # the pullback's nodes are gradient nodes
        paths.append(path)
    return paths


def run_charlm_demo(
    *,
    epochs: int = 4,
    batch_size: int = 32,
    window: int = 64,
    hidden: int = 128,
    embed: int = 32,
    lr: float = 1e-2,
    clip_norm: float = 1.0,
    corpus_chars: int | None = None,
    samples: int = 3,
    sample_length: int = 160,
    temperature: float = 0.8,
    seed: int = 0,
    out: str | Path = "graphbp-demo",
    progress: bool | None = None,
    stream: TextIO | None = None,
) -> CharLMResult:
    """Train the character LSTM on the first 90% of the quotations, score the last 10%.

    ``corpus_chars`` cuts the corpus (tests run a tiny configuration). Prints the setup,
    one line per epoch (mean training loss in bits per character, mean gradient norm before
    clipping and the share of steps clipped), the held-out figures of the LSTM and of the
    bigram count model, the samples, then writes the diagrams of the loss-and-gradients
    program: the forward view shows the ``scan`` and its body, the gradient view the
    reverse ``scan`` and the pullback body.
    """
    from .demo import _printer, write_diagrams

    t_start, cpu_start = time.perf_counter(), time.process_time()
    say = _printer(stream)
    text = load_text("fortunes")
    if corpus_chars is not None:
        text = text[:corpus_chars]
    vocab = CharVocab.from_text(text)
    train_ids, test_ids = split_ids(vocab.encode(text), 0.1)
    per_epoch = num_windows(len(train_ids), batch_size, window, drop_last=True)
    if per_epoch == 0:
        raise ValueError(f"demo: {len(train_ids)} training characters are too few for {batch_size} rows of "
                         f"{window}-character windows")
    steps = epochs * per_epoch
    say(f"fortunes: {len(train_ids):,} training / {len(test_ids):,} held-out characters, {vocab.size} distinct")
    say(f"model: embedding({embed}) -> LSTM({hidden}) via gb.scan -> linear({vocab.size}) -> softmax-CE; "
        f"truncated BPTT over {window}-character windows, {batch_size} streams, carry passed on; "
        f"Adam(lr={lr:g} cosine-decayed over {steps} steps), gradients clipped to global norm {clip_norm:g}")
    model = build_char_lstm(vocab.size, embed=embed, hidden=hidden, seed=seed)
    lm = CharLM(model, Adam(lr=cosine_decay(lr, max(steps, 1)), clip_norm=clip_norm))
    history: list[dict[str, float]] = []
    t_train = time.perf_counter()
    for e in range(epochs):
        t0 = time.perf_counter()
        first = len(lm.grad_norms[lm.names[0]])
        bar = ProgressBar(per_epoch, f"epoch {e + 1}/{epochs}", enabled=progress)
        loss = lm.train_epoch(train_ids, batch_size, window, bar)
        bar.close()
        norms = np.sqrt(sum(np.square(v[first:]) for v in lm.grad_norms.values()))
        logs = {"loss_bits": loss / math.log(2), "grad_norm": float(np.mean(norms)),
                "clipped": float(np.mean(norms > clip_norm)), "time": time.perf_counter() - t0}
        history.append(logs)
        say(f"epoch {e + 1:>3d}/{epochs}  train {logs['loss_bits']:.3f} bits/char  grad norm "
            f"{logs['grad_norm']:.2f} (clipped {100 * logs['clipped']:.0f}% of steps)  {logs['time']:.2f}s")
    train_seconds = time.perf_counter() - t_train

    x_te, y_te = streams(test_ids, min(16, max(1, (len(test_ids) - 1) // window)))
    test_bits = lm.evaluate(x_te, y_te, 4 * window) / math.log(2)
    bigram = bigram_bits(train_ids, x_te, y_te, vocab.size)
    say(f"held-out cross-entropy: LSTM {test_bits:.3f} bits/char, bigram counts {bigram:.3f} bits/char "
        f"({x_te.size:,} characters); training took {train_seconds:.2f}s ({steps} steps)")
    drawn = [lm.sample(vocab, "\n\n", sample_length, temperature, seed + k) for k in range(samples)]
    for k, s in enumerate(drawn):
        say(f"sample {k + 1} (temperature {temperature:g}):\n{s}\n")

    program = compile([model.x, model.y, model.h0, model.c0], [model.loss, *grad(model.loss, model.params)])
    paths, svg = write_diagrams(program, Path(out))
    paths += write_scan_bodies(program, Path(out), ".svg" if svg else ".dot")
    for p in paths:
        say(f"wrote {p}")
    if not svg:
        say("Graphviz `dot` is not on PATH, so the diagrams are DOT files: install Graphviz "
            f"and run `dot -Tsvg {paths[0]} -o {paths[0].with_suffix('.svg')}`")
    total = time.perf_counter() - t_start
    say(f"wall time: {total:.2f}s (CPU time of this process: {time.process_time() - cpu_start:.2f}s)")
    return CharLMResult(test_bits, bigram, train_seconds, total, history, drawn, lm.grad_norms, paths, svg)
