"""The UCI handwritten digits set (1,797 8x8 images), shipped inside the package.

The file is the copy scikit-learn bundles (``digits.csv.gz``, ~57 KB); see
``DIGITS_LICENSE.txt`` beside it for the source, licence (CC BY 4.0) and citation.
Loading needs only NumPy, so graphbp never imports scikit-learn.
"""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np

N_SAMPLES = 1797
N_FEATURES = 64
N_CLASSES = 10


def load_digits(*, scale: bool = True, images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load the digits as ``(X, y)``.

    Parameters
    ----------
    scale : bool, default True
        Divide pixel counts (0..16) by 16 so ``X`` lies in [0, 1], the range the
        initialisers assume; ``False`` keeps the raw counts (still float32).
    images : bool, default False
        Return ``X`` as one-channel images ``(1797, 1, 8, 8)`` (NCHW, what ``gb.conv2d``
        takes) instead of flattened rows. Same samples in the same order either way.

    Returns
    -------
    X : numpy.ndarray, float32, shape (1797, 64) or (1797, 1, 8, 8)
        Row-major flattened 8x8 images, or the images themselves.
    y : numpy.ndarray, int64, shape (1797,)
        The digit, 0..9.
    """
    with resources.files(__package__).joinpath("digits.csv.gz").open("rb") as raw:
        with gzip.open(raw, "rt") as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.float32)
    if table.shape != (N_SAMPLES, N_FEATURES + 1):
        raise ValueError(f"digits.csv.gz: expected {N_SAMPLES}x{N_FEATURES + 1} values, found {table.shape}")
    X = np.ascontiguousarray(table[:, :N_FEATURES])
    y = table[:, N_FEATURES].astype(np.int64)
    if scale:
        X /= np.float32(16.0)
    if images:
        X = X.reshape(N_SAMPLES, 1, 8, 8)
    return X, y
