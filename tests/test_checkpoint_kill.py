"""SIGKILL a training process while it writes checkpoints, many times.

After every kill the last complete checkpoint must load (checksum and all), hold at least
the last step the process reported as saved (nothing lost beyond the step in flight), and
hold exactly the parameters of that step of an uninterrupted run. Each restart resumes
from it, and the final result is bitwise the uninterrupted one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np

import graphbp as gb

import ckpt_worker

KILLS = 30
HERE = os.path.dirname(os.path.abspath(__file__))


def _reference():
    """Parameter bytes after every step of an uninterrupted run (no files)."""
    step, params, opt = ckpt_worker.model()
    out = {0: [p.value.tobytes() for p in params]}
    for k in range(ckpt_worker.TOTAL_STEPS):
        step(ckpt_worker.batch(k))
        out[k + 1] = [p.value.tobytes() for p in params]
    return out, {k: v.copy() for k, v in opt.state().items()}


def _run_until_killed(path, after_saves: int, jitter: float) -> tuple[int, bool]:
    """Start a worker, let it report ``after_saves`` completed saves, then SIGKILL it after
    ``jitter`` seconds, which lands the kill at a random point of the next step or save
    (timing by progress, not wall time, so a fast machine cannot outrun the test)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "ckpt_worker.py"), str(path)],
                            stdout=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        saves = 0
        while saves < after_saves:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("saved "):
                saves += 1
        time.sleep(jitter)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + (out or "")
    saved = [int(line.split()[1]) for line in out.splitlines() if line.startswith("saved ")]
    return (saved[-1] if saved else -1), "done" in out


def test_sigkill_during_checkpoint_writes_loses_nothing_but_the_step_in_flight(tmp_path):
    ref, ref_state = _reference()
    path = tmp_path / "ckpt.gbc"
    rng = np.random.default_rng(0)
    kills = loaded = mid_write = 0
    seen_temps: set[str] = set()
    last_step = 0
    while kills < KILLS:
        reported, finished = _run_until_killed(path, int(rng.integers(0, 6)), float(rng.uniform(0.0, 0.004)))
        if finished:
            break
        kills += 1
        temps = {f for f in os.listdir(tmp_path) if f.startswith(".ckpt.gbc.tmp-")}
        mid_write += bool(temps - seen_temps)  # a new one: this kill landed mid-write
        seen_temps |= temps
        if not path.exists():
            assert reported == -1  # killed before the first save returned
            continue
        _, params, opt = ckpt_worker.model()
        step, extra = gb.load_checkpoint(path, params, opt)
        loaded += 1
        assert extra == {"k": step}
        assert step >= reported and step >= last_step  # nothing lost beyond the step in flight
        assert [p.value.tobytes() for p in params] == ref[step], f"checkpoint of step {step} differs"
        last_step = step
    assert kills >= KILLS // 2, "the worker finished too fast to be killed mid-run"
    # Finish the run by resuming once more: the result is the uninterrupted run, bitwise.
    params, opt = ckpt_worker.train(str(path))
    assert [p.value.tobytes() for p in params] == ref[ckpt_worker.TOTAL_STEPS]
    state = opt.state()
    assert state.keys() == ref_state.keys()
    assert all(state[k].tobytes() == ref_state[k].tobytes() for k in state)
    # kills mid-write left temp files; the resumed run's first save removed them (their
    # writers are dead), so nothing half-written stays on disk
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".ckpt.gbc.tmp-")]
    print(f"{kills} kills, {loaded} checkpoints verified, {mid_write} killed mid-write (temp file "
          f"left until the next save), last killed at step {last_step}")
