"""Reverse-mode differentiation as a graph-to-graph transformation."""

from .grad import grad, vjp

__all__ = ["grad", "vjp"]
