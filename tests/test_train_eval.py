"""Training and evaluation forms of one model (issue 10, item 5).

The Trainer takes the training graph (dropout on, fed a fresh key per step drawn from a
seed) and an evaluation graph over the same parameters (dropout off); batch norm's running
statistics come in as ``state_updates`` pairs compiled into the step next to the optimiser's.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb

N = 64
X = np.ones((N, 16), np.float32)
T = np.zeros((N, 1), np.float32)


def _model():
    x = gb.input("x", (None, 16))
    t = gb.input("t", (None, 1))
    key = gb.input("key", (), dtype="int64")
    W = gb.param("W", np.full((16, 1), 0.5, np.float32))

    def loss_of(training: bool):
        h = gb.dropout(x, 0.5, key) if training else x
        return gb.mean(gb.square(h @ W - t))

    return x, t, key, W, loss_of(True), loss_of(False)


def test_dropout_trains_with_a_fresh_key_per_step_and_evaluates_without_dropout():
    x, t, key, W, train_loss, eval_loss = _model()
    losses = []
    trainer = gb.train.Trainer([x, t], train_loss, [W], gb.optim.SGD(1e-9), eval_loss=eval_loss,
                               dropout_key=key, dropout_seed=3,
                               on_step=[lambda tr, s, logs: losses.append(logs["loss"])])
    trainer.fit([X, T], epochs=2, batch_size=16, shuffle=False)
    assert len(losses) == 8 and len(set(losses)) == 8  # a new mask every step, same data
    expected = float(np.mean((X @ W.value - T) ** 2))
    assert trainer.evaluate(X, T)["loss"] == pytest.approx(expected, rel=1e-6)  # no dropout
    keys = [gb.train.step_key(3, s) for s in range(4)]
    assert len(set(keys)) == 4 and keys == [gb.train.step_key(3, s) for s in range(4)]  # reproducible


def test_misuse_of_dropout_in_the_trainer_is_explained():
    x, t, key, W, train_loss, eval_loss = _model()
    with pytest.raises(gb.GraphError, match="dropout_key"):
        gb.train.Trainer([x, t], train_loss, [W], gb.optim.SGD(0.1))  # the key is not data
    with pytest.raises(gb.GraphError, match="eval_loss"):
        gb.train.Trainer([x, t], train_loss, [W], gb.optim.SGD(0.1), dropout_key=key)  # eval would drop out
    with pytest.raises(gb.GraphError, match="same mask"):
        const = gb.mean(gb.square(gb.dropout(x, 0.5, key=7) @ W - t))
        gb.train.Trainer([x, t], const, [W], gb.optim.SGD(0.1), eval_loss=eval_loss)


def test_state_updates_run_in_the_step_and_the_eval_form_reads_them():
    x = gb.input("x", (None, 2))
    t = gb.input("t", (None, 2))
    W = gb.param("W", np.eye(2, dtype=np.float32))
    running = gb.param("running_mean", np.zeros(2, np.float32), trainable=False)
    h = x @ W
    batch_mean = gb.mean(h, axis=0)
    train_loss = gb.mean(gb.square(h - batch_mean - t))  # training form: batch statistics
    eval_loss = gb.mean(gb.square(h - running - t))  # inference form: running statistics
    stats = [(running, 0.5 * running + 0.5 * batch_mean)]
    trainer = gb.train.Trainer([x, t], train_loss, [W], gb.optim.SGD(1e-9), eval_loss=eval_loss,
                               state_updates=stats)
    data = np.full((8, 2), 4.0, np.float32)
    trainer.fit([data, np.zeros_like(data)], epochs=1, batch_size=8, shuffle=False)
    np.testing.assert_allclose(running.value, [2.0, 2.0], rtol=1e-5)
    assert trainer.evaluate(data, np.zeros_like(data))["loss"] == pytest.approx(4.0, rel=1e-5)


def test_batch_norm_training_and_inference_forms_through_the_trainer():
    from graphbp.ops.norm import batch_norm, batch_norm_train

    x = gb.input("x", (None, 4))
    t = gb.input("t", (None,), dtype="int64")
    W = gb.param("W", np.full((4, 3), 0.1, np.float32))
    gamma, beta = gb.param("gamma", np.ones(4, np.float32)), gb.param("beta", np.zeros(4, np.float32))
    rm = gb.param("running_mean", np.zeros(4, np.float32), trainable=False)
    rv = gb.param("running_var", np.ones(4, np.float32), trainable=False)
    train = batch_norm_train(x, gamma, beta, rm, rv)
    loss = gb.mean(gb.softmax_cross_entropy(train.output @ W, t))
    eval_loss = gb.mean(gb.softmax_cross_entropy(batch_norm(x, gamma, beta, rm, rv) @ W, t))
    trainer = gb.train.Trainer([x, t], loss, [W, gamma, beta], gb.optim.SGD(1e-9), eval_loss=eval_loss,
                               state_updates=train.updates)
    X = np.random.default_rng(0).normal(3.0, 2.0, (64, 4)).astype(np.float32)
    trainer.fit([X, np.arange(64) % 3], epochs=1, batch_size=16, shuffle=False)
    assert np.all(rm.value > 0.5) and not np.allclose(rv.value, 1.0)  # four steps of momentum 0.1
