"""``gb.train.Trainer``: compile a training step and an evaluation program, run epochs.

Training and evaluation forms. A model with dropout (or batch norm) computes differently
while training: the Trainer takes the training graph (``loss``, ``predict``) and an
evaluation graph over the same parameters (``eval_loss``, ``eval_predict``), built by
calling the user's model function twice (``model(x, training=True/False)``). Dropout in the
training graph reads an int64 scalar ``gb.input`` passed as ``dropout_key``: the Trainer
feeds it a fresh key every step, :func:`step_key` of ``dropout_seed`` and the step count,
so runs are reproducible and a resumed run draws the same masks. Batch norm's training form
yields running-statistics updates as ordinary ``(param, new_value)`` pairs: pass them as
``state_updates`` and the step applies them next to the optimiser's; its inference form
(reading the running statistics) goes in the evaluation graph.

The loop is deliberately plain (batches -> step program -> callbacks) so extensions hook
in rather than rewrite it: ``on_step`` callbacks run after every update with the global
step count (checkpointing every N steps), ``on_epoch`` callbacks after each epoch with
the epoch's metrics (logging, early stopping via ``trainer.stop_training = True``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..autodiff import grad
from ..data.batching import batches, num_batches
from ..errors import GraphError
from ..graph.node import Node
from ..graph.traverse import toposort
from ..io.training import resume_trainer, save_trainer
from ..ops.leaves import Input
from ..runtime import Program, compile
from .clip import gradient_norms
from .optim import Optimizer
from .progress import ProgressBar

Metric = Callable[[np.ndarray, np.ndarray], float]
StepCallback = Callable[["Trainer", int, dict[str, float]], None]
EpochCallback = Callable[["Trainer", int, dict[str, float]], None]


def step_key(seed: int, step: int) -> int:
    """The dropout key of training step ``step`` (updates applied before it) under ``seed``:
    a hash of both, so every step draws a fresh mask and a rerun or resumed run the same."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose largest logit is at the integer label."""
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


class Trainer:
    """Train ``params`` to minimise ``loss`` with ``optimizer``; evaluate on held-out data.

    Parameters
    ----------
    inputs : sequence of input nodes
        The feeds, in the order the data arrays are given (targets last, e.g. ``[x, t]``).
    loss : Node
        Scalar loss, a mean over the batch (so batch averages weight by batch size).
    params : sequence of param nodes
        What to train.
    optimizer : Optimizer
        ``gb.optim.SGD`` / ``gb.optim.Adam``; its updates are compiled into the step.
    predict : Node, optional
        Model output passed to ``metrics`` (e.g. logits), in the training graph.
    eval_loss, eval_predict : Node, optional
        The evaluation graph's loss and output, over the same parameters without dropout
        (batch norm in inference form). Default: ``loss`` and ``predict``, which is right only
        when the training graph has no dropout (a ``dropout_key`` requires ``eval_loss``).
    dropout_key : input node, optional
        The int64 scalar ``gb.input`` the training graph's dropout reads; fed
        :func:`step_key` ``(dropout_seed, step)`` at every step, never part of the data.
    dropout_seed : int
        Seed of the dropout keys.
    state_updates : sequence of (param, new_value) pairs, optional
        Updates of non-trained state applied by every step with the optimiser's (batch
        norm's running statistics from its training form).
    metrics : mapping of name -> callable(predict_array, target_array) -> float, optional
        Computed per batch on the last data array as target and averaged by batch size.
        Defaults to ``{"accuracy": accuracy}`` when ``predict`` is given and the last
        input is integer-typed (class labels).
    on_step, on_epoch : sequences of callables ``(trainer, index, logs)``
        Hooks run after every step (global step count, ``{"loss": ...}``) and after every
        epoch (epoch number from 1, the epoch's metrics).

    Attributes
    ----------
    step : int
        Updates applied by this trainer so far (continues across ``fit`` calls).
    epoch : int
        Epochs completed so far.
    history : list of dict
        One entry of logs per completed epoch.
    step_program, eval_program : Program
        The compiled training step (outputs, then updates in place) and evaluation.
    grad_norms : dict of str -> list of float
        With ``record_grad_norms``: parameter name -> its gradient norm at each step, in
        step order (continues across ``fit`` calls); empty otherwise.
    """

    def __init__(
        self,
        inputs: Sequence[Node],
        loss: Node,
        params: Sequence[Node],
        optimizer: Optimizer,
        *,
        predict: Node | None = None,
        metrics: Mapping[str, Metric] | None = None,
        on_step: Sequence[StepCallback] = (),
        on_epoch: Sequence[EpochCallback] = (),
        eval_loss: Node | None = None,
        eval_predict: Node | None = None,
        dropout_key: Node | None = None,
        dropout_seed: int = 0,
        state_updates: Sequence[tuple[Node, Node]] = (),
        record_grad_norms: bool = False,
    ) -> None:
        self.inputs = list(inputs)
        self.loss = loss
        self.params = list(params)
        self.optimizer = optimizer
        self.dropout_key = dropout_key
        self.dropout_seed = int(dropout_seed)
        self.eval_loss = loss if eval_loss is None else eval_loss
        train_outputs = [loss] + ([predict] if predict is not None else [])
        _check_forms(self.inputs, train_outputs, dropout_key, eval_loss)
        if predict is not None and eval_predict is None and dropout_key is not None:
            raise GraphError("Trainer: give eval_predict= (the model's output without dropout) with predict=")
        self.train_predict = predict
        predict = predict if eval_predict is None else eval_predict
        self.predict_node = predict
        if metrics is None:
            metrics = {}
            if predict is not None and self.inputs and self.inputs[-1].dtype.kind in "iu":
                metrics = {"accuracy": accuracy}
        if metrics and predict is None:
            raise GraphError("Trainer: metrics need a predict= node to compute them from")
        self.metrics = dict(metrics)
        self.on_step: list[StepCallback] = list(on_step)
        self.on_epoch: list[EpochCallback] = list(on_epoch)
        feeds = self.inputs + ([dropout_key] if dropout_key is not None else [])
        self.grad_norms: dict[str, list[float]] = {}
        self._n_train_outputs = len(train_outputs)
        if record_grad_norms:  # the gradients once, read by the optimiser and by the norms
            grads = grad(loss, self.params)
            updates = optimizer.apply_gradients(self.params, grads)
            self.grad_norms = {p.op.param_name: [] for p in self.params}
            if len(self.grad_norms) != len(self.params):
                raise GraphError("Trainer: record_grad_norms needs distinct parameter names")
            train_outputs = train_outputs + gradient_norms(grads)
        else:
            updates = optimizer.updates(loss, self.params)
        updates = updates + list(state_updates)
        self.step_program: Program = compile(feeds, train_outputs, updates=updates)
        eval_outputs = [self.eval_loss] + ([predict] if predict is not None else [])
        self.eval_program: Program = compile(self.inputs, eval_outputs)
        self._predict_program: Program | None = None
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.stop_training = False

    # -- training ---------------------------------------------------------------------
    def fit(
        self,
        data: Sequence[np.ndarray],
        *,
        epochs: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int | None = 0,
        drop_last: bool = False,
        validation: Sequence[np.ndarray] | None = None,
        progress: bool | None = None,
        verbose: bool = False,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 0,
        resume: bool = False,
    ) -> list[dict[str, float]]:
        """Run ``epochs`` passes over ``data`` (arrays aligned with ``inputs``).

        Epoch ``e`` (counted across calls) shuffles with seed ``seed + e``, so a run is
        reproducible yet each epoch sees a different order. Returns the epochs' logs:
        ``loss``, each metric, ``val_loss`` / ``val_<metric>`` when ``validation`` is
        given, and ``time`` (seconds).

        ``progress`` draws a bar on stderr (default: only on a terminal); ``verbose``
        prints one summary line per epoch to stdout.

        ``checkpoint`` with ``checkpoint_every=N`` saves parameters, optimizer state and the
        position every N steps (atomically, see ``gb.save_checkpoint``). With ``resume=True``
        an existing checkpoint is loaded first and ``epochs`` counts from the start of the
        run, so re-running the same call after a crash finishes the run exactly as an
        uninterrupted one would (the resumed epoch's logs cover only its remaining batches).
        """
        data = self._check_data(data)
        self.stop_training = False
        n_batches = num_batches(len(data[0]), batch_size, drop_last)
        skip = 0
        if checkpoint is not None and resume:  # graphbp/io/training.py
            skip = resume_trainer(self, checkpoint, n_batches)
            epochs = max(0, epochs - self.epoch)
        last = self.epoch + epochs
        first_log = len(self.history)
        for _ in range(epochs):
            e = self.epoch
            t0 = time.perf_counter()
            bar = ProgressBar(n_batches, f"epoch {e + 1}/{last}", enabled=progress)
            totals: dict[str, float] = {}
            seen = 0
            epoch_seed = None if seed is None else seed + e
            for i, batch in enumerate(batches(*data, batch_size=batch_size, shuffle=shuffle, seed=epoch_seed,
                                              drop_last=drop_last)):
                if skip:  # batches done before the checkpoint we resumed from
                    skip -= 1
                    continue
                key = () if self.dropout_key is None else (step_key(self.dropout_seed, self.step),)
                outs = self.step_program(*batch, *key)
                for name, norm in zip(self.grad_norms, outs[self._n_train_outputs:]):
                    self.grad_norms[name].append(float(norm))
                self.step += 1
                if checkpoint is not None and checkpoint_every and self.step % checkpoint_every == 0:
                    save_trainer(self, checkpoint, i + 1)
                logs = self._batch_logs(outs, batch)
                n = len(batch[0])
                seen += n
                for k, v in logs.items():
                    totals[k] = totals.get(k, 0.0) + v * n
                bar.update(loss=totals["loss"] / seen)
                for cb in self.on_step:
                    cb(self, self.step, logs)
            bar.close()
            epoch_logs = {k: v / max(seen, 1) for k, v in totals.items()}
            if validation is not None:
                val = self.evaluate(*validation, batch_size=max(batch_size, 256))
                epoch_logs.update({f"val_{k}": v for k, v in val.items()})
            epoch_logs["time"] = time.perf_counter() - t0
            self.epoch += 1
            self.history.append(epoch_logs)
            if verbose:
                print(format_logs(self.epoch, last, epoch_logs), flush=True)
            for cb in self.on_epoch:
                cb(self, self.epoch, epoch_logs)
            if self.stop_training:
                break
        return self.history[first_log:]

    def evaluate(self, *data: np.ndarray, batch_size: int = 256) -> dict[str, float]:
        """Loss and metrics over ``data`` without updating anything (averaged by batch size)."""
        data = self._check_data(data)
        totals: dict[str, float] = {}
        seen = 0
        for batch in batches(*data, batch_size=batch_size):
            logs = self._batch_logs(self.eval_program(*batch), batch)
            n = len(batch[0])
            seen += n
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + v * n
        return {k: v / max(seen, 1) for k, v in totals.items()}

    def predict(self, *features: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """The ``predict`` node's value for the inputs it depends on, concatenated over batches."""
        if self.predict_node is None:
            raise GraphError("Trainer.predict: the trainer was built without a predict= node")
        if self._predict_program is None:
            reached = {n for n in toposort([self.predict_node]) if isinstance(n.op, Input)}
            needed = [i for i in self.inputs if i in reached]
            self._predict_program = compile(needed, [self.predict_node])
        parts = [self._predict_program(*b)[0] for b in batches(*features, batch_size=batch_size)]
        return np.concatenate(parts, axis=0)

    # -- helpers -----------------------------------------------------------------------
    def _batch_logs(self, outs: list[np.ndarray], batch: tuple[np.ndarray, ...]) -> dict[str, float]:
        logs = {"loss": float(outs[0])}
        for name, fn in self.metrics.items():
            logs[name] = float(fn(outs[1], batch[-1]))
        return logs

    def _check_data(self, data: Sequence[Any]) -> tuple[np.ndarray, ...]:
        data = tuple(data)
        if len(data) != len(self.inputs):
            names = ", ".join(i.op.input_name for i in self.inputs)
            raise GraphError(f"Trainer: got {len(data)} data arrays for {len(self.inputs)} inputs ({names})")
        return data


def _check_forms(inputs: list[Node], train: list[Node], key: Node | None, eval_loss: Node | None) -> None:
    """Explain the dropout mistakes a training loop would otherwise make silently."""
    from ..ops.nn import DropoutMask

    order = toposort(train)
    if key is not None and (not isinstance(key.op, Input) or key.dtype.kind not in "iu" or key.ndim != 0):
        raise GraphError(f"Trainer: dropout_key must be an integer scalar gb.input, got {key.describe()}")
    extra = [n for n in order if isinstance(n.op, Input) and n not in inputs and n is not key]
    if extra:
        names = ", ".join(repr(n.op.input_name) for n in extra)
        raise GraphError(f"Trainer: the loss reads input(s) {names} that are not data inputs; a dropout "
                         "key is fed by the Trainer when passed as dropout_key= (a fresh key per step)")
    for n in order:
        if isinstance(n.op, DropoutMask) and not isinstance(n.inputs[0].op, Input):
            raise GraphError(f"Trainer: dropout built at {n.origin} has a constant key, so every step would "
                             "draw the same mask; use a gb.input('key', (), dtype='int64') and pass it as dropout_key=")
    if key is not None:
        if eval_loss is None:
            raise GraphError("Trainer: with dropout_key=, give eval_loss= (the loss built without dropout) "
                             "so evaluate() does not drop out")
        if key in set(toposort([eval_loss])):
            raise GraphError("Trainer: eval_loss reads the dropout key; build it without dropout")


def format_logs(epoch: int, epochs: int | None, logs: Mapping[str, float]) -> str:
    """``epoch 3  loss 0.1234  accuracy 97.10%  ...  0.21s``: fractions of 1 as percentages."""
    head = f"epoch {epoch:>3d}" + (f"/{epochs}" if epochs else "")
    parts = [head]
    for k, v in logs.items():
        if k == "time":
            continue
        parts.append(f"{k} {100 * v:6.2f}%" if k.endswith("accuracy") else f"{k} {v:.4f}")
    parts.append(f"{logs.get('time', 0.0):.2f}s")
    return "  ".join(parts)

