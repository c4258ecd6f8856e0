"""Text for sequence models: the bundled quotations corpus, a character vocabulary, and
the cutting of token ids into (input, target) windows.

Truncated backpropagation through time trains on windows of ``T`` tokens but lets the
recurrent state run on across windows. That needs each batch row to be one contiguous
stream: row ``b`` of window ``k + 1`` continues row ``b`` of window ``k``, so the final
carry of one window is the right initial carry of the next. :func:`bptt_windows` cuts the
ids that way (the layout of the classic PyTorch word-language-model example), not into
independent shuffled windows.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

CORPORA = {"fortunes": "fortunes.txt.gz"}
"""Bundled corpora by name -> file beside this module (licence: FORTUNES_LICENSE.txt)."""


def load_text(name: str = "fortunes") -> str:
    """A bundled text corpus as one string.

    ``"fortunes"``: 2,290 quotations from the BSD fortune(6) files (about 367,000
    characters, 87 distinct, printable ASCII and newlines), separated by blank lines; see
    ``FORTUNES_LICENSE.txt`` beside the file for the source, the licence and what was
    changed.
    """
    if name not in CORPORA:
        raise ValueError(f"load_text: unknown corpus {name!r}; bundled: {sorted(CORPORA)}")
    with resources.files(__package__).joinpath(CORPORA[name]).open("rb") as raw:
        return gzip.decompress(raw.read()).decode("ascii")


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: id ``i`` is ``chars[i]``; ids are sorted by character so the
    same text gives the same ids on every run."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """Every distinct character of ``text``."""
        return cls(tuple(sorted(set(text))))

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("CharVocab: chars must be distinct single characters")

    @property
    def size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """int64 ids of ``text``; a character outside the vocabulary raises ``ValueError``."""
        index = {c: i for i, c in enumerate(self.chars)}
        try:
            return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as e:
            raise ValueError(f"CharVocab.encode: character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of ``ids`` joined into a string."""
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def split_ids(ids: np.ndarray, test_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Training head and held-out tail of a token stream (contiguous, not shuffled: shuffled
    characters would leak the held-out context into training)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"split_ids: test_fraction must be in (0, 1), got {test_fraction}")
    ids = np.asarray(ids)
    cut = len(ids) - max(1, int(round(len(ids) * test_fraction)))
    return ids[:cut], ids[cut:]


def streams(ids: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)``, each ``(batch_size, L)``: row ``b`` is the ``b``-th of
    ``batch_size`` equal contiguous pieces of ``ids`` and its targets are the same tokens
    shifted by one. The last ``len(ids) - 1 - batch_size * L`` tokens are left out."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"streams: ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"streams: batch_size must be a positive integer, got {batch_size!r}")
    length = (len(ids) - 1) // batch_size
    if length < 1:
        raise ValueError(f"streams: {len(ids)} ids are too few for {batch_size} rows of at least one step")
    n = batch_size * length
    return ids[:n].reshape(batch_size, length), ids[1:n + 1].reshape(batch_size, length)


def num_windows(n_ids: int, batch_size: int, window: int, drop_last: bool = False) -> int:
    """How many windows :func:`bptt_windows` yields for ``n_ids`` tokens."""
    length = max((n_ids - 1) // batch_size, 0)
    return length // window if drop_last else -(-length // window)


def bptt_windows(ids: np.ndarray, batch_size: int, window: int, *,
                 drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Consecutive ``(x, y)`` windows, each ``(batch_size, window)`` int64, of
    :func:`streams`: ``y[b, t]`` is the token after ``x[b, t]``, and row ``b`` of each
    window continues row ``b`` of the one before, so a recurrent state carried from one
    window to the next has read exactly the tokens before the new window (truncated BPTT).

    The last window is shorter unless ``drop_last`` (which keeps every window's shape the
    same, so one compiled step program serves all)."""
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"bptt_windows: window must be a positive integer, got {window!r}")
    x, y = streams(ids, batch_size)
    length = x.shape[1]
    stop = length - length % window if drop_last else length
    for s in range(0, stop, window):
        yield x[:, s:s + window], y[:, s:s + window]


def pad_sequences(seqs: Sequence[Sequence[int]], pad: int = 0,
                  length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad integer sequences into ``(ids, mask)``, both ``(len(seqs), length)``:
    ``ids`` int64 filled with ``pad``, ``mask`` float32, 1 on real tokens and 0 on padding
    (what :func:`graphbp.nn.masked_softmax_cross_entropy` takes). ``length`` defaults to the
    longest sequence; longer sequences are cut."""
    rows = [np.asarray(s, dtype=np.int64).reshape(-1) for s in seqs]
    if length is None:
        length = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), length), pad, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.float32)
    for i, r in enumerate(rows):
        k = min(len(r), length)
        ids[i, :k] = r[:k]
        mask[i, :k] = 1.0
    return ids, mask
