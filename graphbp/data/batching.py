"""Mini-batches over aligned arrays, and deterministic train/test splits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def _check_aligned(arrays: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    if not arrays:
        raise ValueError("batches: give at least one array")
    arrs = tuple(np.asarray(a) for a in arrays)
    for i, a in enumerate(arrs):
        if a.ndim == 0:
            raise ValueError(f"batches: array {i} is a scalar; every array needs a leading sample axis")
    n = len(arrs[0])
    lengths = [len(a) for a in arrs]
    if any(m != n for m in lengths):
        raise ValueError(f"batches: arrays must have the same number of samples, got lengths {lengths}")
    return arrs


def batches(
    *arrays: Any,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    drop_last: bool = False,
    shard: tuple[int, int] | None = None,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield aligned mini-batches ``(a[idx], b[idx], ...)`` covering each sample once.

    One call is one epoch. Shuffling draws a permutation from
    ``np.random.default_rng(seed)``, so the same seed gives the same batches and
    ``seed=epoch`` gives a different, reproducible order every epoch.

    Parameters
    ----------
    *arrays : array-like
        Arrays sharing their first (sample) axis, e.g. ``X, y``.
    batch_size : int
        Samples per batch; the last batch is smaller unless ``drop_last``.
    shuffle : bool, default False
        Visit samples in a random order instead of storage order.
    seed : int or None
        Seed of the shuffle (``None`` draws fresh entropy: not reproducible).
    drop_last : bool, default False
        Skip a final partial batch (keeps every step's batch shape identical).
    shard : (rank, size), optional
        Data parallelism: yield only rank ``rank``'s contiguous ``1/size`` of each global
        batch (call with the same ``seed`` on every rank, so all ranks cut the same global
        batches). ``batch_size`` is the global batch and must divide by ``size``; a final
        partial batch is cut to a multiple of ``size`` (at most ``size - 1`` samples left
        out), so shards are always equal and the mean of the ranks' mean gradients is the
        global batch's mean gradient.

    Yields
    ------
    tuple of numpy.ndarray
        One slice per input array, always a tuple (even for a single array).
    """
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size!r}")
    arrs = _check_aligned(arrays)
    n = len(arrs[0])
    rank, size = _check_shard(shard, batch_size)
    order = np.random.default_rng(seed).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        if size > 1:
            per = (end - start) // size
            if per == 0:
                return
            start, end = start + rank * per, start + (rank + 1) * per
        if order is None:  # contiguous views, no copy
            yield tuple(a[start:end] for a in arrs)
        else:
            idx = order[start:end]
            yield tuple(a[idx] for a in arrs)


def num_batches(n: int, batch_size: int, drop_last: bool = False, shard: tuple[int, int] | None = None) -> int:
    """How many batches :func:`batches` yields for ``n`` samples (for progress bars)."""
    _, size = _check_shard(shard, batch_size)
    if drop_last or n % batch_size < size:  # a final batch smaller than the rank count is skipped
        return n // batch_size
    return -(-n // batch_size)


def _check_shard(shard: tuple[int, int] | None, batch_size: int) -> tuple[int, int]:
    if shard is None:
        return 0, 1
    try:
        rank, size = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"batches: shard must be (rank, size), got {shard!r}") from None
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"batches: shard needs 0 <= rank < size, got rank {rank}, size {size}")
    if batch_size % size:
        raise ValueError(
            f"batches: the global batch_size {batch_size} does not divide into {size} equal shards; "
            f"use a multiple of {size}"
        )
    return rank, size


def train_test_split(
    *arrays: Any,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify: Any = None,
) -> tuple[np.ndarray, ...]:
    """Split aligned arrays into ``(a_train, a_test, b_train, b_test, ...)``, reproducibly.

    Parameters
    ----------
    *arrays : array-like
        Arrays sharing their first axis.
    test_fraction : float, default 0.2
        Share of samples held out, in (0, 1).
    seed : int, default 0
        Seed of the permutation; the same seed always gives the same split.
    stratify : array-like of labels, optional
        Hold out ``test_fraction`` of each class separately, so the test set has the
        class balance of the whole (useful on small sets such as digits).

    Returns
    -------
    tuple of numpy.ndarray
        Train and test part of each input, in the input order (sample order shuffled).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"train_test_split: test_fraction must be in (0, 1), got {test_fraction}")
    arrs = _check_aligned(arrays)
    n = len(arrs[0])
    rng = np.random.default_rng(seed)
    if stratify is None:
        perm = rng.permutation(n)
        n_test = max(1, int(round(n * test_fraction)))
        test_idx, train_idx = perm[:n_test], perm[n_test:]
    else:
        labels = np.asarray(stratify)
        if len(labels) != n:
            raise ValueError(f"train_test_split: stratify has {len(labels)} labels for {n} samples")
        test_parts, train_parts = [], []
        for c in np.unique(labels):  # sorted classes: deterministic
            members = rng.permutation(np.flatnonzero(labels == c))
            k = int(round(len(members) * test_fraction))
            test_parts.append(members[:k])
            train_parts.append(members[k:])
        test_idx = rng.permutation(np.concatenate(test_parts))
        train_idx = rng.permutation(np.concatenate(train_parts))
    if len(train_idx) == 0:
        raise ValueError(f"train_test_split: test_fraction={test_fraction} leaves no training samples")
    out: list[np.ndarray] = []
    for a in arrs:
        out.extend((a[train_idx], a[test_idx]))
    return tuple(out)
