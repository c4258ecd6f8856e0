"""The on-disk container shared by graph files and checkpoints, read defensively.

A container is a ZIP archive holding a few named members: a JSON document and an
``arrays.npz`` (itself a ZIP of ``.npy`` files, written by :func:`numpy.savez`). Reading
trusts nothing: every size is checked against its cap and against the bytes the file really
has before anything is allocated or inflated, every member is read as a counted stream
(:mod:`graphbp.io.bounded`), each array straight into its final buffer, every ``.npy``
header is checked against the bytes that follow it, object dtypes are refused (nothing is
ever unpickled) and every failure becomes a :class:`~graphbp.errors.GraphFormatError`
saying what is wrong and where. The resulting memory and time bounds are stated in
``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..errors import GraphFormatError
from .bounded import FileRegion, check_member, fail, member_start, read_exact, read_into, skip_exact

__all__ = ["DEFAULT_LIMITS", "Contents", "Limits", "dump_json", "encode_npz", "fail", "read_container", "write_zip"]

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # members carry a fixed timestamp: same content, same bytes
_ALLOWED_KINDS = "biufc"
_NPZ_OVERHEAD = 2**20  # headers and directory of the npz beyond its arrays' bytes


@dataclass(frozen=True)
class Limits:
    """Caps applied while loading, so a hostile or corrupt file cannot exhaust memory or time.

    Raise them (``gb.load(path, limits=Limits(max_nodes=...))``) for graphs beyond the
    defaults; every cap names itself in the error it causes.

    With the defaults, loading a file of ``F`` bytes holds at most the arrays the file really
    contains (they are stored uncompressed, so at most ``F`` bytes) plus its JSON, which may
    inflate to ``max_compression_ratio * F`` bytes but never past ``max_json_bytes``.

    Attributes
    ----------
    max_compression_ratio : float
        Largest inflated/compressed size ratio of any compressed member. ``gb.save`` only
        compresses a member that stays under the default, so its files always load.
    compressed_arrays : bool
        Accept compressed array data (an ``arrays.npz`` or ``.npy`` member that is deflated,
        as ``np.savez_compressed`` writes). Off by default: ``gb.save`` writes arrays
        uncompressed, so the arrays a file declares must be backed by its size. When on, they
        may total up to ``max_compression_ratio`` times the file's size.
    """

    max_file_bytes: int = 16 * 2**30
    max_json_bytes: int = 512 * 2**20
    max_array_bytes: int = 16 * 2**30
    max_arrays: int = 1_000_000
    max_nodes: int = 5_000_000
    max_ndim: int = 64
    max_sequence: int = 4096
    max_int: int = 2**62
    max_compression_ratio: float = 16.0
    compressed_arrays: bool = False


DEFAULT_LIMITS = Limits()


# ------------------------------------------------------------------------------ writing
def encode_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """``np.savez`` into memory (no pickling: object arrays are refused first)."""
    for key, arr in arrays.items():
        if arr.dtype.hasobject or arr.dtype.kind not in _ALLOWED_KINDS:
            raise GraphFormatError(f"array {key!r} has dtype {arr.dtype}, which graph files cannot hold")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_zip(f, members: list[tuple[str, bytes, bool]]) -> None:
    """Write ``(name, data, compress)`` members to the open binary file ``f``.

    A member is compressed only when asked and when its ratio stays within the default
    ``Limits.max_compression_ratio`` (a very repetitive document is stored instead), so every
    file written here loads under the default limits.
    """
    with zipfile.ZipFile(f, "w") as zf:
        for name, data, compress in members:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            if compress and len(data) > DEFAULT_LIMITS.max_compression_ratio * _deflated_size(data):
                compress = False
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def _deflated_size(data: bytes) -> int:
    """Bytes of ``data`` deflated as ``zipfile`` deflates a member (raw stream, default level)."""
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return len(c.compress(data)) + len(c.flush())


def dump_json(doc: Any) -> bytes:
    """Canonical JSON: sorted keys, no NaN literals (the codec tags non-finite floats)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Contents:
    """What :func:`read_container` found: the parsed document, the arrays and small members."""

    doc: Any
    arrays: dict[str, np.ndarray]
    small: dict[str, bytes]


def read_container(path, json_member: str, limits: Limits, small: dict[str, int] | None = None,
                   checksum: str | None = None) -> Contents:
    """Read a container of ``json_member``, ``arrays.npz`` and the ``small`` members (name -> cap).

    The JSON is read into one buffer of its declared size; ``arrays.npz`` is streamed once to
    verify its CRC (and, when ``checksum`` names a small member, to check the hex SHA-256 of
    ``json + b"\\0" + npz`` it holds), then parsed in place, each array read straight into the
    array returned. See :class:`Limits` for what is refused.
    """
    small = small or {}
    expected = {json_member, "arrays.npz", *small}
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise fail(path, "file", f"cannot be read ({e.strerror or e})") from None
    if size > limits.max_file_bytes:
        raise fail(path, "file", f"{size} bytes exceeds the limit of {limits.max_file_bytes} (Limits.max_file_bytes)")
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            names = [i.filename for i in zf.infolist()]
            if len(names) != len(infos):
                raise fail(path, "archive", f"duplicate members {sorted(names)}")
            if set(names) != expected:
                raise fail(path, "archive", f"members {sorted(names)}, expected {sorted(expected)}")
            if sum(i.compress_size for i in infos.values()) > size:
                raise fail(path, "archive", "members declare more stored bytes than the file has (overlapping members?)")
            ratio = limits.max_compression_ratio
            info = infos[json_member]
            check_member(path, json_member, info, cap=limits.max_json_bytes, cap_name="Limits.max_json_bytes",
                         available=size, compressed=True, max_ratio=ratio)
            with zf.open(info) as stream:
                text = read_exact(stream, info.file_size, path, json_member)
            members = {}
            for name, cap in small.items():
                check_member(path, name, infos[name], cap=cap, cap_name=f"the size of {name}", available=size, compressed=True,
                             max_ratio=ratio)
                with zf.open(infos[name]) as stream:
                    members[name] = bytes(read_exact(stream, infos[name].file_size, path, name))
            info = infos["arrays.npz"]
            check_member(path, "arrays.npz", info, cap=limits.max_array_bytes + _NPZ_OVERHEAD,
                         cap_name="Limits.max_array_bytes", available=size, compressed=limits.compressed_arrays,
                         max_ratio=ratio)
            with contextlib.ExitStack() as stack:
                stored = info.compress_type == zipfile.ZIP_STORED
                # Trusted compressed arrays are inflated to a temporary file, never to memory.
                tmp = None if stored else stack.enter_context(tempfile.TemporaryFile())
                digest = hashlib.sha256(text) if checksum else None
                if digest is not None:
                    digest.update(b"\0")

                def consume(chunk: bytes) -> None:
                    if digest is not None:
                        digest.update(chunk)
                    if tmp is not None:
                        tmp.write(chunk)

                with zf.open(info) as stream:  # one streaming pass; zipfile checks the CRC at the end
                    skip_exact(stream, info.file_size, path, "arrays.npz", consume)
                if digest is not None and digest.hexdigest().encode("ascii") != members[checksum]:
                    raise fail(path, checksum, "checksum mismatch: the file is corrupt")
                start = member_start(f, info) if stored else 0
                arrays = decode_npz(path, FileRegion(f if stored else tmp, start, info.file_size), size, limits)
    except GraphFormatError:
        raise
    except Exception as e:  # BadZipFile, EOFError, zlib/lzma errors, CRC errors, ...
        raise fail(path, "archive", f"not a readable graphbp container ({type(e).__name__}: {e})") from None
    doc = parse_json(path, json_member, text)
    return Contents(doc, arrays, members)


def parse_json(path, member: str, data: bytearray) -> Any:
    """Decode UTF-8 JSON, refusing NaN/Infinity literals and absurd nesting."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard literal {name}")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except RecursionError:
        raise fail(path, member, "JSON nested too deeply") from None
    except Exception as e:
        raise fail(path, member, f"invalid JSON ({type(e).__name__}: {e})") from None


def decode_npz(path, source: BinaryIO, file_size: int, limits: Limits) -> dict[str, np.ndarray]:
    """Parse the seekable ``arrays.npz`` in ``source`` without pickle and without trusting its headers.

    The declared total of all arrays must fit ``max_array_bytes`` and be backed by the file's
    ``file_size`` (times ``max_compression_ratio`` when compressed arrays are allowed) before
    any is read.
    """
    where = "arrays.npz"
    try:
        zf = zipfile.ZipFile(source)
    except Exception as e:
        raise fail(path, where, f"not a valid npz archive ({type(e).__name__}: {e})") from None
    out: dict[str, np.ndarray] = {}
    try:
        with zf:
            infos = zf.infolist()
            if len(infos) > limits.max_arrays:
                raise fail(path, where, f"{len(infos)} arrays exceeds the limit of {limits.max_arrays} (Limits.max_arrays)")
            declared = sum(i.file_size for i in infos)
            if declared > limits.max_array_bytes:
                raise fail(path, where, f"declares {declared} bytes of arrays, which exceeds the limit of "
                                        f"{limits.max_array_bytes} (Limits.max_array_bytes)")
            backed = file_size * (limits.max_compression_ratio if limits.compressed_arrays else 1)
            if declared > backed:
                raise fail(path, where, f"declares {declared} bytes of arrays but the file has {file_size} "
                                        "(Limits.compressed_arrays, Limits.max_compression_ratio)")
            for info in infos:
                name = info.filename
                if not name.endswith(".npy"):
                    raise fail(path, f"{where}/{name}", "member is not a .npy file")
                key = name[:-4]
                if key in out:
                    raise fail(path, f"{where}/{name}", "duplicate array")
                check_member(path, f"{where}/{name}", info, cap=limits.max_array_bytes, cap_name="Limits.max_array_bytes",
                             available=file_size, compressed=limits.compressed_arrays,
                             max_ratio=limits.max_compression_ratio)
                with zf.open(info) as stream:
                    out[key] = _read_npy(path, f"{where}/{name}", stream, info.file_size, limits)
    except GraphFormatError:
        raise
    except Exception as e:
        raise fail(path, where, f"corrupt archive ({type(e).__name__}: {e})") from None
    return out


def _read_npy(path, where: str, stream: BinaryIO, declared: int, limits: Limits) -> np.ndarray:
    """One ``.npy`` member of ``declared`` bytes, read into the array it holds (one copy)."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as e:
        raise fail(path, where, f"bad .npy header ({type(e).__name__}: {e})") from None
    if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise fail(path, where, f"dtype {dtype} is not allowed (numeric arrays only; nothing is unpickled)")
    if len(shape) > limits.max_ndim:
        raise fail(path, where, f"{len(shape)} dims exceeds the limit of {limits.max_ndim} (Limits.max_ndim)")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise fail(path, where, f"invalid shape {shape}")
    count = 1
    for d in shape:
        count *= d
    body = declared - stream.tell()
    if count * dtype.itemsize != body:
        raise fail(path, where, f"header says {shape} {dtype} ({count * dtype.itemsize} bytes) but {body} bytes follow")
    arr = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
    read_into(stream, memoryview(arr.reshape(-1).view(np.uint8)), path, where)
    if fortran:
        arr = np.ascontiguousarray(arr.T)
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr
