"""gb.data.load_idx on IDX files the tests write (raw and gzip), and the digits image form."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

import graphbp as gb


def _idx_bytes(a: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype, code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                         (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_of_every_type_raw_and_gzip(tmp_path, dtype, code, compress):
    a = (np.arange(3 * 4 * 5) % 120).astype(dtype).reshape(3, 4, 5)
    data = _idx_bytes(a, code)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(data) if compress else data)
    got = gb.data.load_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


def test_mnist_shaped_labels_and_images(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    labels = np.arange(7, dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images, 0x08)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(labels, 0x08))
    np.testing.assert_array_equal(gb.data.load_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    np.testing.assert_array_equal(gb.data.load_idx(tmp_path / "train-labels-idx1-ubyte"), labels)


@pytest.mark.parametrize("data, words", [
    (b"\x00\x00", "too short"),
    (b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX type code 0x07"),
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "ends inside"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00" * 4, "(5,) of uint8 (5 bytes) but the file holds 4"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x00" * 3, "holds 3"),
    (b"\x00\x00\x0d\x02" + struct.pack(">II", 60000, 60000) + b"\x00" * 8, "over max_bytes"),
    (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
])
def test_bad_files_raise_a_clear_error(tmp_path, data, words):
    path = tmp_path / "bad.idx"
    path.write_bytes(data)
    with pytest.raises(gb.data.IDXError) as info:
        gb.data.load_idx(path, max_bytes=1 << 20)
    assert words in str(info.value) and "bad.idx" in str(info.value)


def test_gzip_bomb_stops_at_the_limit(tmp_path):
    payload = bytes([0, 0, 8, 1]) + struct.pack(">I", 16) + b"\x00" * (1 << 22)
    path = tmp_path / "bomb.idx.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(gb.data.IDXError, match="or more"):
        gb.data.load_idx(path, max_bytes=1 << 16)


def test_digits_image_form_matches_the_rows():
    X, y = gb.data.load_digits()
    Xi, yi = gb.data.load_digits(images=True)
    assert Xi.shape == (1797, 1, 8, 8) and Xi.dtype == np.float32
    np.testing.assert_array_equal(Xi.reshape(1797, 64), X)
    np.testing.assert_array_equal(yi, y)
