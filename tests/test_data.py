"""Batching, splitting and the bundled digits data."""

import subprocess
import sys

import numpy as np
import pytest

import graphbp as gb


@pytest.mark.parametrize("n,bs,drop_last", [(10, 3, False), (10, 3, True), (9, 3, False), (5, 8, False)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_sample_once(n, bs, drop_last, shuffle):
    X = np.arange(n * 2).reshape(n, 2)
    y = np.arange(n)
    got = list(gb.data.batches(X, y, batch_size=bs, shuffle=shuffle, seed=7, drop_last=drop_last))
    ys = np.concatenate([b[1] for b in got]) if got else np.array([], int)
    expected = n - n % bs if drop_last else n
    assert len(ys) == expected and len(set(ys.tolist())) == expected
    for xb, yb in got:  # rows stay aligned
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)
        assert len(yb) <= bs and (not drop_last or len(yb) == bs)
    assert len(got) == gb.data.num_batches(n, bs, drop_last)
    if not shuffle:
        np.testing.assert_array_equal(ys, np.arange(expected))


def test_shuffle_is_deterministic_per_seed():
    X = np.arange(100)

    def order(seed):
        return np.concatenate([b[0] for b in gb.data.batches(X, batch_size=16, shuffle=True, seed=seed)])

    np.testing.assert_array_equal(order(3), order(3))
    assert not np.array_equal(order(3), order(4))
    assert not np.array_equal(order(3), X)


def test_batches_rejects_misaligned_and_bad_sizes():
    with pytest.raises(ValueError, match="same number of samples"):
        list(gb.data.batches(np.zeros(3), np.zeros(4), batch_size=2))
    with pytest.raises(ValueError, match="batch_size"):
        list(gb.data.batches(np.zeros(3), batch_size=0))


def test_load_digits_is_the_uci_set():
    X, y = gb.data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.array_equal(np.unique(y), np.arange(10))
    np.testing.assert_array_equal(np.bincount(y), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    raw, _ = gb.data.load_digits(scale=False)
    assert np.array_equal(raw, np.round(raw)) and raw.max() == 16


def test_graphbp_never_imports_sklearn():
    code = "import sys, graphbp as gb; gb.data.load_digits(); assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_digits_data_ships_with_its_licence():
    from importlib import resources

    files = resources.files("graphbp.data")
    text = files.joinpath("DIGITS_LICENSE.txt").read_text()
    assert "CC BY 4.0" in text and "Alpaydin" in text
    assert files.joinpath("digits.csv.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip


def test_train_test_split_is_deterministic_and_disjoint():
    X, y = gb.data.load_digits()
    idx = np.arange(len(y))
    a = gb.data.train_test_split(X, y, idx, test_fraction=0.2, seed=0, stratify=y)
    b = gb.data.train_test_split(X, y, idx, test_fraction=0.2, seed=0, stratify=y)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    Xtr, Xte, ytr, yte, itr, ite = a
    assert len(ite) == 359 and len(itr) == 1438
    assert not set(itr.tolist()) & set(ite.tolist())
    np.testing.assert_array_equal(Xte, X[ite])
    assert np.all(np.abs(np.bincount(yte) - 0.2 * np.bincount(y)) <= 1)  # stratified
    plain = gb.data.train_test_split(X, y, test_fraction=0.25, seed=1)
    assert len(plain[3]) == round(1797 * 0.25)
