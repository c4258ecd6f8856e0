"""Hostile graph files (decompression bombs) and a sandboxed way to measure what loading them costs.

Each bomb is a file of a few MB that expands to gigabytes if a loader believes it. The
deflate streams are built without ever holding the inflated bytes: a 1 MiB block of zeros is
compressed once, ending on a full flush (byte-aligned, dictionary reset), so repeating it is
still a valid stream; the CRC of the zeros is computed by GF(2) matrix powers, as zlib's
``crc32_combine`` does. :func:`measure` loads a file in a child process under an address-space
limit (``RLIMIT_AS``) and reports the growth of its peak resident memory and the time taken,
so a loader that does blow up cannot take the test runner (or the machine) with it.

``python tests/bombs.py [--gib 2] [--trusted]`` prints the table quoted in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

MiB = 2**20
_POLY = 0xEDB88320


# ---------------------------------------------------------------------- CRC and deflate
def _apply(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def crc32_zeros(crc: int, n: int) -> int:
    """``zlib.crc32(bytes(n), crc)`` in O(log n): zero bytes act linearly on the register."""
    op = [_POLY] + [1 << (i - 1) for i in range(1, 32)]  # one zero bit
    reg = crc ^ 0xFFFFFFFF
    bits = 8 * n
    while bits:
        if bits & 1:
            reg = _apply(op, reg)
        op = [_apply(op, op[i]) for i in range(32)]
        bits >>= 1
    return reg ^ 0xFFFFFFFF


def deflate_zeros(prefix: bytes, n: int) -> tuple[bytes, int, int]:
    """Raw deflate of ``prefix + bytes(n)``: (compressed payload, CRC-32, inflated size)."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)]
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = block.compress(bytes(MiB)) + block.flush(zlib.Z_FULL_FLUSH)
    parts.append(mib * (n // MiB))
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts.append(tail.compress(bytes(n % MiB)) + tail.flush())
    return b"".join(parts), crc32_zeros(zlib.crc32(prefix), n), len(prefix) + n


# ---------------------------------------------------------------------- ZIP writing
STORED, DEFLATED = 0, 8


def raw_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A ZIP of ``(name, payload, method, crc, size)`` members whose payloads are given as is."""
    out = io.BytesIO()
    central = []
    for name, payload, method, crc, size in members:
        offset = out.tell()
        nb = name.encode()
        out.write(struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, method, 0, 0x21, crc, len(payload), size, len(nb), 0))
        out.write(nb)
        out.write(payload)
        central.append((nb, method, crc, len(payload), size, offset))
    start = out.tell()
    for nb, method, crc, csize, size, offset in central:
        out.write(struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, method, 0, 0x21, crc, csize, size,
                              len(nb), 0, 0, 0, 0, 0o644 << 16, offset))
        out.write(nb)
    end = out.tell()
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), end - start, start, 0))
    return out.getvalue()


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, STORED, zlib.crc32(data), len(data)


def deflated(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return name, c.compress(data) + c.flush(), DEFLATED, zlib.crc32(data), len(data)


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


# ---------------------------------------------------------------------- the bombs
def seed_doc(n: int = 4) -> dict:
    """The document of a one-parameter graph ``sum(w)`` whose ``w`` is float64 of shape (n,)."""
    import graphbp as gb
    from graphbp.io.format import to_document

    doc, _ = to_document(gb.sum(gb.param("w", np.zeros(4))))
    doc["nodes"][0]["type"]["shape"] = [n]
    return doc


def _json(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _npz(members) -> bytes:
    return raw_zip(members)


def bomb_outer(size: int) -> bytes:
    """``arrays.npz`` is itself a deflated stream of ``size`` zero bytes (honest ZIP header)."""
    return raw_zip([deflated("graph.json", _json(seed_doc())), ("arrays.npz", *_zeros_member(b"", size))])


def bomb_inner_npy(size: int) -> bytes:
    """A ``.npy`` header for 4 floats followed by ``size`` deflated zero bytes."""
    npz = _npz([("a0.npy", *_zeros_member(npy_header((4,)), size))])
    return raw_zip([deflated("graph.json", _json(seed_doc())), stored("arrays.npz", npz)])


def bomb_json(size: int) -> bytes:
    """A valid ``graph.json`` followed by spaces, deflated: ``size`` bytes, at most 500 MiB (so
    under the default ``max_json_bytes``, which a bigger member would hit at once)."""
    size = min(size, 500 * MiB)
    doc = _json(seed_doc())
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    spaces = b" " * MiB
    payload = (head.compress(doc) + head.flush(zlib.Z_FULL_FLUSH)
               + (block.compress(spaces) + block.flush(zlib.Z_FULL_FLUSH)) * (size // MiB) + b"\x03\x00")
    crc = zlib.crc32(doc)
    for _ in range(size // MiB):
        crc = zlib.crc32(spaces, crc)
    npz = _npz([stored("a0.npy", npy_header((4,)) + bytes(32))])
    return raw_zip([("graph.json", payload, DEFLATED, crc, len(doc) + size // MiB * MiB), stored("arrays.npz", npz)])


def bomb_honest_npy(size: int) -> bytes:
    """A valid graph whose parameter honestly declares ``size`` bytes, all deflated zeros."""
    n = size // 8
    npz = _npz([("a0.npy", *_zeros_member(npy_header((n,)), n * 8))])
    return raw_zip([deflated("graph.json", _json(seed_doc(n))), stored("arrays.npz", npz)])


def bomb_checkpoint(size: int) -> bytes:
    """A checkpoint whose ``arrays.npz`` is a deflated stream of ``size`` zero bytes."""
    doc = {"format": "graphbp.checkpoint", "version": 1, "step": 0, "extra": None, "params": [], "optimizer": None}
    return raw_zip([deflated("checkpoint.json", _json(doc)), ("arrays.npz", *_zeros_member(b"", size)),
                    stored("SHA256", b"0" * 64)])


def _zeros_member(prefix: bytes, n: int) -> tuple[bytes, int, int, int]:
    payload, crc, total = deflate_zeros(prefix, n)
    return payload, DEFLATED, crc, total


BOMBS = {
    "outer member (arrays.npz deflated)": bomb_outer,
    "inner .npy (lying header, deflated zeros)": bomb_inner_npy,
    "graph.json padded with whitespace": bomb_json,
    "honest .npy header, deflated zeros": bomb_honest_npy,
}


# ---------------------------------------------------------------------- sandboxed measuring
_CHILD = r"""
import hashlib, json, resource, sys, time
def vm():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
import numpy as np
import graphbp as gb
path, cap, limits, kind = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_AS, (vm() + cap, vm() + cap))
resource.setrlimit(resource.RLIMIT_CPU, (120, 120))  # a runaway loader is killed, not waited for
lim = gb.Limits(**limits)
digest = None
before = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
try:
    if kind == "checkpoint":
        gb.load_checkpoint(path, {}, limits=lim)
        outcome = "loaded"
    else:
        loaded = gb.load(path, limits=lim)
        outcome = "loaded"
except MemoryError:
    outcome = "MemoryError (hit the address-space cap)"
except gb.GraphFormatError as e:
    outcome = "GraphFormatError: " + str(e).split(": ", 1)[1]
seconds = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF)
if outcome == "loaded" and kind == "graph":
    h = hashlib.sha256()
    for p in sorted(loaded.params, key=lambda p: p.name):
        h.update(np.ascontiguousarray(p.op.value).data)
    digest = h.hexdigest()
cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
growth = (after.ru_maxrss - before.ru_maxrss) * 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "cpu": cpu, "growth": growth, "digest": digest}))
"""


def measure(path, cap: int = 2**30, limits: dict | None = None, kind: str = "graph") -> dict:
    """Load ``path`` in a child process whose address space may grow by at most ``cap`` bytes.

    ``kind`` is ``"graph"`` (``gb.load``) or ``"checkpoint"`` (``gb.load_checkpoint``).
    Returns ``{"outcome", "seconds", "cpu", "growth", "digest"}``: wall and CPU seconds and
    growth of the peak RSS in bytes (``getrusage``) around the load call only, and for a
    loaded graph the SHA-256 of its parameters' bytes in name order.
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, os.fspath(path), str(cap), json.dumps(limits or {}), kind],
                          capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def memory_cap(extra: int):
    """Limit this process's address space to its current size plus ``extra`` bytes, then restore.

    A test that allocates more gets a ``MemoryError`` instead of taking the machine down.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    new = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (new, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def inflated(data: bytes) -> int:
    """The bytes a bomb claims to inflate to: its members' sizes, looking into a stored npz."""
    import zipfile

    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            head = zf.open(info).read(4) if info.compress_type == STORED else b""
            if head == b"PK\x03\x04":
                total += inflated(zf.read(info))
            else:
                total += info.file_size
    return total


def main(argv: list[str]) -> None:
    gib = float(argv[argv.index("--gib") + 1]) if "--gib" in argv else 2.0
    cap = int(float(argv[argv.index("--cap-gib") + 1]) * 2**30) if "--cap-gib" in argv else 6 * 2**30
    size = int(gib * 2**30)
    limits = {"compressed_arrays": True, "max_compression_ratio": 5000.0} if "--trusted" in argv else {}
    if limits:
        print(f"With `gb.Limits(**{limits})`:\n")
    print("| bomb | file | inflates to | peak RSS growth | time | outcome |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name, build in BOMBS.items():
            path = os.path.join(d, "bomb.gbp")
            data = build(size)
            with open(path, "wb") as f:
                f.write(data)
            r = measure(path, cap, limits)
            print(f"| {name} | {len(data) / MiB:.1f} MB | {inflated(data) / MiB:,.0f} MB | {r['growth'] / MiB:,.0f} MB "
                  f"| {r['seconds']:.2f} s | {r['outcome'][:90]} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
