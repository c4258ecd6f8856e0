"""Reading untrusted bytes at a cost proportional to what is really there.

A hostile file can declare any size it likes, and a compressed one can make a few megabytes
inflate to gigabytes. Every reader of untrusted input (graph files, checkpoints, an ONNX
importer's protobuf and external data) therefore follows the same three rules, which this
module implements once:

- **Check declarations before paying for them.** Sizes come from headers; they are compared
  with caps, with each other and with the bytes the file really has (:func:`check_member`)
  before anything is allocated or inflated.
- **Count while reading.** Data is read in chunks of at most :data:`CHUNK` bytes with a
  running count, straight into the buffer that will hold it (:func:`read_into`), and reading
  stops at the first byte past the declared size: never "read everything, then check".
- **One copy.** A region of a file is read through :class:`FileRegion` (no intermediate
  ``bytes`` of the whole region), so an array costs its own size and no more.

:func:`read_file` (a whole file under a cap, e.g. a protobuf model) and :func:`read_region`
(bytes at an offset, e.g. a tensor's external data) apply the rules to plain files.

Every refusal is a :class:`~graphbp.errors.GraphFormatError` naming the file, the place in it
and, when a cap was hit, the ``Limits`` field that sets it.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Any, BinaryIO

from ..errors import GraphFormatError

CHUNK = 1 << 20  # bytes per read: bounds every temporary buffer


def fail(path: Any, where: str, what: str) -> GraphFormatError:
    """Build the error every loader raises: file, location inside it, and the problem."""
    return GraphFormatError(f"{os.fspath(path) if path is not None else '<file>'}: {where}: {what}")


def read_into(stream: BinaryIO, out: memoryview, path: Any, where: str) -> None:
    """Fill ``out`` from ``stream``, then require the stream to end exactly there.

    At most :data:`CHUNK` bytes are in flight at a time; a stream that is shorter than
    ``out`` or has even one byte more raises, and the extra byte is the last one read.
    """
    out = out.cast("B")
    n = len(out)
    pos = 0
    readinto = getattr(stream, "readinto", None)
    while pos < n:
        if readinto is not None:
            got = readinto(out[pos:pos + min(CHUNK, n - pos)])
        else:
            chunk = stream.read(min(CHUNK, n - pos))
            got = len(chunk)
            out[pos:pos + got] = chunk
        if not got:
            raise fail(path, where, f"ends after {pos} of its declared {n} bytes")
        pos += got
    if stream.read(1):
        raise fail(path, where, f"holds more than its declared {n} bytes")


def read_exact(stream: BinaryIO, n: int, path: Any, where: str) -> bytearray:
    """The ``n`` bytes ``stream`` holds, allocated once (see :func:`read_into`)."""
    buf = bytearray(n)
    read_into(stream, memoryview(buf), path, where)
    return buf


def skip_exact(stream: BinaryIO, n: int, path: Any, where: str, consume=None) -> None:
    """Read and drop exactly ``n`` bytes (passing each chunk to ``consume``), then require the end."""
    left = n
    while left:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            raise fail(path, where, f"ends after {n - left} of its declared {n} bytes")
        if consume is not None:
            consume(chunk)
        left -= len(chunk)
    if stream.read(1):
        raise fail(path, where, f"holds more than its declared {n} bytes")


class FileRegion(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes of ``f`` starting at ``start``.

    Lets a stored archive inside an archive, or a tensor's external data, be parsed in place:
    reads go to the file, so nothing but the bytes asked for is ever in memory.
    """

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        super().__init__()
        self._f, self._start, self._size, self._pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        if not n:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(view[:n])
        self._pos += got
        return got


def member_start(f: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Offset in ``f`` of the first data byte of the ZIP member ``info`` (after its local header)."""
    f.seek(info.header_offset)
    head = f.read(zipfile.sizeFileHeader)
    if len(head) != zipfile.sizeFileHeader or head[:4] != zipfile.stringFileHeader:
        raise zipfile.BadZipFile(f"bad local header for {info.filename!r}")
    name_len = int.from_bytes(head[26:28], "little")
    extra_len = int.from_bytes(head[28:30], "little")
    return info.header_offset + zipfile.sizeFileHeader + name_len + extra_len


def check_member(path: Any, where: str, info: zipfile.ZipInfo, *, cap: int, cap_name: str, available: int,
                 compressed: bool, max_ratio: float) -> None:
    """Refuse a ZIP member from its header alone, before a byte of it is inflated.

    Parameters
    ----------
    cap, cap_name
        The largest inflated size accepted and what sets it (``"Limits.max_json_bytes"``).
    available
        Bytes of the enclosing file (or archive) the member's data must fit in.
    compressed
        Whether a compressed member is acceptable at all (``Limits.compressed_arrays`` for
        arrays); if not, only a stored member with equal declared sizes is.
    max_ratio
        Largest inflated/compressed ratio accepted (``Limits.max_compression_ratio``).
    """
    size, csize = info.file_size, info.compress_size
    if size > cap:
        raise fail(path, where, f"declares {size} bytes, which exceeds the limit of {cap} ({cap_name})")
    if csize > available:
        raise fail(path, where, f"declares {csize} stored bytes but only {available} are in the file")
    if info.compress_type == zipfile.ZIP_STORED:
        if size != csize:
            raise fail(path, where, f"stored member declares {size} bytes but holds {csize}")
        return
    if not compressed:
        raise fail(path, where, "compressed member refused: gb.save writes arrays uncompressed "
                                "(set Limits.compressed_arrays=True for a trusted file)")
    if size > max_ratio * max(csize, 1):
        raise fail(path, where, f"inflates {csize} bytes to {size}, a ratio over the limit of {max_ratio:g} "
                                "(Limits.max_compression_ratio; raise it for a trusted file)")


def read_file(path: Any, cap: int, cap_name: str) -> bytearray:
    """All of the file at ``path`` in one buffer, refused from its size alone when over ``cap``.

    For formats parsed whole (a protobuf model): the size is checked before anything is
    allocated, and a file that grows while being read stops at the first byte over.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > cap:
                raise fail(path, "file", f"{size} bytes exceeds the limit of {cap} ({cap_name})")
            return read_exact(f, size, path, "file")
    except OSError as e:
        raise fail(path, "file", f"cannot be read ({e.strerror or e})") from None


def read_region(path: Any, offset: int, out: memoryview, where: str) -> None:
    """Fill ``out`` from ``path`` at ``offset`` (a tensor's external data), refused if the file
    does not hold that many bytes there; nothing is read before that check."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = memoryview(out).nbytes
            if offset < 0 or offset + n > size:
                raise fail(path, where, f"bytes [{offset}, {offset + n}) are not in the file ({size} bytes)")
            read_into(FileRegion(f, offset, n), out, path, where)
    except OSError as e:
        raise fail(path, where, f"cannot be read ({e.strerror or e})") from None
