"""Text data for sequence models: the bundled corpus, the character vocabulary, truncated-BPTT
windows (contiguous streams per row) and padding."""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb
from graphbp.data import text


def test_bundled_corpus_loads_with_its_licence():
    corpus = gb.data.load_text("fortunes")
    assert len(corpus) == 366_917 and corpus.isascii()
    vocab = gb.data.CharVocab.from_text(corpus)
    assert vocab.size == 87 and "\n" in vocab.chars and " " in vocab.chars
    assert corpus.startswith("(1) Avoid fried meats") and corpus.endswith("Tao Te Ching\"\n")
    from importlib import resources

    licence = resources.files("graphbp.data").joinpath("FORTUNES_LICENSE.txt").read_text()
    assert "BSD" in licence and "fortune" in licence
    with pytest.raises(ValueError, match="unknown corpus"):
        gb.data.load_text("shakespeare")


def test_char_vocab_round_trip_and_deterministic_ids():
    v = gb.data.CharVocab.from_text("hello world")
    assert v.chars == (" ", "d", "e", "h", "l", "o", "r", "w") and len(v) == 8
    ids = v.encode("hello")
    assert ids.dtype == np.int64 and ids.tolist() == [3, 2, 4, 4, 5]
    assert v.decode(ids) == "hello" and v.decode(np.array([[7], [5]])) == "wo"
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        v.encode("zebra")
    with pytest.raises(ValueError, match="distinct"):
        gb.data.CharVocab(("a", "a"))


def test_split_ids_keeps_the_tail_contiguous():
    ids = np.arange(100)
    tr, te = gb.data.split_ids(ids, 0.1)
    assert tr.tolist() == list(range(90)) and te.tolist() == list(range(90, 100))
    with pytest.raises(ValueError):
        gb.data.split_ids(ids, 1.0)


def test_bptt_windows_rows_are_contiguous_streams():
    ids = np.arange(23, dtype=np.int64)  # 3 rows of 7 steps (tokens 0..21 in, 1..22 out)
    wins = list(gb.data.bptt_windows(ids, batch_size=3, window=3))
    assert [w[0].shape for w in wins] == [(3, 3), (3, 3), (3, 1)]
    assert gb.data.num_windows(len(ids), 3, 3) == 3 and gb.data.num_windows(len(ids), 3, 3, drop_last=True) == 2
    x = np.concatenate([w[0] for w in wins], axis=1)
    y = np.concatenate([w[1] for w in wins], axis=1)
    np.testing.assert_array_equal(x, np.arange(21).reshape(3, 7))  # row b continues across windows
    np.testing.assert_array_equal(y, x + 1)  # the next token
    assert wins[1][0][1, 0] == wins[0][0][1, -1] + 1  # window k+1 starts where window k ended
    dropped = list(gb.data.bptt_windows(ids, batch_size=3, window=3, drop_last=True))
    assert len(dropped) == 2 and all(w[0].shape == (3, 3) for w in dropped)


def test_windows_reject_bad_arguments():
    with pytest.raises(ValueError, match="too few"):
        text.streams(np.arange(3), 4)
    with pytest.raises(ValueError, match="1-D integer"):
        text.streams(np.zeros(10), 2)
    with pytest.raises(ValueError, match="window"):
        list(gb.data.bptt_windows(np.arange(10), 2, 0))


def test_pad_sequences_gives_ids_and_mask():
    ids, mask = gb.data.pad_sequences([[1, 2, 3], [4], []], pad=9)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9], [9, 9, 9]]
    assert mask.dtype == np.float32 and mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    ids, mask = gb.data.pad_sequences([[1, 2, 3]], length=2)
    assert ids.tolist() == [[1, 2]] and mask.tolist() == [[1, 1]]
