"""The character LSTM language model of ``graphbp demo --model lstm``: truncated BPTT with the
carry passed between windows, the bigram baseline, PyTorch parity, and a tiny demo run."""

from __future__ import annotations

import inspect
import math
import re
import shutil

import numpy as np
import pytest

import graphbp as gb
from graphbp import cli
from graphbp.train import charlm


def _lm(vocab=7, hidden=6, seed=0):
    model = charlm.build_char_lstm(vocab, embed=3, hidden=hidden, seed=seed)
    return model, charlm.CharLM(model, gb.optim.Adam(1e-2, clip_norm=1.0))


def test_carry_passed_between_windows_equals_one_long_window():
    model, lm = _lm()
    ids = np.random.default_rng(0).integers(0, 7, 2 * 3 * 8 + 1)
    x, y = gb.data.streams(ids, 2)  # (2, 24)
    whole = lm.evaluate(x, y, window=24)
    pieces = lm.evaluate(x, y, window=8)  # three windows, (h, c) fed back between them
    assert pieces == pytest.approx(whole, rel=1e-6)
    cold = np.mean([lm.eval_program(x[:, s:s + 8], y[:, s:s + 8], *lm.zeros(2))[0] for s in (0, 8, 16)])
    assert abs(cold - whole) > 1e-6  # restarting the state each window is a different model


def test_training_step_records_gradient_norms_and_lowers_the_loss():
    model, lm = _lm()
    ids = np.tile(np.arange(7), 40)  # a periodic stream: easy to learn
    bar = gb.train.ProgressBar(1, enabled=False)
    first = lm.train_epoch(ids, 4, 10, bar)
    for _ in range(15):
        last = lm.train_epoch(ids, 4, 10, bar)
    assert last < 0.5 * first
    steps = 16 * gb.data.num_windows(len(ids), 4, 10, drop_last=True)
    assert list(lm.grad_norms) == [p.op.param_name for p in model.params]
    assert all(len(v) == steps and min(v) >= 0.0 for v in lm.grad_norms.values())


def test_bigram_bits_is_the_smoothed_count_model():
    train = np.array([0, 1, 0, 1, 0, 2])
    x, y = np.array([[0, 1]]), np.array([[1, 0]])
    # p(1|0) = (2 + a) / (3 + 3a), p(0|1) = (2 + a) / (2 + 3a), a = 0.1
    expect = -(math.log2(2.1 / 3.3) + math.log2(2.1 / 2.3)) / 2
    assert charlm.bigram_bits(train, x, y, 3, alpha=0.1) == pytest.approx(expect)


def test_char_lstm_matches_torch_embedding_lstm_linear():
    torch = pytest.importorskip("torch")
    V, E, H, B, T = 7, 3, 5, 2, 4
    model = charlm.build_char_lstm(V, embed=E, hidden=H, seed=1)
    table, w_ih, w_hh, b, w_o, b_o = (p.op.value.astype(np.float64) for p in model.params)
    emb = torch.nn.Embedding(V, E).double()
    lstm = torch.nn.LSTM(E, H).double()
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(table))
        lstm.weight_ih_l0.copy_(torch.tensor(w_ih))
        lstm.weight_hh_l0.copy_(torch.tensor(w_hh))
        lstm.bias_ih_l0.copy_(torch.tensor(b))
        lstm.bias_hh_l0.zero_()
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0, c0 = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    wo = torch.tensor(w_o, requires_grad=True)
    hs, (hT, cT) = lstm(emb(torch.tensor(x.T)), (torch.tensor(h0[None]), torch.tensor(c0[None])))
    logits = hs @ wo + torch.tensor(b_o)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.tensor(y.T).reshape(-1))
    loss.backward()

    for p, v in zip(model.params, (table, w_ih, w_hh, b, w_o, b_o)):
        p.op.assign(v.astype(np.float32))
    prog = gb.compile([model.x, model.y, model.h0, model.c0],
                      [model.loss, model.h, *gb.grad(model.loss, [model.params[2], model.params[4]])])
    got = prog(x, y, h0.astype(np.float32), c0.astype(np.float32))
    np.testing.assert_allclose(got[0], loss.item(), rtol=1e-5)
    np.testing.assert_allclose(got[1], hT[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[2], lstm.weight_hh_l0.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[3], wo.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_cli_defaults_are_the_demo_function_defaults():
    sig = inspect.signature(charlm.run_charlm_demo).parameters
    assert {k: sig[k].default for k in cli.LSTM_DEFAULTS} == cli.LSTM_DEFAULTS


def test_tiny_demo_trains_reports_samples_and_draws_both_scans(tmp_path, capsys):
    args = ["demo", "--model", "lstm", "--epochs", "2", "--chars", "4000", "--hidden", "16", "--window", "16",
            "--batch-size", "8", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "epoch   1/2  train" in text and "epoch   2/2  train" in text and "grad norm" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("held-out cross-entropy"))
    lstm_bits, bigram = (float(v) for v in re.findall(r"(\d+\.\d+) bits/char", line))
    assert 0 < lstm_bits < 7 and 0 < bigram < 7
    assert text.count("(temperature 0.8):") == 3 and "wall time:" in text
    suffix = ".svg" if shutil.which("dot") else ".dot"
    for name in ("forward", "gradient", "scan_body", "reverse_scan_body"):
        assert (tmp_path / f"{name}{suffix}").stat().st_size > 0
    assert "reverse=True" in (tmp_path / f"gradient{suffix}").read_text()
    assert "sigmoid" in (tmp_path / f"scan_body{suffix}").read_text()  # one LSTM step
    assert "vjp of sigmoid" in (tmp_path / f"reverse_scan_body{suffix}").read_text()  # its pullback


def _example(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lstm_charlm_example_builds_a_scan_program_and_trains():
    from graphbp.ops.loop import Scan

    mod = _example("lstm_charlm")
    program = mod.build()
    assert isinstance(program, gb.Program)
    scans = [n for n in [*program.partition.forward, *program.partition.backward] if isinstance(n.op, Scan)]
    assert sorted(n.op.reverse for n in scans) == [False, True]  # the scan and its reverse scan
    bits = mod.main(epochs=1, batch_size=4, window=16, chars=3000)
    assert 0.0 < bits < 7.0


def test_vanishing_gradients_example_shows_both_effects(tmp_path, capsys):
    import xml.etree.ElementTree as ET

    mod = _example("vanishing_gradients")
    out = tmp_path / "vg.svg"
    res = mod.main(out)
    sig, relu = res["depth"].values()
    assert len(sig) == mod.DEPTH and sig[0] < 1e-8 * sig[-1]  # sigmoid + naive init: vanishes
    assert 0.1 < relu[0] / relu[-1] < 10  # ReLU + He: the same order at every layer
    rnn, exploding, lstm = res["time"].values()
    assert len(rnn) == mod.STEPS
    assert rnn[0] < 1e-10 * rnn[-1]  # tanh RNN: geometric decay over 100 steps
    assert exploding[0] > 100 * exploding[-1]  # scaled-up W_hh: grows going back
    assert lstm[0] > 1e-2 * lstm[-1]  # the LSTM's cell path keeps it
    svg = ET.parse(out).getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 5
    text = capsys.readouterr().out
    assert "gradient norm per layer" in text and "gradient norm per time step" in text
