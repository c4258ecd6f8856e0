"""Op parameters and small values to JSON and back, exactly, with arrays set aside for the npz.

JSON has no tuples, dtypes, slices or non-finite floats, and op parameters use all of them,
so non-plain values are written as one-key tagged objects::

    {"tuple": [...]}   {"list": [...]}   {"dtype": "float32"}   {"array": "a3"}
    {"scalar": "a4"}   {"float": "nan"}   {"complex": [re, im]}   {"slice": [start, stop, step]}
    {"ellipsis": null}   {"tensor_type": {"shape": [2, null], "dtype": "int64"}}
    {"dict": [["key", value], ...]}

``None``, ``bool``, ``int``, ``str`` and finite ``float`` are plain JSON. Decoding accepts
exactly these forms and raises :class:`~graphbp.errors.GraphFormatError` on anything else.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import GraphFormatError
from ..graph.types import TensorType
from .container import Limits, fail

_MAX_DEPTH = 32
_ALLOWED_KINDS = "biufc"
# The numeric dtypes by the name the writers use (`dtype.name`). A file's dtype string is looked up
# here and never handed to NumPy's parser, which accepts deprecated aliases and structured types.
_DTYPES = {dt.name: dt for dt in map(np.dtype, np.typecodes["All"]) if dt.kind in _ALLOWED_KINDS}


class ArrayStore:
    """Collects the arrays met while encoding under stable keys ``a0, a1, ...``."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._by_id: dict[int, str] = {}
        self._keep: list[np.ndarray] = []  # keeps ids unique while the store lives

    def add(self, arr: np.ndarray) -> str:
        key = self._by_id.get(id(arr))
        if key is None:
            key = f"a{len(self.arrays)}"
            self.arrays[key] = arr if arr.flags.c_contiguous else np.array(arr, order="C")
            self._by_id[id(arr)] = key
            self._keep.append(arr)
        return key


def encode(value: Any, store: ArrayStore) -> Any:
    """A JSON-ready form of ``value`` (raises ``GraphFormatError`` for types it cannot hold)."""
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float
        return {"scalar": store.add(np.asarray(value))}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, complex):
        return {"complex": [encode(value.real, store), encode(value.imag, store)]}
    if isinstance(value, tuple):
        return {"tuple": [encode(v, store) for v in value]}
    if isinstance(value, list):
        return {"list": [encode(v, store) for v in value]}
    if isinstance(value, np.dtype):
        return {"dtype": value.str if value.byteorder not in "=|" else value.name}
    if isinstance(value, type) and issubclass(value, np.generic):
        return {"dtype": np.dtype(value).name}
    if isinstance(value, np.ndarray):
        return {"array": store.add(value)}
    if isinstance(value, slice):
        return {"slice": [encode(value.start, store), encode(value.stop, store), encode(value.step, store)]}
    if value is Ellipsis:
        return {"ellipsis": None}
    if isinstance(value, TensorType):
        return {"tensor_type": {"shape": list(value.shape), "dtype": value.dtype.name}}
    if isinstance(value, dict):
        return {"dict": [[encode(k, store), encode(v, store)] for k, v in value.items()]}
    raise GraphFormatError(f"cannot write a value of type {type(value).__name__} ({value!r:.80}) to a graph file")


class Decoder:
    """Turns tagged JSON back into values, checking every shape of input against the format."""

    def __init__(self, path: Any, arrays: dict[str, np.ndarray], limits: Limits) -> None:
        self.path = path
        self.arrays = arrays
        self.limits = limits
        self.used: set[str] = set()

    def decode(self, doc: Any, where: str, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise fail(self.path, where, f"values nested deeper than {_MAX_DEPTH}")
        if doc is None or isinstance(doc, (bool, str)):
            return doc
        if isinstance(doc, int):
            return self.int(doc, where)
        if isinstance(doc, float):
            return doc
        if isinstance(doc, list):
            raise fail(self.path, where, "bare JSON list (sequences are tagged {'tuple': ...} or {'list': ...})")
        if not isinstance(doc, dict) or len(doc) != 1:
            raise fail(self.path, where, f"expected a plain value or a one-key tagged object, got {_brief(doc)}")
        (tag, body), = doc.items()
        sub = f"{where}.{tag}"
        if tag in ("tuple", "list"):
            items = self.sequence(body, sub)
            vals = [self.decode(v, f"{sub}[{i}]", depth + 1) for i, v in enumerate(items)]
            return tuple(vals) if tag == "tuple" else vals
        if tag == "float":
            if body not in ("nan", "inf", "-inf"):
                raise fail(self.path, sub, f"expected 'nan', 'inf' or '-inf', got {_brief(body)}")
            return float(body)
        if tag == "complex":
            items = self.sequence(body, sub)
            parts = [self.decode(v, sub, depth + 1) for v in items]
            if len(parts) != 2 or not all(isinstance(p, float) for p in parts):
                raise fail(self.path, sub, "expected [real, imag] floats")
            return complex(parts[0], parts[1])
        if tag == "dtype":
            return self.dtype(body, sub)
        if tag in ("array", "scalar"):
            arr = self.array(body, sub)
            if tag == "scalar":
                if arr.ndim != 0:
                    raise fail(self.path, sub, f"scalar array has shape {arr.shape}")
                return arr[()]
            return arr
        if tag == "slice":
            items = self.sequence(body, sub)
            if len(items) != 3:
                raise fail(self.path, sub, "expected [start, stop, step]")
            parts = [self.decode(v, sub, depth + 1) for v in items]
            if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
                raise fail(self.path, sub, "slice bounds must be ints or null")
            return slice(*parts)
        if tag == "ellipsis":
            if body is not None:
                raise fail(self.path, sub, "expected null")
            return Ellipsis
        if tag == "tensor_type":
            return self.tensor_type(body, sub)
        if tag == "dict":
            items = self.sequence(body, sub)
            out = {}
            for i, kv in enumerate(items):
                if not isinstance(kv, list) or len(kv) != 2:
                    raise fail(self.path, f"{sub}[{i}]", "expected [key, value]")
                k = self.decode(kv[0], f"{sub}[{i}]", depth + 1)
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise fail(self.path, f"{sub}[{i}]", "dict keys must be str or int")
                out[k] = self.decode(kv[1], f"{sub}[{i}]", depth + 1)
            return out
        raise fail(self.path, where, f"unknown tag {tag!r}")

    # -- typed pieces, shared with the graph and checkpoint loaders ---------------------
    def int(self, doc: Any, where: str) -> int:
        if not isinstance(doc, int) or isinstance(doc, bool):
            raise fail(self.path, where, f"expected an int, got {_brief(doc)}")
        if abs(doc) > self.limits.max_int:
            raise fail(self.path, where, f"int {doc} exceeds the limit of {self.limits.max_int}")
        return doc

    def sequence(self, doc: Any, where: str, limit: int | None = None) -> list:
        limit = self.limits.max_sequence if limit is None else limit
        if not isinstance(doc, list):
            raise fail(self.path, where, f"expected a list, got {_brief(doc)}")
        if len(doc) > limit:
            raise fail(self.path, where, f"{len(doc)} entries exceeds the limit of {limit}")
        return doc

    def dtype(self, doc: Any, where: str) -> np.dtype:
        if not isinstance(doc, str) or len(doc) > 16:
            raise fail(self.path, where, f"expected a dtype name, got {_brief(doc)}")
        dt = _DTYPES.get(doc)
        if dt is None:
            raise fail(self.path, where, f"dtype {doc!r} is not a numeric dtype (one of {', '.join(sorted(_DTYPES))})")
        return dt

    def array(self, doc: Any, where: str) -> np.ndarray:
        if not isinstance(doc, str) or doc not in self.arrays:
            raise fail(self.path, where, f"reference to missing array {_brief(doc)}")
        self.used.add(doc)
        return self.arrays[doc]

    def shape(self, doc: Any, where: str) -> tuple:
        dims = self.sequence(doc, where, self.limits.max_ndim)
        out = []
        for i, d in enumerate(dims):
            if d is None:
                out.append(None)
            else:
                d = self.int(d, f"{where}[{i}]")
                if d < 0:
                    raise fail(self.path, f"{where}[{i}]", f"negative dim {d}")
                out.append(d)
        return tuple(out)

    def tensor_type(self, doc: Any, where: str) -> TensorType:
        if not isinstance(doc, dict) or set(doc) != {"shape", "dtype"}:
            raise fail(self.path, where, f"expected {{'shape', 'dtype'}}, got {_brief(doc)}")
        return TensorType(self.shape(doc["shape"], f"{where}.shape"), self.dtype(doc["dtype"], f"{where}.dtype"))


def _brief(doc: Any) -> str:
    text = repr(doc)
    return text if len(text) <= 60 else text[:57] + "..."
