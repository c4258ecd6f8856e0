"""The optional ``onnx`` / ``onnxruntime`` dependencies, imported only when used."""

from __future__ import annotations

from typing import Any

INSTALL = "pip install 'graphbp[onnx]'"


def require_onnx() -> Any:
    """The ``onnx`` module, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"ONNX export and import need the onnx package: {INSTALL}") from e
    return onnx
