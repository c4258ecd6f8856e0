"""Crash-safe file writes: a file is either the complete old version or the complete new one.

The bytes go to a temporary file in the target's own directory (``os.replace`` is only
atomic within one file system), which is flushed and fsynced before it is renamed over the
target; the directory is then fsynced so the rename itself survives a power cut. A process
killed at any point leaves at worst a stray ``.<name>.tmp-<host>-<pid>-*`` file, never a torn
target, and the next successful write of the same target removes the temporary files of
writers on this host whose process no longer exists (a live writer's file is never touched).
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file, then atomically move it to ``path``.

    Parameters
    ----------
    path : path-like
        The destination; its directory must exist.
    write : callable
        Writes the whole content to the binary file object it is given.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(base)}{_HOST}-{os.getpid()}-", dir=directory)
    try:
        os.chmod(tmp, _new_file_mode(path))  # mkstemp makes 0600 files; match open()'s mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)
    remove_stale_temps(directory, base)


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


def _temp_prefix(base: str) -> str:
    return f".{base}.tmp-"


def remove_stale_temps(directory: str, base: str) -> list[str]:
    """Delete the temporary files that killed writers of ``base`` left in ``directory``.

    Only files named by this module for this host and target are considered, and only those
    whose writer's process is gone (``os.kill(pid, 0)`` fails with ``ProcessLookupError``);
    a file of a live process (another thread or writer still at work, or a reused pid)
    stays. Returns the names removed."""
    prefix = f"{_temp_prefix(base)}{_HOST}-"
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_text = name[len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (owned by someone else), or cannot tell: keep its file
    return True


def _new_file_mode(path: str) -> int:
    """The mode ``open(path, "w")`` would give: the old file's, else 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(dfd)
