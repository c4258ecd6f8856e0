"""Datasets and batching: ``gb.data.batches``, ``gb.data.load_digits``, ``gb.data.load_idx``,
``gb.data.train_test_split``; text for sequence models: ``gb.data.load_text``,
``gb.data.CharVocab``, ``gb.data.bptt_windows`` (truncated-BPTT windows), ``gb.data.pad_sequences``."""

from __future__ import annotations

from .batching import batches, num_batches, train_test_split
from .augment import random_shift
from .digits import load_digits
from .idx import IDXError, load_idx
from .text import CharVocab, bptt_windows, load_text, num_windows, pad_sequences, split_ids, streams

__all__ = ["batches", "num_batches", "train_test_split", "load_digits", "load_idx", "IDXError", "random_shift",
           "load_text", "CharVocab", "split_ids", "streams", "bptt_windows", "num_windows", "pad_sequences"]
