"""The on-disk container shared by graph files and checkpoints, read defensively.

A container is a ZIP archive holding a few named members: a JSON document and an
``arrays.npz`` (itself a ZIP of ``.npy`` files, written by :func:`numpy.savez`). Reading
trusts nothing: every size is capped before anything is allocated, every ``.npy`` header is
checked against the bytes that follow it, object dtypes are refused (nothing is ever
unpickled) and every failure becomes a :class:`~graphbp.errors.GraphFormatError` saying
what is wrong and where.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GraphFormatError

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # members carry a fixed timestamp: same content, same bytes
_ALLOWED_KINDS = "biufc"


@dataclass(frozen=True)
class Limits:
    """Caps applied while loading, so a hostile or corrupt file cannot exhaust memory or time.

    Raise them (``gb.load(path, limits=Limits(max_nodes=...))``) for graphs beyond the
    defaults; every cap names itself in the error it causes.
    """

    max_file_bytes: int = 16 * 2**30
    max_json_bytes: int = 512 * 2**20
    max_array_bytes: int = 16 * 2**30
    max_arrays: int = 1_000_000
    max_nodes: int = 5_000_000
    max_ndim: int = 64
    max_sequence: int = 4096
    max_int: int = 2**62


DEFAULT_LIMITS = Limits()


def fail(path: Any, where: str, what: str) -> GraphFormatError:
    """Build the error every loader raises: file, location inside it, and the problem."""
    return GraphFormatError(f"{os.fspath(path) if path is not None else '<file>'}: {where}: {what}")


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
    """Write ``(name, data, compress)`` members to the open binary file ``f``."""
    with zipfile.ZipFile(f, "w") as zf:
        for name, data, compress in members:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def dump_json(doc: Any) -> bytes:
    """Canonical JSON: sorted keys, no NaN literals (the codec tags non-finite floats)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


# ------------------------------------------------------------------------------ reading
def read_members(path, expected: dict[str, int], limits: Limits) -> dict[str, bytes]:
    """Read exactly the ``expected`` members (name -> byte cap) of the ZIP at ``path``."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise fail(path, "file", f"cannot be read ({e.strerror or e})") from None
    if size > limits.max_file_bytes:
        raise fail(path, "file", f"{size} bytes exceeds the limit of {limits.max_file_bytes}")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(names) != len(set(names)):
                raise fail(path, "archive", f"duplicate members {sorted(names)}")
            if set(names) != set(expected):
                raise fail(path, "archive", f"members {sorted(names)}, expected {sorted(expected)}")
            out = {}
            for info in infos:
                cap = expected[info.filename]
                out[info.filename] = _read_member(path, zf, info, cap)
            return out
    except GraphFormatError:
        raise
    except Exception as e:  # BadZipFile, EOFError, zlib/lzma errors, CRC errors, ...
        raise fail(path, "archive", f"not a readable graphbp container ({type(e).__name__}: {e})") from None


def _read_member(path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    if info.file_size > cap:
        raise fail(path, info.filename, f"{info.file_size} bytes exceeds the limit of {cap}")
    with zf.open(info) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise fail(path, info.filename, f"more than {cap} bytes")
    return data


def parse_json(path, member: str, data: bytes) -> Any:
    """Decode UTF-8 JSON, refusing NaN/Infinity literals and absurd nesting."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard literal {name}")

    try:
        return json.loads(data.decode("utf-8"), parse_constant=no_constants)
    except RecursionError:
        raise fail(path, member, "JSON nested too deeply") from None
    except Exception as e:
        raise fail(path, member, f"invalid JSON ({type(e).__name__}: {e})") from None


def decode_npz(path, data: bytes, limits: Limits) -> dict[str, np.ndarray]:
    """Parse an ``arrays.npz`` held in memory without pickle and without trusting its headers."""
    where = "arrays.npz"
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception as e:
        raise fail(path, where, f"not a valid npz archive ({type(e).__name__}: {e})") from None
    out: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zf:
            infos = zf.infolist()
            if len(infos) > limits.max_arrays:
                raise fail(path, where, f"{len(infos)} arrays exceeds the limit of {limits.max_arrays}")
            for info in infos:
                name = info.filename
                if not name.endswith(".npy"):
                    raise fail(path, f"{where}/{name}", "member is not a .npy file")
                key = name[:-4]
                if key in out:
                    raise fail(path, f"{where}/{name}", "duplicate array")
                raw = _read_member(path, zf, info, limits.max_array_bytes - total)
                total += len(raw)
                out[key] = _decode_npy(path, f"{where}/{name}", raw, limits)
    except GraphFormatError:
        raise
    except Exception as e:
        raise fail(path, where, f"corrupt archive ({type(e).__name__}: {e})") from None
    return out


def _decode_npy(path, where: str, raw: bytes, limits: Limits) -> np.ndarray:
    fp = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as e:
        raise fail(path, where, f"bad .npy header ({type(e).__name__}: {e})") from None
    if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise fail(path, where, f"dtype {dtype} is not allowed (numeric arrays only; nothing is unpickled)")
    if len(shape) > limits.max_ndim:
        raise fail(path, where, f"{len(shape)} dims exceeds the limit of {limits.max_ndim}")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise fail(path, where, f"invalid shape {shape}")
    count = 1
    for d in shape:
        count *= d
    body = raw[fp.tell():]
    if count * dtype.itemsize != len(body):
        raise fail(path, where, f"header says {shape} {dtype} ({count * dtype.itemsize} bytes) but {len(body)} bytes follow")
    arr = np.frombuffer(body, dtype=dtype, count=count)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return np.array(arr, dtype=dtype.newbyteorder("="), order="C", copy=True)
