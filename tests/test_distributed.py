"""Data-parallel training: N ranks equal one process on the global batch; failures end the job.

The MPI cases start ``mpiexec -n N python tests/mpi_worker.py`` (N = 3 oversubscribes this
2-core machine) and compare rank 0's final parameters with single-process training run
here on the same model, data and batch order. CI installs the ``mpi`` extra, so they run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphbp as gb
import mpi_worker
from graphbp.distributed import DistributedError, single_process
from graphbp.ops.collective import AllreduceMean

WORKER = Path(__file__).with_name("mpi_worker.py")
STEPS = 10  # crosses an epoch boundary (8 global batches per epoch)


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")  # pip's mpich installs it next to python
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _have_mpi() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return _mpiexec() is not None


needs_mpi = pytest.mark.skipif(not _have_mpi(), reason="needs the mpi extra: pip install 'graphbp[mpi]'")


def _run(n: int, *args: str, timeout: float = 120, launcher: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(gb.__file__).parents[1]),
                                                                       os.environ.get("PYTHONPATH")]))}
    cmd = [_mpiexec(), *launcher, "-n", str(n), sys.executable, str(WORKER), *args]  # MPICH oversubscribes as needed
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.monotonic() - t0


def _assert_params_close(got, want, prefix=""):
    for name, value in want.items():
        np.testing.assert_allclose(got[prefix + name], value, rtol=1e-10, atol=1e-12, err_msg=prefix + name)


# -- no MPI needed ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_single_process_communicator_equals_no_communicator(kind):
    want = mpi_worker.train(kind, STEPS)
    got = mpi_worker.train(kind, STEPS, single_process())
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_buckets_group_gradients_last_first_by_size_and_dtype():
    grads = [gb.input("a", (100,)), gb.input("b", (100,)), gb.input("c", (10,), dtype="float64"),
             gb.input("d", (None, 3)), gb.input("e", (50,))]
    # last-first: e | d (unknown dim: alone) | c (float64) | b, a (400 B each, close at >= 800)
    assert gb.distributed.buckets(grads, 800) == [[4], [3], [2], [1, 0]]
    assert gb.distributed.buckets(grads, 300) == [[4], [3], [2], [1], [0]]


def test_allreduce_is_one_node_per_bucket_and_keeps_shapes():
    W = gb.param("W", np.ones((3, 4), np.float32))
    b = gb.param("b", np.ones(4, np.float32))
    loss = gb.sum(gb.relu(gb.constant(np.ones((2, 3), np.float32)) @ W + b))
    gW, gb_ = gb.grad(loss, [W, b])
    avg = gb.distributed.allreduce_mean([gW, gb_], single_process())
    assert [a.shape for a in avg] == [(3, 4), (4,)]
    reductions = [n for n in gb.toposort(avg) if isinstance(n.op, AllreduceMean)]
    assert len(reductions) == 1 and reductions[0].shape == (16,)
    assert AllreduceMean.effectful
    f = gb.compile([], [gW, gb_, *avg])
    a, c, a2, c2 = f()
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(c, c2)


def test_allreduce_of_integers_is_a_dtype_error():
    with pytest.raises(gb.DTypeError, match="allreduce_mean"):
        gb.distributed.allreduce_mean(gb.input("k", (3,), dtype="int64"), single_process())


def test_world_without_mpi4py_names_the_install_command(monkeypatch):
    import graphbp.distributed.comm as comm

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'graphbp\[mpi\]'"):
        comm._import_mpi()


def test_batches_shard_splits_each_global_batch_equally():
    X = np.arange(10)
    shards = [list(gb.data.batches(X, batch_size=4, shard=(r, 2))) for r in range(2)]
    assert [b[0].tolist() for b in shards[0]] == [[0, 1], [4, 5], [8]]
    assert [b[0].tolist() for b in shards[1]] == [[2, 3], [6, 7], [9]]
    threes = [list(gb.data.batches(X, batch_size=3, shard=(r, 3))) for r in range(3)]
    assert sorted(v for s in threes for (b,) in s for v in b.tolist()) == list(range(9))  # 1 sample left out
    assert gb.data.num_batches(10, 3, shard=(0, 3)) == 3
    with pytest.raises(ValueError, match="does not divide into 3 equal shards"):
        next(gb.data.batches(X, batch_size=4, shard=(0, 3)))
    with pytest.raises(ValueError, match="0 <= rank < size"):
        next(gb.data.batches(X, batch_size=4, shard=(2, 2)))


# -- under mpiexec ---------------------------------------------------------------------------
@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_n_ranks_equal_one_process_on_the_global_batch(tmp_path, n):
    out = tmp_path / "final.npz"
    proc, _ = _run(n, "train", str(STEPS), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    for kind in ("sgd", "adam"):
        _assert_params_close(got, mpi_worker.train(kind, STEPS), prefix=f"{kind}/")
        for name in mpi_worker.train(kind, 0):  # overlapped allreduces: the same sums, bit for bit
            np.testing.assert_array_equal(got[f"{kind}-overlap/{name}"], got[f"{kind}/{name}"])


@needs_mpi
def test_killed_rank_ends_the_job_and_a_rerun_resumes_to_the_same_params(tmp_path):
    """MPICH's launcher SIGKILLs the job when a rank dies by a signal and names the dead
    pid; rank 0's rank table, printed at startup, maps that pid to the rank."""
    out, ckpt = tmp_path / "final.npz", tmp_path / "run.gbc"
    proc, took = _run(2, "kill", str(STEPS), str(out), str(ckpt))
    assert proc.returncode != 0 and took < 60
    pid = (tmp_path / "final.npz.pid1").read_text()
    assert "graphbp.distributed: 2 ranks: rank 0 is pid " in proc.stderr
    assert f"rank 1 is pid {pid} on " in proc.stderr, proc.stderr[-3000:]
    assert f"PID {pid} RUNNING AT" in proc.stdout + proc.stderr  # the launcher's own report
    assert not out.exists()
    x, t, params, loss = mpi_worker.model()
    step, _ = gb.load_checkpoint(ckpt, params, gb.optim.Adam(0.01))
    assert 1 <= step <= mpi_worker.KILL_AFTER  # the run stopped part way
    proc, _ = _run(2, "resume", str(STEPS), str(out), str(ckpt))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_params_close(np.load(out), mpi_worker.train("adam", STEPS))


@needs_mpi
def test_a_rank_that_exits_is_named_by_the_others(tmp_path):
    """A rank ending without an exception (``os._exit``) under ``-disable-auto-cleanup``:
    the launcher signals the survivors (SIGUSR1), whose roll call names the lost rank."""
    out = tmp_path / "final.npz"
    proc, took = _run(2, "exit", str(STEPS), str(out), str(tmp_path / "run.gbc"), launcher=("-disable-auto-cleanup",))
    assert proc.returncode != 0 and took < 60
    pid = (tmp_path / "final.npz.pid1").read_text()
    assert f"lost rank 1 of 2 (rank 1 was pid {pid} on " in proc.stderr, proc.stderr[-3000:]
    assert "the MPI launcher reports that a process of the job died" in proc.stderr


@needs_mpi
def test_hung_rank_is_named_and_the_others_exit_within_the_timeout(tmp_path):
    """A stopped (hung) rank is one the launcher cannot see die: the collective's timeout
    and roll call must find it and end the job."""
    out = tmp_path / "final.npz"
    try:
        proc, took = _run(2, "stop", str(STEPS), str(out), str(tmp_path / "run.gbc"), timeout=90)
    finally:
        for pidfile in tmp_path.glob("final.npz.pid*"):  # never leave a stopped process behind
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    assert proc.returncode != 0 and took < 60
    assert "lost rank 1 of 2" in proc.stderr, proc.stderr[-3000:]


@needs_mpi
def test_mismatched_shapes_raise_on_every_rank_instead_of_deadlocking(tmp_path):
    proc, took = _run(2, "mismatch", "0", str(tmp_path / "x.npz"))
    assert proc.returncode != 0 and took < 60
    assert "rank 0: allreduce_mean float64[2, 4]; rank 1: allreduce_mean float64[3, 4]" in proc.stderr


@needs_mpi
def test_an_exception_on_one_rank_aborts_the_job(tmp_path):
    proc, took = _run(2, "raise", "0", str(tmp_path / "x.npz"))
    assert proc.returncode != 0 and took < 60
    assert "rank 1 of 2 failed; aborting all ranks" in proc.stderr
    assert "boom on purpose" in proc.stderr


def test_distributed_error_is_a_graphbp_error():
    assert issubclass(DistributedError, gb.GraphbpError)


def test_demo_distributed_without_mpi_prints_the_mpiexec_command(capsys, monkeypatch):
    from graphbp.cli import main

    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(var, raising=False)
    assert main(["demo", "--distributed"]) == 0
    assert "mpiexec -n 2" in capsys.readouterr().out and "graphbp demo --distributed" in gb.distributed.demo.command()


@needs_mpi
def test_digits_demo_trains_on_two_ranks():
    proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-m", "graphbp", "demo", "--distributed", "--epochs", "3"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(gb.__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 rank(s)" in proc.stdout and proc.stdout.count("epoch") == 3  # rank 0 alone prints


def test_an_allreduce_of_constant_gradients_still_runs_every_call():
    """Effectful ops are never folded: not by the passes, not by the plan's constant folding."""
    b = gb.param("b", np.ones(3, np.float32))
    loss = gb.sum(b)  # its gradient is a constant
    opt = gb.distributed.data_parallel(gb.optim.SGD(0.5), single_process())
    for optimize in (False, True):
        step = gb.compile([], [loss], updates=opt.updates(loss, [b]), optimize=optimize)
        code = [line for line in step.source().splitlines() if not line.lstrip().startswith("#")]
        assert any("allreduce_mean" in line for line in code), step.source()
    step()
    np.testing.assert_allclose(b.value, 0.5)


def test_a_program_averaging_over_world_saves_and_loads_with_its_group(tmp_path):
    x = gb.input("x", (None, 2))
    w = gb.param("w", np.ones((2, 2)))
    loss = gb.mean(x @ w)
    (g,) = gb.grad(loss, [w])
    avg = gb.ops.collective.allreduce_mean(g, "world")
    gb.save(tmp_path / "p.gbp", avg)
    loaded = gb.load(tmp_path / "p.gbp")
    (node,) = [n for n in loaded.nodes if isinstance(n.op, AllreduceMean)]
    assert node.op == AllreduceMean("world")
    with pytest.raises(ValueError, match="group must be one of"):
        AllreduceMean("everyone")


# -- overlapped allreduces -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_overlapped_allreduce_on_one_process_equals_no_communicator(kind):
    want = mpi_worker.train(kind, STEPS)
    got = mpi_worker.train(kind, STEPS, single_process(), overlap=True)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_overlap_schedule_starts_each_bucket_when_ready_and_waits_before_its_reader():
    """The last layer's bucket starts before the first layer's weight gradient is
    computed (the work it overlaps); every wait sits just before the first node reading it."""
    from graphbp.ops.collective import AllreduceStart, AllreduceWait

    rng = np.random.default_rng(0)
    x, t = gb.input("x", (None, 8), dtype="float64"), gb.input("t", (None,), dtype="int64")
    W1, W2 = gb.param("W1", rng.normal(size=(8, 16))), gb.param("W2", rng.normal(size=(16, 3)))
    loss = gb.mean(gb.softmax_cross_entropy(gb.tanh(x @ W1) @ W2, t))
    opt = gb.distributed.data_parallel(gb.optim.SGD(0.1), single_process(), bucket_bytes=200, overlap=True)
    step = gb.compile([x, t], [loss], updates=opt.updates(loss, [W1, W2]))
    order = list(step.backward.nodes)
    starts = [k for k, n in enumerate(order) if isinstance(n.op, AllreduceStart)]
    waits = [k for k, n in enumerate(order) if isinstance(n.op, AllreduceWait)]
    assert len(starts) == len(waits) == 2
    # W1's gradient: x.T @ (the backpropagated error)
    grad_w1 = next(k for k, n in enumerate(order) if n.op.name == "matmul" and n.inputs[0].inputs[:1] == (x,))
    assert starts[0] < grad_w1 < starts[1] < min(waits)
    for k in waits:
        readers = [j for j, n in enumerate(order) if order[k] in n.inputs]
        assert readers and min(readers) == k + 1
    step(rng.normal(size=(4, 8)), np.array([0, 1, 2, 0]))  # and it runs


def test_overlap_order_leaves_a_schedule_with_another_effect_alone():
    """A blocking collective must keep its place among the split ones, so nothing moves."""
    from graphbp.ops.collective import allreduce_mean, allreduce_mean_overlapped
    from graphbp.runtime.overlap import overlap_order

    w = gb.input("w", (4,))
    late = gb.exp(w) * 3.0
    split = allreduce_mean_overlapped(gb.sin(w) * 2.0, "self")
    blocking = allreduce_mean(gb.cos(w), "self")
    roots = [late + split + blocking]
    nodes = [n for n in gb.toposort(roots) if n.inputs]
    assert overlap_order(nodes) == nodes
    without_blocking = [n for n in gb.toposort([late + split]) if n.inputs]
    moved = overlap_order(without_blocking)
    assert moved != without_blocking and set(moved) == set(without_blocking)
    start = next(k for k, n in enumerate(moved) if n.op.name == "allreduce_start")
    assert start == 2  # sin, multiply, then the start: before exp(w) * 3.0
