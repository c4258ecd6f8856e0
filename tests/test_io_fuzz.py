"""Fuzzing ``gb.load``: mutated files load or raise GraphFormatError, nothing else, never hang.

Three mutators, each with an explicit example count (the profile must not cut them):
raw bytes of the file (mostly caught by the ZIP layer), bytes of one member re-zipped with
a valid CRC (reaches the JSON and .npy parsers), and structural JSON edits (reaches the
graph validator: references, ops, parameters, types). Every case runs with the process's
address space capped at 1 GiB above its size (``bombs.memory_cap``): a mutation that made the
loader allocate more would fail with ``MemoryError`` instead of exhausting the machine.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphbp as gb

from bombs import memory_cap

BYTES_CASES = 1200
MEMBER_CASES = 1000
JSON_CASES = 1500
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
MEMORY_CAP = 2**30


@pytest.fixture(autouse=True)
def _capped_memory():
    with memory_cap(MEMORY_CAP):
        yield


def _valid_file() -> bytes:
    import os
    import tempfile

    x = gb.input("x", (None, 3), dtype="float64")
    t = gb.input("t", (None,), dtype="int64")
    w = gb.param("w", np.arange(6.0).reshape(3, 2))
    with gb.scope("s"):
        logits = gb.reshape(gb.tanh(x @ w), (-1, 2)) + gb.constant(np.array([0.5, -0.5]))
    loss = gb.mean(gb.softmax_cross_entropy(logits, t)) + gb.sum(gb.clip(logits, -1.0, 1.0)[0:1, ::2])
    g = gb.grad(loss, w)
    prog = gb.compile([x, t], [loss], updates=[(w, w - 0.1 * g)])
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "v.gbp")
        gb.save(p, prog)
        with open(p, "rb") as f:
            return f.read()


VALID = _valid_file()
with zipfile.ZipFile(io.BytesIO(VALID)) as _zf:
    MEMBERS = {i.filename: _zf.read(i) for i in _zf.infolist()}
DOC = json.loads(MEMBERS["graph.json"])
FEEDS = (np.ones((2, 3)), np.array([0, 1]))


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def _load_bytes(tmp_path, data: bytes) -> None:
    path = tmp_path / "fuzz.gbp"
    path.write_bytes(data)
    try:
        loaded = gb.load(path)
    except gb.GraphFormatError as e:
        assert str(path) in str(e)
        return
    # A mutation may still describe a valid graph: then it must be a usable one.
    assert isinstance(loaded, (gb.Program, gb.LoadedGraph))


def test_the_fuzz_seed_file_loads(tmp_path):
    prog = gb.load(_write(tmp_path, VALID))
    assert np.isfinite(prog(*FEEDS)[0])


def _write(tmp_path, data):
    p = tmp_path / "seed.gbp"
    p.write_bytes(data)
    return p


edits = st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])),
                 min_size=1, max_size=8)


def _apply(data: bytes, ops, cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, byte, kind in ops:
        if not buf:
            break
        i = pos % len(buf)
        if kind == "set":
            buf[i] = byte
        elif kind == "insert":
            buf.insert(i, byte)
        else:
            del buf[i]
    if cut is not None and buf:
        del buf[cut % len(buf):]
    return bytes(buf)


@settings(FUZZ, max_examples=BYTES_CASES)
@given(ops=edits, cut=st.none() | st.integers(0, 10**9))
def test_fuzz_raw_bytes(tmp_path_factory, ops, cut):
    _load_bytes(tmp_path_factory.mktemp("b"), _apply(VALID, ops, cut))


@settings(FUZZ, max_examples=MEMBER_CASES)
@given(member=st.sampled_from(sorted(MEMBERS)), ops=edits, cut=st.none() | st.integers(0, 10**9))
def test_fuzz_member_bytes_with_valid_crc(tmp_path_factory, member, ops, cut):
    members = dict(MEMBERS)
    members[member] = _apply(members[member], ops, cut)
    _load_bytes(tmp_path_factory.mktemp("m"), _zip(members))


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "vjp", "float64", "object", "add", "tuple", "array", "a0", "a99", "nan", "<U3", "V8", "x"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["tuple", "list", "array", "dtype", "slice", "float",
                                                             "shape", "tensor_type", "scalar", "dict", "x"]),
                                            inner, max_size=2)),
    max_leaves=8,
)


def _paths(doc, prefix=()):
    """Every location in the document (as key/index paths), in a deterministic order."""
    out = [prefix]
    if isinstance(doc, dict):
        for k in sorted(doc):
            out += _paths(doc[k], prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


PATHS = _paths(DOC)


def _get(doc, path):
    for k in path:
        doc = doc[k]
    return doc


mutation = st.tuples(st.sampled_from(["replace", "delete", "duplicate", "swap", "bump", "retype"]),
                     st.integers(0, len(PATHS) - 1), st.integers(0, len(PATHS) - 1), json_value)


def _mutate(doc, kind, i, j, value):
    path, other = PATHS[i], PATHS[j]
    try:
        target = _get(doc, path)
    except (KeyError, IndexError, TypeError):
        return
    if not path:
        return
    parent = _get(doc, path[:-1])
    key = path[-1]
    if kind == "replace":
        parent[key] = value
    elif kind == "delete":
        del parent[key]
    elif kind == "duplicate" and isinstance(parent, list):
        parent.insert(key, json.loads(json.dumps(target)))
    elif kind == "swap":
        try:
            src = _get(doc, other)
        except (KeyError, IndexError, TypeError):
            return
        parent[key] = json.loads(json.dumps(src))
    elif kind == "bump" and isinstance(target, int) and not isinstance(target, bool):
        parent[key] = target + (1 if value is None or value else -1)
    elif kind == "retype":
        parent[key] = str(target) if not isinstance(target, str) else [target]


@settings(FUZZ, max_examples=JSON_CASES)
@given(muts=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_json_structure(tmp_path_factory, muts):
    doc = json.loads(MEMBERS["graph.json"])
    for m in muts:
        _mutate(doc, *m)
    members = dict(MEMBERS)
    members["graph.json"] = json.dumps(doc).encode()
    _load_bytes(tmp_path_factory.mktemp("j"), _zip(members))


@pytest.mark.parametrize("kind", ["bump", "swap"])
def test_reference_mutations_are_caught_or_consistent(tmp_path, kind):
    """Every single-index edit of every node reference either fails cleanly or still runs."""
    for n, node in enumerate(DOC["nodes"]):
        for k in range(len(node["inputs"])):
            doc = json.loads(MEMBERS["graph.json"])
            ref = doc["nodes"][n]["inputs"]
            ref[k] = ref[k] + 1 if kind == "bump" else n
            members = dict(MEMBERS, **{"graph.json": json.dumps(doc).encode()})
            path = tmp_path / "r.gbp"
            path.write_bytes(_zip(members))
            try:
                prog = gb.load(path)
            except gb.GraphFormatError:
                continue
            try:  # a still-valid graph runs, or rejects these feeds with a graphbp error
                prog(*FEEDS)
            except gb.GraphbpError:
                pass
