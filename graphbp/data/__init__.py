"""Datasets and batching: ``gb.data.batches``, ``gb.data.load_digits``, ``gb.data.train_test_split``."""

from __future__ import annotations

from .batching import batches, num_batches, train_test_split
from .digits import load_digits

__all__ = ["batches", "num_batches", "train_test_split", "load_digits"]
