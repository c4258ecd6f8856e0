"""Parameter initialisers: functions returning NumPy arrays for ``gb.param``.

Every random initialiser takes an explicit ``seed`` (fed to ``np.random.default_rng``)
so a model built twice starts from identical weights; there is no global random state.
Fan-in/fan-out follow the usual dense-layer convention for a weight of shape
``(fan_in, fan_out)`` (``x @ W``); kernels with more dims are convolution weights in PyTorch's
layout ``(out, in, *kernel)`` (what ``gb.conv2d`` takes), whose trailing dims count as the
receptive field: ``he_normal((16, 1, 3, 3))`` draws with fan-in 9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Shape = int | Sequence[int]
DTypeLike = Any


def _shape(shape: Shape) -> tuple[int, ...]:
    s = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    if any(d < 0 for d in s):
        raise ValueError(f"init: negative dimension in shape {s}")
    return s


def fans(shape: Shape) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight: rows/columns for matrices, size for vectors,
    ``(in * k, out * k)`` for a convolution kernel ``(out, in, *kernel)`` of ``k`` taps."""
    s = _shape(shape)
    if len(s) == 0:
        return 1, 1
    if len(s) == 1:
        return s[0], s[0]
    if len(s) == 2:
        return s[0], s[1]
    receptive = math.prod(s[2:])
    return s[1] * receptive, s[0] * receptive


def _float_dtype(dtype: DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"init: random initialisers make float arrays, got dtype {dt}")
    return dt


def zeros(shape: Shape, dtype: DTypeLike = "float32") -> np.ndarray:
    """All zeros (biases; optimizer state)."""
    return np.zeros(_shape(shape), dtype=dtype)


def ones(shape: Shape, dtype: DTypeLike = "float32") -> np.ndarray:
    """All ones (normalisation scales)."""
    return np.ones(_shape(shape), dtype=dtype)


def constant(shape: Shape, value: float, dtype: DTypeLike = "float32") -> np.ndarray:
    """Every entry ``value``."""
    return np.full(_shape(shape), value, dtype=dtype)


def uniform(shape: Shape, low: float = -0.05, high: float = 0.05, *, seed: int | None = None,
            dtype: DTypeLike = "float32") -> np.ndarray:
    """Uniform on ``[low, high)``, drawn in float64 then cast (same values for any dtype)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=_shape(shape)).astype(_float_dtype(dtype))


def normal(shape: Shape, std: float = 0.05, mean: float = 0.0, *, seed: int | None = None,
           dtype: DTypeLike = "float32") -> np.ndarray:
    """Gaussian with the given ``mean`` and ``std``."""
    rng = np.random.default_rng(seed)
    return rng.normal(mean, std, size=_shape(shape)).astype(_float_dtype(dtype))


def glorot_uniform(shape: Shape, *, seed: int | None = None, dtype: DTypeLike = "float32") -> np.ndarray:
    """Glorot/Xavier uniform, limit ``sqrt(6 / (fan_in + fan_out))``.

    Keeps activation and gradient variance roughly constant through tanh/sigmoid/linear
    layers (Glorot & Bengio, 2010).
    """
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, -limit, limit, seed=seed, dtype=dtype)


def glorot_normal(shape: Shape, *, seed: int | None = None, dtype: DTypeLike = "float32") -> np.ndarray:
    """Glorot/Xavier normal, std ``sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = fans(shape)
    return normal(shape, math.sqrt(2.0 / (fan_in + fan_out)), seed=seed, dtype=dtype)


def he_uniform(shape: Shape, *, seed: int | None = None, dtype: DTypeLike = "float32") -> np.ndarray:
    """He/Kaiming uniform, limit ``sqrt(6 / fan_in)``.

    ReLU zeroes half its inputs, so the weights need twice Glorot's variance to keep the
    signal from shrinking layer by layer (He et al., 2015).
    """
    fan_in, _ = fans(shape)
    limit = math.sqrt(6.0 / fan_in)
    return uniform(shape, -limit, limit, seed=seed, dtype=dtype)


def he_normal(shape: Shape, *, seed: int | None = None, dtype: DTypeLike = "float32") -> np.ndarray:
    """He/Kaiming normal, std ``sqrt(2 / fan_in)``."""
    fan_in, _ = fans(shape)
    return normal(shape, math.sqrt(2.0 / fan_in), seed=seed, dtype=dtype)


__all__ = [
    "fans", "zeros", "ones", "constant", "uniform", "normal",
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
]
