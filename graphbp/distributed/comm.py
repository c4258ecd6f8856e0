"""Communicators: the one-process group and MPI's world, with collectives that cannot hang.

Every collective here is guarded twice:

* **Signature first.** Ranks first agree on what they are about to reduce (collective
  kind, dtype, shape) with a two-integer allreduce; a mismatch raises
  :class:`DistributedError` listing each rank's operand instead of deadlocking or mixing
  buffers of different sizes.
* **Bounded waits.** The collective itself is nonblocking (``Iallreduce``, ``Ibcast``) and
  polled until ``timeout`` seconds pass. A rank that was killed, crashed or is stuck never
  arrives; then the waiting ranks take a roll call (each sends "here" to every other rank
  and listens for a few seconds), name the ranks that did not answer, and raise.
* **A lost rank is named.** A process that ends without an exception (``os._exit``, a
  library calling ``exit``) under ``mpiexec -disable-auto-cleanup``: MPICH's launcher
  sends SIGUSR1 to the others, which :func:`world` handles with the same roll call, so the
  error names the lost rank. A process killed by a signal (SIGKILL, the OOM killer) cannot
  be reported by the others: Hydra SIGKILLs them too within milliseconds, whatever the
  flags, and names the dead process by its pid. So rank 0 prints the rank table
  (``rank 1 is pid 8253 on node1``) when the world starts, and every roll-call error gives
  the lost rank's pid and host.

:func:`world` also installs an exception hook that aborts the whole job (``MPI_Abort``)
when any rank dies of an uncaught exception, so the other ranks stop at once instead of
waiting for their timeout. This is what ``python -m mpi4py`` does; MPI's own launcher
(``mpiexec``) additionally kills the job when one process dies by a signal.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
import traceback
import zlib
from typing import Any

import numpy as np

from ..errors import GraphbpError
from ..ops.collective import GROUPS

DEFAULT_TIMEOUT = 30.0
"""Seconds a collective waits for the other ranks before the roll call (``world(timeout=)``)."""

SPIN_SECONDS = 2e-4
"""Seconds a collective polls MPI without pause before it sleeps between polls: long
enough for a transfer already under way, short enough that a rank waiting for a busy or
descheduled peer gives the core back (longer spinning slowed the allreduce down on a loaded
machine: docs/distributed.md has the figures)."""

INSTALL = "pip install 'graphbp[mpi]'"
_ROLL_CALL_TAG = 7001


class DistributedError(GraphbpError, RuntimeError):
    """A collective could not complete: a lost rank, or ranks disagreeing on operands."""


class SingleProcess:
    """The one-process group: rank 0 of 1. Collectives return their operand (the mean of
    one value), so a data-parallel program runs unchanged, and identically, without MPI."""

    group = "self"
    rank = 0
    size = 1
    timeout = float("inf")

    @property
    def is_root(self) -> bool:
        return True

    def allreduce_mean(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None:
            return np.array(x, copy=True)
        np.copyto(out, x)
        return out

    def start_allreduce_mean(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self.allreduce_mean(x, out)  # nothing to wait for

    def wait_allreduce_mean(self, started: np.ndarray) -> np.ndarray:
        return started

    def broadcast(self, x: np.ndarray, root: int = 0) -> np.ndarray:
        _check_root(root, 1)
        return x

    def mean(self, value: float) -> float:
        return float(value)

    def barrier(self) -> None:
        return None

    def __repr__(self) -> str:
        return "<SingleProcess rank 0 of 1>"


class MpiCommunicator:
    """A guarded wrapper of an mpi4py communicator (see the module docstring).

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks.
    timeout : float
        Seconds a collective waits for the other ranks before naming the missing ones.
    """

    group = "world"

    def __init__(self, comm: Any, timeout: float = DEFAULT_TIMEOUT) -> None:
        from mpi4py import MPI

        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self._mpi = MPI
        self._comm = comm
        self._roll = comm.Dup()  # roll-call messages never match a collective's traffic
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = float(timeout)
        self._count = 0  # collectives started: the roll call reports which one hung
        self._pending: dict[int, tuple[Any, np.ndarray]] = {}  # started allreduces by output address
        self._in_roll_call = False
        # pid and host of every rank, so a lost rank's message maps onto the launcher's
        self.where: list[tuple[int, str]] = comm.allgather((os.getpid(), MPI.Get_processor_name()))

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # -- collectives ------------------------------------------------------------------
    def allreduce_mean(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The elementwise mean of ``x`` over the ranks, into ``out`` (a new array if None)."""
        x = np.ascontiguousarray(x)
        self._agree("allreduce_mean", x)
        if out is None:
            out = np.empty_like(x)
        send = self._mpi.IN_PLACE if out is x else x
        self._wait(self._comm.Iallreduce(send, out, op=self._mpi.SUM), "allreduce_mean", x)
        np.divide(out, self.size, out=out)
        return out

    def start_allreduce_mean(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Launch the mean of ``x`` into ``out`` and return ``out`` before it is computed.

        :meth:`wait_allreduce_mean` (``out``) completes it; until then neither array may be
        touched (MPI reads ``x`` and writes ``out`` meanwhile)."""
        x = np.ascontiguousarray(x)
        self._agree("allreduce_mean", x)
        if out is None:
            out = np.empty_like(x)
        if np.shares_memory(out, x):
            raise ValueError("start_allreduce_mean: the result cannot overwrite the operand while it is sent")
        key = out.__array_interface__["data"][0]
        if key in self._pending:
            raise DistributedError(f"rank {self.rank}: an allreduce into this buffer is already in flight")
        self._pending[key] = (self._comm.Iallreduce(x, out, op=self._mpi.SUM), x)
        return out

    def wait_allreduce_mean(self, started: np.ndarray) -> np.ndarray:
        """Complete the allreduce :meth:`start_allreduce_mean` launched into ``started``."""
        entry = self._pending.pop(started.__array_interface__["data"][0], None)
        if entry is None:
            raise DistributedError(f"rank {self.rank}: no allreduce was started into this buffer")
        request, x = entry
        self._wait(request, "allreduce_mean", x)
        np.divide(started, self.size, out=started)
        return started

    def broadcast(self, x: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite contiguous ``x`` with rank ``root``'s values (in place), and return it."""
        _check_root(root, self.size)
        if not x.flags.c_contiguous:
            raise ValueError("broadcast: the array must be C-contiguous (it is written in place)")
        self._agree("broadcast", x)
        self._wait(self._comm.Ibcast(x, root=root), "broadcast", x)
        return x

    def mean(self, value: float) -> float:
        """The mean of a Python number over the ranks (metrics for logging)."""
        return float(self.allreduce_mean(np.array([value], np.float64))[0])

    def barrier(self) -> None:
        self._count += 1
        self._wait(self._comm.Ibarrier(), "barrier", None)

    # -- guards -----------------------------------------------------------------------
    def _agree(self, what: str, x: np.ndarray) -> None:
        """Raise on every rank unless all ranks pass the same kind, dtype and shape."""
        self._count += 1
        desc = f"{what} {x.dtype.name}{list(x.shape)}"
        sig = zlib.crc32(desc.encode())
        both = np.array([sig, -sig], np.int64)
        self._wait(self._comm.Iallreduce(self._mpi.IN_PLACE, both, op=self._mpi.MAX), what, x)
        if both[0] == -both[1]:  # max == min: every rank sent the same signature
            return
        descs = self._comm.allgather(desc)  # everyone is here (they all answered above)
        listing = "; ".join(f"rank {r}: {d}" for r, d in enumerate(descs))
        raise DistributedError(
            f"rank {self.rank}: ranks disagree on collective #{self._count}: {listing}. Every rank "
            "must run the same program on same-shaped shards (equal batch shards, same params)"
        )

    def _wait(self, request: Any, what: str, x: np.ndarray | None) -> None:
        # MPI moves data only while a rank calls into it, so poll without pause for a
        # while (a transfer in progress needs both sides polling); a peer that is still
        # computing is waited for with short sleeps, leaving the core to it.
        now = time.monotonic()
        spin_until, deadline = now + SPIN_SECONDS, now + self.timeout
        while not request.Test():
            if time.monotonic() > spin_until:
                time.sleep(1e-4)
                if time.monotonic() > deadline:
                    self._lost(what, x)

    def _lost(self, what: str, x: np.ndarray | None) -> None:
        """Raise naming the ranks the roll call misses, after a collective timed out."""
        operand = f" on {x.dtype.name}{list(x.shape)}" if x is not None else ""
        lost = self._roll_call()
        raise DistributedError(
            f"rank {self.rank}: {what}{operand} (collective #{self._count}) got no answer for "
            f"{self.timeout:g} s; {self._describe(lost)} (killed, crashed or stuck outside the collective)"
        )

    def _launcher_reports_failure(self, signum: int, frame: Any) -> None:
        """SIGUSR1 from MPICH's launcher (``mpiexec -disable-auto-cleanup``): a process of
        the job died. Raise here, in whatever this rank was doing, naming the lost rank."""
        if self._in_roll_call:
            return
        lost = self._roll_call()
        raise DistributedError(f"rank {self.rank}: the MPI launcher reports that a process of the job died; "
                               f"{self._describe(lost)}")

    def _roll_call(self) -> list[int]:
        """Every rank still running sends "here" to the others and listens for a few
        seconds; the ranks not heard from are returned."""
        self._in_roll_call = True
        try:
            here = np.array([self.rank], np.int64)
            sends = [self._roll.Isend(here, dest=r, tag=_ROLL_CALL_TAG) for r in range(self.size) if r != self.rank]
            heard = {self.rank}
            buf = np.empty(1, np.int64)
            stop = time.monotonic() + min(5.0, max(1.0, self.timeout / 4))
            while time.monotonic() < stop and len(heard) < self.size:
                if self._roll.Iprobe(source=self._mpi.ANY_SOURCE, tag=_ROLL_CALL_TAG):
                    self._roll.Recv(buf, source=self._mpi.ANY_SOURCE, tag=_ROLL_CALL_TAG)
                    heard.add(int(buf[0]))
                else:
                    time.sleep(1e-3)
            del sends  # never waited for: a dead peer would never complete them
            return [r for r in range(self.size) if r not in heard]
        finally:
            self._in_roll_call = False

    def rank_table(self) -> str:
        """``rank 0 is pid 812 on node1, rank 1 is pid 813 on node1, ...`` (recorded at startup)."""
        return ", ".join(f"rank {r} is pid {pid} on {host}" for r, (pid, host) in enumerate(self.where))

    def _describe(self, lost: list[int]) -> str:
        if not lost:
            return f"lost rank (none found) of {self.size}"
        where = ", ".join(f"rank {r} was pid {self.where[r][0]} on {self.where[r][1]}" for r in lost)
        return f"lost rank {', '.join(map(str, lost))} of {self.size} ({where})"

    def abort(self, code: int = 1) -> None:
        """Stop every rank of the job now (``MPI_Abort``)."""
        self._comm.Abort(code)

    def __repr__(self) -> str:
        return f"<MpiCommunicator rank {self.rank} of {self.size}, timeout {self.timeout:g} s>"


Communicator = SingleProcess | MpiCommunicator


def single_process() -> SingleProcess:
    """The one-process communicator (no MPI needed): tests, notebooks, one-machine runs."""
    return SingleProcess()


def world(timeout: float | None = None) -> MpiCommunicator:
    """Every process of the MPI job (``MPI.COMM_WORLD``), guarded as the module describes.

    There is one world per process: later calls return the same communicator (a new
    ``timeout`` replaces the old one). The first call installs an exception hook that
    prints the traceback with the rank and aborts the job, so no rank waits on a dead one.

    Raises
    ------
    ImportError
        mpi4py is not installed (the message gives the install command).
    """
    comm = _world()
    if timeout is not None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        comm.timeout = float(timeout)
    return comm


@functools.cache
def _world() -> MpiCommunicator:
    mpi = _import_mpi()
    comm = MpiCommunicator(mpi.COMM_WORLD)
    if comm.size > 1:
        _install_abort_hook(comm)
        _install_failure_signal(comm)
        if comm.rank == 0:  # the launcher names a dead process by its pid: this maps it to a rank
            sys.stderr.write(f"graphbp.distributed: {comm.size} ranks: {comm.rank_table()}\n")
            sys.stderr.flush()
    return comm


def communicator(group: str) -> Communicator:
    """The communicator an op's ``group`` names in this process."""
    if group == "self":
        return SingleProcess()
    if group == "world":
        return world()
    raise ValueError(f"unknown process group {group!r}; expected one of {GROUPS}")


def under_mpi() -> bool:
    """True when this process was started by an MPI launcher with more than one rank.

    Reads the launchers' environment (MPICH/Hydra ``PMI_SIZE``, Open MPI
    ``OMPI_COMM_WORLD_SIZE``, Slurm ``SLURM_NTASKS`` under ``srun``), so it does not
    import mpi4py or initialise MPI."""
    import os

    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 1:
            return True
    return False


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            f"graphbp.distributed needs mpi4py and an MPI runtime: {INSTALL} "
            f"(installs mpi4py and MPICH's mpiexec) ({e})"
        ) from None
    return MPI


ABORT_GRACE = 0.5
"""Seconds a failing rank waits after printing its traceback before it aborts the job."""


def _install_abort_hook(comm: MpiCommunicator) -> None:
    previous = sys.excepthook

    def abort_job(kind, value, tb):
        # One write, then a moment for mpiexec to forward it: MPI_Abort kills the stdio
        # forwarders too, and a traceback still in the pipe would be lost.
        sys.stderr.write(f"graphbp.distributed: rank {comm.rank} of {comm.size} failed; aborting all ranks\n"
                         + "".join(traceback.format_exception(kind, value, tb)))
        sys.stderr.flush()
        if previous is not sys.__excepthook__:
            previous(kind, value, tb)
        time.sleep(ABORT_GRACE)
        comm.abort(1)

    sys.excepthook = abort_job


def _install_failure_signal(comm: MpiCommunicator) -> None:
    """Name the lost rank when the launcher signals a death (see the module docstring).

    Left alone when the program handles SIGUSR1 itself, and off the main thread (Python
    sets signal handlers only there)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGUSR1) != signal.SIG_DFL:
        return
    signal.signal(signal.SIGUSR1, comm._launcher_reports_failure)


def _check_root(root: int, size: int) -> None:
    if not 0 <= root < size:
        raise ValueError(f"root must be a rank in [0, {size}), got {root}")


__all__ = [
    "Communicator", "DistributedError", "MpiCommunicator", "SingleProcess", "DEFAULT_TIMEOUT",
    "communicator", "single_process", "under_mpi", "world",
]
