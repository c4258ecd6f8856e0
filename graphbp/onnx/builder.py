"""A small writer of ONNX graphs: unique value names, constants, casts and shape helpers.

The emitters (:mod:`.emit`) describe each graphbp op in terms of these calls, so none of
them touches protobuf directly. Everything is deterministic: names are numbered in the
order nodes are emitted, which is the graph's topological order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


class OnnxBuilder:
    """Accumulates ONNX nodes and initializers for one graph.

    ``prefix`` and ``doc`` label the nodes of the graphbp node being emitted (set by the
    exporter before each emitter runs), so an exported gradient graph stays readable in a
    viewer: every ONNX node says which graphbp op, rule and user line it comes from.
    """

    def __init__(self, onnx_module: Any, opset: int) -> None:
        self.onnx = onnx_module
        self.helper = onnx_module.helper
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}
        self.prefix = ""
        self.doc = ""

    def child(self) -> "OnnxBuilder":
        """A builder for a nested graph (an ``If`` branch): its own node list, the same value
        names, constants and initializers (outer values are visible inside, as ONNX scopes)."""
        sub = OnnxBuilder(self.onnx, self.opset)
        sub._names, sub._consts, sub.initializers = self._names, self._consts, self.initializers
        sub.prefix, sub.doc = self.prefix, self.doc
        return sub

    # -- names ----------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        """A value name not used before, readable (``hint``, ``hint_1``, ...)."""
        base = hint or "v"
        k = self._names.get(base, 0)
        self._names[base] = k + 1
        return base if k == 0 else f"{base}_{k}"

    def reserve(self, name: str) -> str:
        """Claim an exact name (graph inputs, parameters); later fresh names avoid it."""
        if name in self._names:
            raise ValueError(f"duplicate ONNX value name {name!r}")
        self._names[name] = 1
        return name

    # -- nodes ----------------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], *, outputs: int = 1, out: str | None = None,
           **attrs: Any) -> Any:
        """Append one ONNX node; returns its output name (or names when ``outputs > 1``)."""
        hint = f"{self.prefix}{op_type}" if self.prefix else op_type
        names = [out] if (out is not None and outputs == 1) else [self.fresh(hint) for _ in range(outputs)]
        node = self.helper.make_node(op_type, list(inputs), names, name=self.fresh(f"{hint}_node"),
                                     doc_string=self.doc or None, **{k: v for k, v in attrs.items() if v is not None})
        self.nodes.append(node)
        return names[0] if outputs == 1 else names

    def initializer(self, name: str, value: np.ndarray, doc: str = "graphbp constant") -> str:
        """Store ``value`` as initializer ``name``; ``doc`` tells an importer what it was."""
        t = self.onnx.numpy_helper.from_array(np.array(value, order="C"), name)
        t.doc_string = doc
        self.initializers.append(t)
        return name

    def const(self, value: Any, dtype: Any = None) -> str:
        """A constant tensor (deduplicated by value), stored as an initializer."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        hit = self._consts.get(key)
        if hit is None:
            hit = self.initializer(self.fresh("const"), arr)
            self._consts[key] = hit
        return hit

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64).reshape(-1))

    # -- helpers the emitters share ----------------------------------------------------
    def cast(self, name: str, have: np.dtype, want: np.dtype) -> str:
        if np.dtype(have) == np.dtype(want):
            return name
        return self.op("Cast", [name], to=tensor_dtype(self.helper, want))

    def fill(self, shape: str, value: float, dtype) -> str:
        """A tensor of ``value`` with the runtime ``shape`` (an int64 1-D tensor's name)."""
        tensor = self.helper.make_tensor("value", tensor_dtype(self.helper, dtype), [1],
                                         [np.asarray(value, dtype).item()])
        return self.op("ConstantOfShape", [shape], value=tensor)

    def shape(self, name: str) -> str:
        return self.op("Shape", [name])

    def dim(self, name: str, axis: int) -> str:
        """The runtime size of ``axis`` of ``name`` as an int64 tensor of shape (1,)."""
        return self.op("Shape", [name], start=axis, end=axis + 1)

    def unsqueeze(self, name: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", [name, self.ints(axes)])

    def squeeze(self, name: str, axes: Sequence[int]) -> str:
        return self.op("Squeeze", [name, self.ints(axes)]) if axes else name


def tensor_dtype(helper: Any, dtype: Any) -> int:
    """The ONNX element type of a NumPy dtype."""
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
