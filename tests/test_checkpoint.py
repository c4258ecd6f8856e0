"""Checkpoints: exact restore, exact resume, clear mismatches that change nothing."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import graphbp as gb
from graphbp.io.checkpoint import CheckpointMismatchError


def _model(seed: int, opt_name: str):
    rng = np.random.default_rng(seed)
    x = gb.input("x", (None, 3))
    t = gb.input("t", (None,), dtype="int64")
    W = gb.param("W", rng.normal(size=(3, 4)).astype(np.float32))
    b = gb.param("b", np.zeros(4, np.float32))
    loss = gb.mean(gb.softmax_cross_entropy(gb.tanh(x @ W) + b, t))
    opt = gb.optim.SGD(0.1, momentum=0.9) if opt_name == "sgd" else gb.optim.Adam(0.01)
    step = gb.compile([x, t], [loss], updates=opt.updates(loss, [W, b]))
    return step, [W, b], opt


def _batch(k: int):
    rng = np.random.default_rng(100 + k)
    return rng.normal(size=(6, 3)).astype(np.float32), rng.integers(0, 4, size=6)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, opt_name):
    step, params, opt = _model(0, opt_name)
    losses = [step(*_batch(k))[0] for k in range(10)]

    step1, params1, opt1 = _model(0, opt_name)
    first = [step1(*_batch(k))[0] for k in range(4)]
    gb.save_checkpoint(tmp_path / "c.gbc", params1, opt1, step=4, extra={"note": "half"})
    step2, params2, opt2 = _model(123, opt_name)  # different initial values: all must be restored
    n, extra = gb.load_checkpoint(tmp_path / "c.gbc", params2, opt2)
    assert (n, extra) == (4, {"note": "half"})
    rest = [step2(*_batch(k))[0] for k in range(n, 10)]
    assert [a.tobytes() for a in first + rest] == [a.tobytes() for a in losses]
    assert all(p.value.tobytes() == q.value.tobytes() for p, q in zip(params, params2))
    s, s2 = opt.state(), opt2.state()
    assert s.keys() == s2.keys() and all(s[k].tobytes() == s2[k].tobytes() for k in s)


def test_extra_round_trips_nested_values_and_arrays(tmp_path):
    _, params, _ = _model(0, "sgd")
    extra = {"epoch": 3, "lr": 0.5, "hist": [1.0, float("nan")], "rng": np.arange(4, dtype=np.uint32),
             "nested": {"a": (1, 2), "b": None}}
    gb.save_checkpoint(tmp_path / "c.gbc", {"W": params[0], "b": params[1]}, step=7, extra=extra)
    step, back = gb.load_checkpoint(tmp_path / "c.gbc", params)
    assert step == 7 and back["epoch"] == 3 and back["nested"] == {"a": (1, 2), "b": None}
    assert np.isnan(back["hist"][1]) and back["rng"].dtype == np.uint32


def test_mismatched_names_shapes_or_state_raise_and_change_nothing(tmp_path):
    step, params, opt = _model(0, "adam")
    step(*_batch(0))
    gb.save_checkpoint(tmp_path / "c.gbc", params, opt, step=1)
    _, params2, opt2 = _model(5, "adam")
    before = [p.value.copy() for p in params2]
    state_before = opt2.state()

    other = gb.param("W", np.zeros((3, 5), np.float32))  # same name, other shape
    with pytest.raises(CheckpointMismatchError, match=r"W: checkpoint has float32\(3, 4\), parameter is float32\(3, 5\)"):
        gb.load_checkpoint(tmp_path / "c.gbc", [other, params2[1]], opt2)
    renamed = gb.param("W_renamed", np.zeros((3, 4), np.float32))
    with pytest.raises(CheckpointMismatchError, match="not in the checkpoint: W_renamed"):
        gb.load_checkpoint(tmp_path / "c.gbc", [renamed, params2[1]], opt2)
    with pytest.raises(CheckpointMismatchError, match="in the checkpoint but not given: b"):
        gb.load_checkpoint(tmp_path / "c.gbc", [params2[0]], opt2)
    _, _, sgd = _model(0, "sgd")
    with pytest.raises(CheckpointMismatchError, match="optimizer"):
        gb.load_checkpoint(tmp_path / "c.gbc", params2, sgd)
    assert all(p.value.tobytes() == b.tobytes() for p, b in zip(params2, before))
    assert all(opt2.state()[k].tobytes() == v.tobytes() for k, v in state_before.items())
    assert zeros_untouched(other) and zeros_untouched(renamed)


def zeros_untouched(p) -> bool:
    return not p.value.any()


def test_corruption_is_detected_by_the_checksum(tmp_path):
    _, params, opt = _model(0, "sgd")
    path = tmp_path / "c.gbc"
    gb.save_checkpoint(path, params, opt, step=2)
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    arr = bytearray(members["arrays.npz"])
    arr[len(arr) // 2] ^= 0x01  # one bit, re-zipped so the ZIP CRC is valid
    members["arrays.npz"] = bytes(arr)
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    before = [p.value.copy() for p in params]
    with pytest.raises(gb.GraphFormatError, match="checksum mismatch"):
        gb.load_checkpoint(path, params, opt)
    assert all(p.value.tobytes() == b.tobytes() for p, b in zip(params, before))
    path.write_bytes(b"")
    with pytest.raises(gb.GraphFormatError):
        gb.load_checkpoint(path, params, opt)


def test_duplicate_parameter_names_are_refused(tmp_path):
    a = gb.param("w", np.zeros(2))
    b = gb.param("w", np.ones(2))
    with pytest.raises(gb.GraphbpError, match="two different parameters are named 'w'"):
        gb.save_checkpoint(tmp_path / "c.gbc", [a, b])
    assert not list(tmp_path.iterdir())


def _trainer(seed=0):
    rng = np.random.default_rng(seed)
    x = gb.input("x", (None, 2))
    t = gb.input("t", (None,), dtype="int64")
    W = gb.param("W", rng.normal(size=(2, 2)).astype(np.float32))
    logits = x @ W
    loss = gb.mean(gb.softmax_cross_entropy(logits, t))
    return gb.train.Trainer([x, t], loss, [W], gb.optim.Adam(0.05), predict=logits)


def test_trainer_checkpoints_every_n_steps_and_resumes_exactly(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2)).astype(np.float32)
    T = (X[:, 0] > 0).astype(np.int64)
    ref = _trainer()
    ref.fit((X, T), epochs=3, batch_size=8, seed=0)

    class Crash(Exception):
        pass

    def crash(trainer, step, logs):
        if step == 8:
            raise Crash

    path = tmp_path / "run.gbc"
    first = _trainer()
    first.on_step.append(crash)
    with pytest.raises(Crash):
        first.fit((X, T), epochs=3, batch_size=8, seed=0, checkpoint=path, checkpoint_every=3)
    second = _trainer(seed=99)  # a new process: fresh (different) values, restored from the file
    second.fit((X, T), epochs=3, batch_size=8, seed=0, checkpoint=path, checkpoint_every=3, resume=True)
    assert second.step == ref.step == 15 and second.epoch == 3
    assert second.params[0].value.tobytes() == ref.params[0].value.tobytes()


def test_next_write_removes_temp_files_of_killed_writers_only(tmp_path):
    """A writer killed mid-write leaves ``.<name>.tmp-<host>-<pid>-*``; the next successful
    write of that target removes it once the pid is gone, and never a live writer's file,
    another host's or another target's."""
    import subprocess
    import sys

    from graphbp.io import atomic

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pre = f".c.gbc.tmp-{atomic._HOST}-"
    stale = tmp_path / f"{pre}{dead.pid}-abc"
    mine = tmp_path / f"{pre}{os.getpid()}-def"  # this process: maybe another thread's write
    live = tmp_path / f"{pre}1-ghi"  # pid 1 is alive
    remote = tmp_path / f".c.gbc.tmp-otherhost-{dead.pid}-jkl"
    other = tmp_path / f".d.gbc.tmp-{atomic._HOST}-{dead.pid}-mno"
    for f in (stale, mine, live, remote, other):
        f.write_bytes(b"half")
    _, params, _ = _model(0, "sgd")
    gb.save_checkpoint(tmp_path / "c.gbc", params, step=1)
    left = set(os.listdir(tmp_path))
    assert stale.name not in left
    assert {mine.name, live.name, remote.name, other.name, "c.gbc"} == left
