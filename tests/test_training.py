"""Training end to end: the examples, the Trainer loop, and every optimiser lowering a loss."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import graphbp as gb

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def digits():
    X, y = gb.data.load_digits()
    return gb.data.train_test_split(X, y, test_fraction=0.2, seed=0, stratify=y)


def _mlp(seed=0, hidden=64):
    x = gb.input("x", (None, 64))
    t = gb.input("t", (None,), dtype="int64")
    W1 = gb.param("W1", gb.init.he_normal((64, hidden), seed=seed))
    b1 = gb.param("b1", np.zeros(hidden, np.float32))
    W2 = gb.param("W2", gb.init.glorot_uniform((hidden, 10), seed=seed + 1))
    b2 = gb.param("b2", np.zeros(10, np.float32))
    logits = gb.relu(x @ W1 + b1) @ W2 + b2
    loss = gb.mean(gb.softmax_cross_entropy(logits, t))
    return x, t, [W1, b1, W2, b2], logits, loss


def test_xor_is_solved():
    pred = load_example("xor_tanh").main(steps=400)
    np.testing.assert_array_equal(np.sign(pred), [[-1], [1], [1], [-1]])
    assert np.all(np.abs(pred) > 0.9)


def test_digits_accuracy_above_90_percent_in_a_short_run(digits):
    Xtr, Xte, ytr, yte = digits
    x, t, params, logits, loss = _mlp()
    trainer = gb.train.Trainer([x, t], loss, params, gb.optim.Adam(lr=3e-3), predict=logits)
    history = trainer.fit((Xtr, ytr), epochs=3, batch_size=32, seed=0, validation=(Xte, yte))
    assert history[-1]["val_accuracy"] > 0.90
    assert trainer.evaluate(Xte, yte)["accuracy"] == pytest.approx(history[-1]["val_accuracy"])
    assert history[-1]["loss"] < history[0]["loss"]
    pred = trainer.predict(Xte)
    assert pred.shape == (len(yte), 10)
    assert np.mean(pred.argmax(1) == yte) == pytest.approx(history[-1]["val_accuracy"])


def test_mlp_digits_example_trains(capsys):
    acc = load_example("mlp_digits").main(epochs=8)
    assert acc > 0.90
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda: gb.optim.SGD(0.1),
        lambda: gb.optim.SGD(0.05, momentum=0.9),
        lambda: gb.optim.SGD(0.05, momentum=0.9, nesterov=True),
        lambda: gb.optim.Adam(lr=5e-3),
        lambda: gb.optim.Adam(lr=5e-3, weight_decay=1e-2, clip_norm=5.0),
    ],
    ids=["sgd", "momentum", "nesterov", "adam", "adamw-clipped"],
)
def test_loss_decreases(make_opt, digits):
    Xtr, _, ytr, _ = digits
    X, y = Xtr[:512], ytr[:512]
    x, t, params, logits, loss = _mlp(seed=3)
    evaluate = gb.compile([x, t], [loss])
    before = float(evaluate(X, y)[0])
    step = gb.compile([x, t], [loss], updates=make_opt().updates(loss, params))
    for epoch in range(3):
        for xb, tb in gb.data.batches(X, y, batch_size=32, shuffle=True, seed=epoch):
            step(xb, tb)
    after = float(evaluate(X, y)[0])
    assert after < 0.5 * before, (before, after)


def test_regression_example_beats_the_mean():
    mod = load_example("regression_mse")
    X, Y = mod.dataset(128, seed=100)
    mse = mod.main(epochs=60)
    assert mse < 0.1 * float(np.mean((Y - Y.mean()) ** 2))


@pytest.mark.parametrize("name", ["mlp_digits", "xor_tanh", "regression_mse"])
def test_example_build_returns_a_runnable_program(name):
    program = load_example(name).build()
    assert isinstance(program, gb.Program)
    assert len(program.backward) > 0  # gradients were compiled in
    feeds = [np.zeros((2,) + tuple(d for d in i.shape[1:]), i.dtype) for i in program.inputs]
    outs = program(*feeds)
    assert np.ndim(outs[0]) == 0 and np.isfinite(outs[0])


def test_trainer_hooks_counters_and_early_stop(digits):
    Xtr, _, ytr, _ = digits
    X, y = Xtr[:100], ytr[:100]
    x, t, params, logits, loss = _mlp(hidden=16)
    steps, epochs = [], []

    def on_epoch(trainer, epoch, logs):
        epochs.append((epoch, sorted(logs)))
        if epoch == 2:
            trainer.stop_training = True

    trainer = gb.train.Trainer(
        [x, t], loss, params, gb.optim.SGD(0.1), predict=logits,
        on_step=[lambda tr, s, logs: steps.append((s, tr.optimizer.step, logs["loss"]))],
        on_epoch=[on_epoch],
    )
    history = trainer.fit((X, y), epochs=5, batch_size=32)
    assert len(history) == 2 and trainer.epoch == 2  # stopped early
    assert [s for s, _, _ in steps] == list(range(1, 9))  # 4 batches of 100 per epoch
    assert all(s == opt_step for s, opt_step, _ in steps)
    assert epochs[0] == (1, ["accuracy", "loss", "time"])
    trainer.fit((X, y), epochs=1, batch_size=32, drop_last=True)
    assert trainer.step == 11 and trainer.epoch == 3 and len(trainer.history) == 3
    with pytest.raises(gb.GraphError, match="2 inputs"):
        trainer.fit((X,), epochs=1, batch_size=32)


def test_trainer_is_reproducible(digits):
    Xtr, _, ytr, _ = digits

    def run():
        x, t, params, logits, loss = _mlp(hidden=16)
        tr = gb.train.Trainer([x, t], loss, params, gb.optim.Adam(lr=1e-2), predict=logits)
        tr.fit((Xtr[:200], ytr[:200]), epochs=2, batch_size=50, seed=5)
        return [p.value.copy() for p in params], tr.history

    (pa, ha), (pb, hb) = run(), run()
    for a, b in zip(pa, pb):
        np.testing.assert_array_equal(a, b)
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]


def test_progress_bar_draws_and_erases(capsys):
    import io

    buf = io.StringIO()
    bar = gb.train.ProgressBar(3, "epoch 1/1", stream=buf, enabled=True, interval=0.0)
    for _ in range(3):
        bar.update(loss=0.5)
    assert "[" in buf.getvalue() and "3/3" in buf.getvalue() and "loss 0.5000" in buf.getvalue()
    bar.close()
    assert buf.getvalue().endswith("\r")
    quiet = io.StringIO()
    gb.train.ProgressBar(3, stream=quiet).update()  # StringIO is not a terminal: draws nothing
    assert quiet.getvalue() == ""


def test_trainer_records_per_parameter_gradient_norms_only_when_asked():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    Y = (X @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)

    def make(record):
        x, y = gb.input("x", (None, 3)), gb.input("y", (None, 1))
        w = gb.param("w", np.zeros((3, 1), np.float32))
        b = gb.param("b", np.zeros(1, np.float32))
        loss = gb.mean(gb.square(x @ w + b - y))
        return gb.train.Trainer([x, y], loss, [w, b], gb.optim.SGD(0.1, clip_norm=0.5), record_grad_norms=record), w

    off, _ = make(False)
    assert off.grad_norms == {} and len(off.step_program.outputs) == 1  # nothing extra compiled
    on, w = make(True)
    assert len(on.step_program.outputs) == 3
    w_before = w.op.value.copy()
    on.fit((X, Y), epochs=2, batch_size=20, shuffle=False, progress=False)
    assert list(on.grad_norms) == ["w", "b"] and all(len(v) == 4 for v in on.grad_norms.values())
    # the first step's norms are the unclipped gradients at the initial weights
    g_w = 2 * X[:20].T @ (X[:20] @ w_before - Y[:20]) / 20
    g_b = 2 * np.sum(X[:20] @ w_before - Y[:20]) / 20
    assert on.grad_norms["w"][0] == pytest.approx(float(np.linalg.norm(g_w)), rel=1e-5)
    assert on.grad_norms["b"][0] == pytest.approx(abs(float(g_b)), rel=1e-5)
    # the same updates as the trainer without recording (clipping applied to both)
    off.fit((X, Y), epochs=2, batch_size=20, shuffle=False, progress=False)
    np.testing.assert_allclose(on.history[-1]["loss"], off.history[-1]["loss"], rtol=1e-6)
