"""The IDX file format of MNIST and Fashion-MNIST, raw or gzip-compressed.

graphbp downloads nothing: ``load_idx`` reads files a user already has (``train-images-idx3-ubyte.gz``
and friends). The format is a 4-byte magic number (two zero bytes, a type code, the number of
dims), one big-endian uint32 per dim, then the values in C order, big-endian. Every header field
is checked against the file's actual size before anything is allocated, so a truncated, padded
or corrupt file raises :class:`IDXError` naming the file and what is wrong.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import GraphbpError

_TYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
MAX_BYTES = 1 << 31
"""Refuse files whose header promises more than 2 GiB of values (MNIST is 47 MB)."""


class IDXError(GraphbpError, ValueError):
    """An IDX file that is not well formed."""


def _read(path: str | os.PathLike, limit: int) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != _GZIP_MAGIC:
            return f.read(limit + 1)
        try:
            with gzip.GzipFile(fileobj=f) as z:
                return z.read(limit + 1)  # bounded: a decompression bomb stops at the limit
        except (OSError, EOFError) as e:
            raise IDXError(f"{os.fspath(path)}: corrupt gzip stream ({e})") from None


def load_idx(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a NumPy array of its declared type and shape.

    Parameters
    ----------
    path : path-like
        For example ``train-images-idx3-ubyte.gz`` (uint8, (60000, 28, 28)) or
        ``train-labels-idx1-ubyte`` (uint8, (60000,)).
    max_bytes : int
        Largest payload accepted.

    Returns
    -------
    numpy.ndarray
        In native byte order. Scale images yourself (``x / 255``) and add the channel axis
        for ``gb.conv2d`` with ``x[:, None]``.

    Raises
    ------
    IDXError
        Bad magic number, unknown type code, or a size that does not match the header.
    """
    name = os.fspath(path)
    data = _read(path, max_bytes + 4 + 4 * 255)
    if len(data) < 4:
        raise IDXError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00":
        raise IDXError(f"{name}: not an IDX file (magic {data[:4].hex()}, expected 0000<type><ndim>)")
    if code not in _TYPES:
        raise IDXError(f"{name}: unknown IDX type code 0x{code:02x} (known: "
                       f"{', '.join(f'0x{c:02x}' for c in _TYPES)})")
    if len(data) < 4 + 4 * ndim:
        raise IDXError(f"{name}: header declares {ndim} dims but the file ends inside it")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = _TYPES[code]
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > max_bytes:
        raise IDXError(f"{name}: header declares {shape} of {dtype.name}, {need} bytes, over max_bytes={max_bytes}")
    have = len(data) - 4 - 4 * ndim
    if have != need:
        raise IDXError(f"{name}: header declares {shape} of {dtype.name} ({need} bytes) but the file holds {have} "
                       f"bytes of values{' or more' if have > max_bytes else ''}")
    values = np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(shape)
    return values.astype(dtype.newbyteorder("="))
