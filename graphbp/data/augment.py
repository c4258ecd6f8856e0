"""Light data augmentation for small images: random shifts (NumPy only, seeded)."""

from __future__ import annotations

import numpy as np


def random_shift(images: np.ndarray, max_shift: int = 1, *, seed: int | None = None) -> np.ndarray:
    """Each image moved by its own random offset in ``[-max_shift, max_shift]`` along height
    and width, the vacated border filled with zeros (the background of the digits).

    ``images`` is ``(N, C, H, W)``; the result is a new array of the same shape and dtype.
    Moving a digit by a pixel keeps its class, so a CNN trained on shifted copies learns the
    small translation invariance the held-out images need.
    """
    if images.ndim != 4:
        raise ValueError(f"random_shift: images must be (N, C, H, W), got shape {images.shape}")
    m = int(max_shift)
    rng = np.random.default_rng(seed)
    n, _, h, w = images.shape
    offsets = rng.integers(-m, m + 1, size=(n, 2))
    padded = np.pad(images, ((0, 0), (0, 0), (m, m), (m, m)))
    out = np.empty_like(images)
    for dy in range(-m, m + 1):  # one fancy-index copy per offset, not per image
        for dx in range(-m, m + 1):
            sel = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
            out[sel] = padded[sel, :, m - dy: m - dy + h, m - dx: m - dx + w]
    return out
