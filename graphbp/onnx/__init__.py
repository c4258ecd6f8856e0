"""ONNX interop: export programs (gradients and training steps included), import models.

``onnx`` (and ``onnxruntime``, to run the exports) are an optional extra: importing graphbp
never needs them, and calling these functions without them says how to install them.
"""

from __future__ import annotations

from .export import export_onnx
from .importer import ImportedModel, import_onnx

__all__ = ["export_onnx", "import_onnx", "ImportedModel"]
