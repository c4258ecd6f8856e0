"""The digits demo behind ``graphbp demo``: train the MLP of the README (or a small CNN,
``--model cnn``) and draw its graphs.

Kept out of ``cli.py`` so the CLI only parses arguments and the demo can be called (and
tested) as a function.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from .. import ops
from ..autodiff import grad
from ..data import load_digits, num_batches, random_shift, train_test_split
from ..graph.context import scope
from ..graph.node import Node
from ..runtime import Program, compile
from . import init
from .loop import Trainer, format_logs
from .optim import Adam, cosine_decay


@dataclass
class DigitsMLP:
    """A digits classifier built as nodes: the 64-128-10 ReLU MLP of the README, or the CNN."""

    x: Node
    t: Node
    params: list[Node]
    logits: Node
    loss: Node


def build_digits_mlp(hidden: int = 128, seed: int = 0) -> DigitsMLP:
    """``logits = relu(x @ W1 + b1) @ W2 + b2``; loss = mean softmax cross-entropy."""
    x = ops.input("x", (None, 64))
    t = ops.input("t", (None,), dtype="int64")
    W1 = ops.param("W1", init.he_normal((64, hidden), seed=seed))
    b1 = ops.param("b1", np.zeros(hidden, np.float32))
    W2 = ops.param("W2", init.glorot_uniform((hidden, 10), seed=seed + 1))
    b2 = ops.param("b2", np.zeros(10, np.float32))
    logits = ops.relu(x @ W1 + b1) @ W2 + b2
    loss = ops.mean(ops.softmax_cross_entropy(logits, t))
    return DigitsMLP(x, t, [W1, b1, W2, b2], logits, loss)


def build_digits_cnn(channels: tuple[int, int] = (16, 32), hidden: int = 64, seed: int = 0) -> DigitsMLP:
    """conv 3x3 + relu, conv 3x3 + relu, max-pool 2, dense + relu, dense, on (N, 1, 8, 8) images.

    Each layer is a scope, so the diagrams collapse to one box per layer."""
    c1, c2 = channels
    x = ops.input("x", (None, 1, 8, 8))
    t = ops.input("t", (None,), dtype="int64")
    with scope("conv1"):
        w1 = ops.param("w1", init.he_normal((c1, 1, 3, 3), seed=seed))
        b1 = ops.param("b1", np.zeros(c1, np.float32))
        h = ops.relu(ops.conv2d(x, w1, b1, padding=1))
    with scope("conv2"):
        w2 = ops.param("w2", init.he_normal((c2, c1, 3, 3), seed=seed + 1))
        b2 = ops.param("b2", np.zeros(c2, np.float32))
        h = ops.max_pool2d(ops.relu(ops.conv2d(h, w2, b2, padding=1)), 2)
    with scope("dense1"):
        w3 = ops.param("w3", init.he_normal((c2 * 16, hidden), seed=seed + 2))
        b3 = ops.param("b3", np.zeros(hidden, np.float32))
        h = ops.relu(ops.flatten(h) @ w3 + b3)
    with scope("dense2"):
        w4 = ops.param("w4", init.glorot_uniform((hidden, 10), seed=seed + 3))
        b4 = ops.param("b4", np.zeros(10, np.float32))
        logits = h @ w4 + b4
    loss = ops.mean(ops.softmax_cross_entropy(logits, t))
    return DigitsMLP(x, t, [w1, b1, w2, b2, w3, b3, w4, b4], logits, loss)


MODELS = {
    "mlp": "64-128-10 MLP, ReLU",
    "cnn": "CNN conv3x3(16)-relu-conv3x3(32)-relu-maxpool2-dense(64)-relu-dense(10)",
}
DEFAULT_EPOCHS = {"mlp": 40, "cnn": 6}
DEFAULT_WEIGHT_DECAY = {"mlp": 3e-2, "cnn": 1e-1}
CNN_SHIFTED_COPIES = 3
"""The CNN trains on the images plus this many copies shifted by up to one pixel."""


@dataclass
class DemoResult:
    test_accuracy: float
    train_seconds: float
    total_seconds: float
    history: list[dict[str, float]]
    diagrams: list[Path] = field(default_factory=list)
    svg: bool = False


def run_demo(
    *,
    model: str = "mlp",
    epochs: int | None = None,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float | None = None,
    seed: int = 0,
    out: str | Path = "graphbp-demo",
    progress: bool | None = None,
    stream: TextIO | None = None,
) -> DemoResult:
    """Train on 80% of the digits (stratified, seeded), report accuracy on the other 20%.

    Adam with decoupled weight decay, its learning rate following a cosine decay to zero
    over the run (a graph schedule of the step count, compiled into the step).

    ``model="cnn"`` trains :func:`build_digits_cnn` on the same split (the images in NCHW),
    the training images joined by copies shifted by up to one pixel.

    Prints one line per epoch and a summary to ``stream`` (stdout by default); the
    progress bar goes to stderr. Then writes the forward and gradient graph diagrams of
    the loss-and-gradients program into ``out`` (collapsed per layer for the CNN).
    """
    if model not in MODELS:
        raise ValueError(f"demo: model must be one of {sorted(MODELS)}, got {model!r}")
    epochs = DEFAULT_EPOCHS[model] if epochs is None else epochs
    weight_decay = DEFAULT_WEIGHT_DECAY[model] if weight_decay is None else weight_decay
    t_start = time.perf_counter()
    say = _printer(stream)
    X, y = load_digits(images=model == "cnn")
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_fraction=0.2, seed=seed, stratify=y)
    say(f"digits: {len(ytr)} training / {len(yte)} held-out images (8x8, 10 classes)")
    if model == "cnn":
        copies = [random_shift(Xtr, 1, seed=seed + k) for k in range(CNN_SHIFTED_COPIES)]
        Xtr, ytr = np.concatenate([Xtr, *copies]), np.concatenate([ytr] * (1 + CNN_SHIFTED_COPIES))
        say(f"augmented: + {CNN_SHIFTED_COPIES} copies shifted by up to one pixel ({len(ytr)} images)")
    net = build_digits_cnn(seed=seed) if model == "cnn" else build_digits_mlp(seed=seed)
    steps = epochs * num_batches(len(ytr), batch_size)
    say(f"model: {MODELS[model]}, softmax cross-entropy; Adam(lr={lr:g} cosine-decayed over "
        f"{steps} steps, weight_decay={weight_decay:g}), batch {batch_size}")
    opt = Adam(lr=cosine_decay(lr, max(steps, 1)), weight_decay=weight_decay)
    trainer = Trainer([net.x, net.t], net.loss, net.params, opt, predict=net.logits)
    trainer.on_epoch.append(lambda tr, e, logs: say(format_logs(e, epochs, logs)))
    t_train = time.perf_counter()
    trainer.fit((Xtr, ytr), epochs=epochs, batch_size=batch_size, shuffle=True, seed=seed,
                validation=(Xte, yte), progress=progress)
    train_seconds = time.perf_counter() - t_train
    acc = trainer.evaluate(Xte, yte)["accuracy"]
    say(f"test accuracy: {100 * acc:.2f}% on {len(yte)} held-out images; "
        f"training took {train_seconds:.2f}s ({trainer.step} steps)")

    grads = grad(net.loss, net.params)
    program = compile([net.x, net.t], [net.loss, *grads])
    paths, svg = write_diagrams(program, Path(out), collapse="scope" if model == "cnn" else None)
    for p in paths:
        say(f"wrote {p}")
    if not svg:
        say("Graphviz `dot` is not on PATH, so the diagrams are DOT files: install Graphviz "
            "(apt-get install graphviz / brew install graphviz) and run "
            f"`dot -Tsvg {paths[0]} -o {paths[0].with_suffix('.svg')}`")
    total = time.perf_counter() - t_start
    say(f"wall time: {total:.2f}s")
    return DemoResult(acc, train_seconds, total, trainer.history, paths, svg)


def write_diagrams(program: Program, out: Path, collapse: str | None = None) -> tuple[list[Path], bool]:
    """Write ``forward`` and ``gradient`` diagrams of ``program`` into ``out``.

    SVG when Graphviz's ``dot`` is on PATH, DOT text otherwise (``graphbp.render``
    picks the format from the suffix). Returns the paths and whether they are SVG.
    """
    from ..render import render  # the function; ``graphbp.render`` the attribute is it too

    out.mkdir(parents=True, exist_ok=True)
    svg = shutil.which("dot") is not None
    suffix = ".svg" if svg else ".dot"
    paths = []
    for name, view in (("forward", "forward"), ("gradient", "backward")):
        path = out / f"{name}{suffix}"
        render(program, path, view=view, collapse=collapse)
        paths.append(path)
    return paths, svg


def _printer(stream: TextIO | None):
    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)

    return say
