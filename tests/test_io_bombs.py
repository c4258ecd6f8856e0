"""Hostile files cost what their real bytes cost: decompression bombs at every level.

Each bomb is a file of about 2 MB that inflates to 2 GiB (the JSON one to 500 MiB). It is
loaded in a child process (``bombs.measure``) whose address space may grow by at most 1 GiB,
so a loader that believed it would die there instead of taking down the test runner. The
assertions bound the work done, not the speed of the machine: the peak RSS growth, and CPU
time a hundred times below what inflating the bomb would take.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

import graphbp as gb
from graphbp.io.bounded import FileRegion, read_exact, read_file, read_region, skip_exact

import bombs

GIB, MIB = 2**30, 2**20
CAP = GIB  # address-space headroom of each measuring child
MAX_GROWTH = 200 * MIB
MAX_CPU = 1.0  # seconds; inflating 2 GiB of zeros and checking its CRC takes several

CASES = {
    "outer member (arrays.npz deflated)": "compressed member refused.*compressed_arrays",
    "inner .npy (lying header, deflated zeros)": "declares 2147483776 bytes of arrays but the file has",
    "graph.json padded with whitespace": "max_compression_ratio",
    "honest .npy header, deflated zeros": "declares 2147483776 bytes of arrays but the file has",
}


def _refused_cheaply(result: dict, match: str) -> None:
    import re

    assert result["outcome"].startswith("GraphFormatError"), result
    assert re.search(match, result["outcome"]), result
    assert result["growth"] < MAX_GROWTH, result
    assert result["cpu"] < MAX_CPU, result


@pytest.mark.parametrize("name", sorted(CASES))
def test_bombs_are_refused_before_they_inflate(tmp_path, name):
    path = tmp_path / "bomb.gbp"
    path.write_bytes(bombs.BOMBS[name](2 * GIB))
    assert path.stat().st_size < 3 * MIB
    _refused_cheaply(bombs.measure(path, CAP), CASES[name])


def test_checkpoint_bombs_are_refused_the_same_way(tmp_path):
    path = tmp_path / "bomb.gbc"
    path.write_bytes(bombs.bomb_checkpoint(2 * GIB))
    _refused_cheaply(bombs.measure(path, CAP, kind="checkpoint"), "compressed member refused")


TRUSTED = {"compressed_arrays": True, "max_compression_ratio": 5000.0}


def test_trusted_limits_still_refuse_a_lying_npy_header_before_its_body(tmp_path):
    path = tmp_path / "bomb.gbp"
    path.write_bytes(bombs.bomb_inner_npy(2 * GIB))
    _refused_cheaply(bombs.measure(path, CAP, TRUSTED), r"header says \(4,\) float64 \(32 bytes\) but 2147483648")


def test_a_member_inflating_past_its_declared_size_stops_there(tmp_path):
    """The ZIP header declares a 4-float .npy; its deflate stream goes on for 2 GiB."""
    header = bombs.npy_header((4,))
    payload, crc, _ = bombs.deflate_zeros(header, 2 * GIB)
    npz = bombs.raw_zip([("a0.npy", payload, bombs.DEFLATED, crc, len(header) + 32)])
    path = tmp_path / "long.gbp"
    path.write_bytes(bombs.raw_zip([bombs.deflated("graph.json", bombs._json(bombs.seed_doc())),
                                    bombs.stored("arrays.npz", npz)]))
    _refused_cheaply(bombs.measure(path, CAP, TRUSTED), "CRC")


def _small_graph(tmp_path):
    w = gb.param("w", np.arange(12.0).reshape(3, 4))
    path = tmp_path / "small.gbp"
    gb.save(path, gb.sum(gb.tanh(w)))
    with zipfile.ZipFile(path) as zf:
        return path, {i.filename: zf.read(i) for i in zf.infolist()}


def _rezip(members: dict[str, bytes], compress: set[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED)
    return buf.getvalue()


@pytest.mark.parametrize("level", ["outer", "inner"])
def test_compressed_arrays_load_only_when_trusted(tmp_path, level):
    path, members = _small_graph(tmp_path)
    with zipfile.ZipFile(io.BytesIO(members["arrays.npz"])) as zf:
        inner = {i.filename: zf.read(i) for i in zf.infolist()}
    if level == "inner":
        members["arrays.npz"] = _rezip(inner, set(inner))
    bad = tmp_path / "compressed.gbp"
    bad.write_bytes(_rezip(members, {"graph.json", "arrays.npz"} if level == "outer" else {"graph.json"}))
    with pytest.raises(gb.GraphFormatError, match="Limits.compressed_arrays"):
        gb.load(bad)
    loaded = gb.load(bad, limits=gb.Limits(compressed_arrays=True))
    np.testing.assert_array_equal(loaded.node("w").op.value, np.arange(12.0).reshape(3, 4))


def test_ratio_cap_names_itself_and_can_be_raised(tmp_path):
    path = tmp_path / "padded.gbp"
    path.write_bytes(bombs.bomb_json(8 * MIB))
    with pytest.raises(gb.GraphFormatError, match="ratio over the limit of 16 .Limits.max_compression_ratio"):
        gb.load(path)
    assert gb.load(path, limits=gb.Limits(max_compression_ratio=2000)).params[0].shape == (4,)


def test_save_stores_a_document_that_compresses_too_well(tmp_path):
    path = tmp_path / "repetitive.gbp"
    gb.save(path, gb.sum(gb.param("w" * 2**20, np.ones(3))))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("graph.json").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("arrays.npz").compress_type == zipfile.ZIP_STORED
    assert gb.load(path).params[0].name == "w" * 2**20
    gb.save(path, gb.sum(gb.param("w", np.ones(3))))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("graph.json").compress_type == zipfile.ZIP_DEFLATED


_SAVE_LARGE = r"""
import hashlib, sys
import numpy as np
import graphbp as gb
w1 = gb.param("w1", np.arange(4096 * 8192, dtype=np.float32).reshape(4096, 8192))
w2 = gb.param("w2", np.linspace(-1, 1, 2048 * 8192).reshape(2048, 8192))
gb.save(sys.argv[1], gb.sum(w1) + gb.sum(w2))
h = hashlib.sha256()
for p in (w1, w2):
    h.update(p.op.value.data)
print(h.hexdigest())
"""


def test_large_round_trip_costs_one_copy_of_the_arrays(tmp_path):
    """256 MB of parameters: loading grows the peak RSS by about their size, not a multiple."""
    import subprocess
    import sys

    path = tmp_path / "large.gbp"
    saved = subprocess.run([sys.executable, "-c", _SAVE_LARGE, str(path)], capture_output=True, text=True,
                           check=True).stdout.strip()
    arrays = 4096 * 8192 * 4 + 2048 * 8192 * 8
    r = bombs.measure(path, cap=arrays + GIB)
    assert r["outcome"] == "loaded", r
    assert r["digest"] == saved
    assert r["growth"] < arrays + 64 * MIB, r  # old loader: three copies


def test_read_exact_stops_at_the_first_byte_over_the_declared_size():
    assert read_exact(io.BytesIO(b"abcd"), 4, "f", "m") == b"abcd"
    with pytest.raises(gb.GraphFormatError, match="f: m: holds more than its declared 4 bytes"):
        read_exact(io.BytesIO(b"abcde"), 4, "f", "m")
    with pytest.raises(gb.GraphFormatError, match="ends after 3 of its declared 4 bytes"):
        read_exact(io.BytesIO(b"abc"), 4, "f", "m")
    seen = []
    skip_exact(io.BytesIO(b"xyz"), 3, "f", "m", seen.append)
    assert b"".join(seen) == b"xyz"
    with pytest.raises(gb.GraphFormatError, match="holds more"):
        skip_exact(io.BytesIO(b"xyz!"), 3, "f", "m")


def test_file_region_is_a_seekable_window():
    region = FileRegion(io.BytesIO(b"0123456789"), 2, 5)
    assert region.read() == b"23456"
    assert region.seek(-2, io.SEEK_END) == 3 and region.read(10) == b"56"
    region.seek(1)
    assert region.read(2) == b"34" and region.tell() == 3
    assert region.read(0) == b"" and region.seek(100) == 100 and region.read() == b""


def test_plain_files_are_read_under_a_cap_and_regions_must_be_in_the_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(100)))
    assert read_file(path, 100, "Limits.max_file_bytes") == bytes(range(100))
    with pytest.raises(gb.GraphFormatError, match="100 bytes exceeds the limit of 99 .Limits.max_file_bytes"):
        read_file(path, 99, "Limits.max_file_bytes")
    out = np.empty(3, np.uint8)
    read_region(path, 97, memoryview(out), "w.data")
    assert out.tolist() == [97, 98, 99]
    for offset in (98, -1):
        with pytest.raises(gb.GraphFormatError, match=r"w.data: bytes \[.*\) are not in the file \(100 bytes\)"):
            read_region(path, offset, memoryview(out), "w.data")
    with pytest.raises(gb.GraphFormatError, match="cannot be read"):
        read_file(tmp_path / "missing.bin", 10, "cap")
