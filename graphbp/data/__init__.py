"""Datasets and batching: ``gb.data.batches``, ``gb.data.load_digits``, ``gb.data.load_idx``,
``gb.data.train_test_split``."""

from __future__ import annotations

from .batching import batches, num_batches, train_test_split
from .augment import random_shift
from .digits import load_digits
from .idx import IDXError, load_idx

__all__ = ["batches", "num_batches", "train_test_split", "load_digits", "load_idx", "IDXError", "random_shift"]
