"""Crash-safe file writes: a file is either the complete old version or the complete new one.

The bytes go to a temporary file in the target's own directory (``os.replace`` is only
atomic within one file system), which is flushed and fsynced before it is renamed over the
target; the directory is then fsynced so the rename itself survives a power cut. A process
killed at any point leaves at worst a stray ``.<name>.tmp-*`` file, never a torn target.
"""

from __future__ import annotations

import os
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
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.tmp-", dir=directory)
    try:
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
