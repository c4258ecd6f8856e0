"""Training checkpoints: parameter values, optimizer state, step and user extras.

A checkpoint is the same defensive container as a graph file (ZIP of ``checkpoint.json``,
a pickle-free ``arrays.npz`` and a ``SHA256`` member over both), written atomically:
temporary file in the same directory, flush, fsync, rename, fsync of the directory. A
process killed while saving leaves the previous checkpoint intact. Loading verifies the
checksum and every name, shape and dtype before assigning anything, so a mismatching
checkpoint raises and changes nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import GraphbpError
from ..graph.node import Node
from ..graph.types import format_shape
from ..ops.leaves import Param
from .atomic import atomic_write
from .codec import ArrayStore, Decoder, encode
from .container import DEFAULT_LIMITS, Limits, dump_json, encode_npz, fail, read_container, write_zip

FORMAT_NAME = "graphbp.checkpoint"
FORMAT_VERSION = 1
_KEYS = {"format", "version", "step", "extra", "params", "optimizer"}


class CheckpointMismatchError(GraphbpError, ValueError):
    """A valid checkpoint that does not fit the parameters or optimizer it is loaded into."""


def _named_params(params: Any) -> dict[str, Node]:
    """Accept a sequence of parameter nodes, a name -> node mapping, or a Program."""
    from ..runtime.program import Program

    if isinstance(params, Program):
        params = [n for n in params.order if isinstance(n.op, Param)]
    items: Iterable[tuple[str, Node]]
    if isinstance(params, Mapping):
        items = params.items()
    else:
        params = [params] if isinstance(params, Node) else list(params)
        items = ((p.op.param_name if isinstance(p, Node) and isinstance(p.op, Param) else "?", p) for p in params)
    out: dict[str, Node] = {}
    for name, p in items:
        if not isinstance(p, Node) or not isinstance(p.op, Param):
            raise GraphbpError(f"checkpoint: expected parameter nodes, got {p!r:.80}")
        if name in out and out[name] is not p:
            raise GraphbpError(f"checkpoint: two different parameters are named {name!r}; give them unique names")
        out[name] = p
    return out


def _optimizer_state(optimizer: Any) -> dict:
    for attr in ("state", "state_dict"):
        fn = getattr(optimizer, attr, None)
        if callable(fn):
            return dict(fn())
    raise GraphbpError(f"checkpoint: {type(optimizer).__name__} has no state() method")


def _optimizer_load(optimizer: Any, state: dict) -> None:
    for attr in ("load_state", "load_state_dict"):
        fn = getattr(optimizer, attr, None)
        if callable(fn):
            fn(state)
            return
    raise GraphbpError(f"checkpoint: {type(optimizer).__name__} has no load_state() method")


def save_checkpoint(path: str | os.PathLike, params: Any, optimizer: Any = None, step: int = 0, extra: Any = None) -> None:
    """Write parameter values, optimizer state, ``step`` and ``extra`` to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Replaced atomically; a crash mid-write leaves the previous file as it was.
    params : sequence of parameter nodes, mapping name -> node, or Program
        Stored by parameter name (names must be unique).
    optimizer : optional
        An optimizer exposing ``state()`` (a dict of arrays and scalars) and
        ``load_state(dict)``.
    step : int
        The number of completed steps (returned by :func:`load_checkpoint`).
    extra : optional
        JSON-like user data (dicts, lists, numbers, strings, NumPy arrays).
    """
    named = _named_params(params)
    store = ArrayStore()
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "step": int(step),
        "extra": encode(extra, store),
        "params": [
            {"name": name, "shape": list(p.op.value.shape), "dtype": p.op.value.dtype.name,
             "array": store.add(p.op.value.copy())}
            for name, p in sorted(named.items())
        ],
        "optimizer": None if optimizer is None else encode(_optimizer_state(optimizer), store),
    }
    meta = dump_json(doc)
    arrays = encode_npz(store.arrays)
    digest = hashlib.sha256(meta + b"\0" + arrays).hexdigest().encode("ascii")
    members = [("checkpoint.json", meta, True), ("arrays.npz", arrays, False), ("SHA256", digest, False)]
    atomic_write(path, lambda f: write_zip(f, members))


def load_checkpoint(path: str | os.PathLike, params: Any, optimizer: Any = None, *,
                    limits: Limits = DEFAULT_LIMITS) -> tuple[int, Any]:
    """Restore parameter values (in place) and optimizer state from ``path``.

    Returns
    -------
    (step, extra)
        As given to :func:`save_checkpoint`.

    Raises
    ------
    GraphFormatError
        The file is corrupt, truncated, of another version, or fails its checksum.
    CheckpointMismatchError
        Parameter names, shapes or dtypes (or the optimizer state) differ from what is
        being restored into. Nothing is changed in either case.
    """
    contents = read_container(path, "checkpoint.json", limits, small={"SHA256": 64}, checksum="SHA256")
    doc, arrays = contents.doc, contents.arrays
    dec = Decoder(path, arrays, limits)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise fail(path, "checkpoint.json.format", f"not a {FORMAT_NAME} document")
    if doc.get("version") != FORMAT_VERSION:
        raise fail(path, "checkpoint.json.version", f"unsupported version {doc.get('version')!r:.40} (this graphbp reads {FORMAT_VERSION})")
    if set(doc) != _KEYS:
        raise fail(path, "checkpoint.json", f"keys {sorted(map(str, doc))}, expected {sorted(_KEYS)}")
    step = dec.int(doc["step"], "checkpoint.json.step")
    extra = dec.decode(doc["extra"], "checkpoint.json.extra")
    saved: dict[str, np.ndarray] = {}
    for k, entry in enumerate(dec.sequence(doc["params"], "checkpoint.json.params", limits.max_nodes)):
        w = f"checkpoint.json.params[{k}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "shape", "dtype", "array"} or not isinstance(entry["name"], str):
            raise fail(path, w, "expected {name, shape, dtype, array}")
        arr = dec.array(entry["array"], f"{w}.array")
        if arr.shape != dec.shape(entry["shape"], f"{w}.shape") or arr.dtype != dec.dtype(entry["dtype"], f"{w}.dtype"):
            raise fail(path, w, "array does not match its recorded shape/dtype")
        if entry["name"] in saved:
            raise fail(path, w, f"duplicate parameter {entry['name']!r}")
        saved[entry["name"]] = arr
    opt_state = None if doc["optimizer"] is None else dec.decode(doc["optimizer"], "checkpoint.json.optimizer")

    # Validate everything against the live objects before assigning anything.
    named = _named_params(params)
    _check_params(path, named, saved)
    if optimizer is not None:
        if not isinstance(opt_state, dict):
            raise CheckpointMismatchError(f"{os.fspath(path)}: holds no optimizer state, but an optimizer was given")
        _check_state(path, _optimizer_state(optimizer), opt_state)
        _optimizer_load(optimizer, opt_state)
    for name, p in named.items():
        p.op.value[...] = saved[name]
    return step, extra


def _check_params(path, named: dict[str, Node], saved: dict[str, np.ndarray]) -> None:
    missing, unexpected = sorted(set(named) - set(saved)), sorted(set(saved) - set(named))
    problems = []
    if missing:
        problems.append(f"not in the checkpoint: {', '.join(missing)}")
    if unexpected:
        problems.append(f"in the checkpoint but not given: {', '.join(unexpected)}")
    for name in sorted(set(named) & set(saved)):
        live, arr = named[name].op.value, saved[name]
        if live.shape != arr.shape or live.dtype != arr.dtype:
            problems.append(
                f"{name}: checkpoint has {arr.dtype.name}{format_shape(arr.shape)}, "
                f"parameter is {live.dtype.name}{format_shape(live.shape)}"
            )
    if problems:
        raise CheckpointMismatchError(
            f"{os.fspath(path)}: checkpoint does not match the parameters (nothing was changed):\n  "
            + "\n  ".join(problems)
        )


def _check_state(path, live: Any, saved: Any, where: str = "optimizer") -> None:
    """Same keys and array shapes/dtypes as the optimizer's current state (when it has one)."""
    if isinstance(live, dict) and live:
        # Every live entry must be restored; extra saved entries are allowed (state slots the
        # optimizer creates later, when ``updates`` is called, take them then).
        if not isinstance(saved, dict) or not set(live) <= set(saved):
            got = sorted(map(str, saved)) if isinstance(saved, dict) else type(saved).__name__
            raise CheckpointMismatchError(
                f"{os.fspath(path)}: {where} state keys {got} lack the optimizer's "
                f"{sorted(map(str, set(live) - set(saved if isinstance(saved, dict) else ())))} "
                "(nothing was changed)"
            )
        for k in live:
            _check_state(path, live[k], saved[k], f"{where}[{k!r}]")
    elif isinstance(live, np.ndarray):
        if not isinstance(saved, np.ndarray) or saved.shape != live.shape or saved.dtype != live.dtype:
            desc = f"{saved.dtype.name}{format_shape(saved.shape)}" if isinstance(saved, np.ndarray) else type(saved).__name__
            raise CheckpointMismatchError(
                f"{os.fspath(path)}: {where} is {desc} in the checkpoint but "
                f"{live.dtype.name}{format_shape(live.shape)} in the optimizer (nothing was changed)"
            )
