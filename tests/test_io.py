"""Graph files: exact round trips of every op, attribute and value; clear errors on bad files."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest

import graphbp as gb
from graphbp.io.format import _closure
from graphbp.ops import OP_CLASSES
from graphbp.ops.leaves import Constant, Param

from io_zoo import build, missing_ops


@pytest.fixture(scope="module")
def zoo():
    return build(seed=0)


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _write(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _doc(path) -> dict:
    return json.loads(_members(path)["graph.json"])


def _write_doc(src, dst, doc) -> None:
    m = _members(src)
    m["graph.json"] = json.dumps(doc).encode()
    _write(dst, m)


def test_the_zoo_reaches_every_registered_op(zoo):
    program, _ = zoo
    assert missing_ops(program) == [], "add the new op(s) to tests/io_zoo.py"


def test_program_round_trip_is_bitwise_identical_over_training_steps(tmp_path, zoo):
    path = tmp_path / "zoo.gbp"
    program, feeds = build(seed=1)  # a fresh copy: this test trains it
    gb.save(path, program)
    loaded = gb.load(path)
    assert isinstance(loaded, gb.Program)
    assert len(loaded.updates) == len(program.updates)
    for _ in range(3):
        a, b = program(*feeds), loaded(*feeds)
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    live = {n.name: n.value for n in _closure([v for _, v in program.updates]) if isinstance(n.op, Param)}
    back = {n.name: n.value for n in _closure([v for _, v in loaded.updates]) if isinstance(n.op, Param)}
    assert live.keys() == back.keys()
    for k in live:
        assert live[k].tobytes() == back[k].tobytes(), k


def _same_value(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    return type(a) is type(b) and a == b


def test_every_node_attribute_survives(tmp_path, zoo):
    program, _ = zoo
    roots = list(program.user_outputs) + [n for pair in program.updates for n in pair]
    before = _closure(roots)
    path = tmp_path / "g.gbp"
    gb.save(path, program)
    loaded = gb.load(path)
    after = _closure(list(loaded.user_outputs) + [n for pair in loaded.updates for n in pair])
    assert len(before) == len(after)
    index_b = {n: i for i, n in enumerate(before)}
    index_a = {n: i for i, n in enumerate(after)}
    for nb, na in zip(before, after):
        assert type(nb.op) is type(na.op)
        pb, pa = nb.op.params(), na.op.params()
        assert pb.keys() == pa.keys()
        for k in pb:  # tuples stay tuples, dtypes dtypes, None None, arrays bitwise
            assert _same_value(pb[k], pa[k]), (nb, k, pb[k], pa[k])
        assert (nb.name, nb.scope, nb.origin, nb.type) == (na.name, na.scope, na.origin, na.type)
        assert [index_b[i] for i in nb.inputs] == [index_a[i] for i in na.inputs]
        assert [(index_b[p.forward], p.rule, p.input_index) for p in nb.provenance] == \
               [(index_a[p.forward], p.rule, p.input_index) for p in na.provenance]
    assert any(n.scope == ("layer1",) for n in after) and any(n.provenance for n in after)


def test_plain_graph_loads_as_loaded_graph(tmp_path):
    x = gb.input("x", (None, 3), dtype="float64")
    w = gb.param("w", np.arange(3.0), trainable=False)
    with gb.scope("head"):
        y = gb.sum(gb.tanh(x * w), axis=1)
    y.name = "y"
    path = tmp_path / "plain.gbp"
    gb.save(path, [y, gb.grad(gb.sum(y), x)])
    g = gb.load(path)
    assert isinstance(g, gb.LoadedGraph)
    assert [i.name for i in g.inputs] == ["x"] and [p.name for p in g.params] == ["w"]
    assert g.params[0].op.trainable is False and g.node("y").scope == ("head",)
    assert g.params[0].value is not w.value  # fresh arrays, not shared
    X = np.random.default_rng(0).normal(size=(4, 3))
    a = gb.compile([x], [y, gb.grad(gb.sum(y), x)])(X)
    b = g.compile()(X)
    assert all(p.tobytes() == q.tobytes() for p, q in zip(a, b))


def test_constants_with_special_floats_and_dtypes_round_trip(tmp_path):
    vals = np.array([np.nan, np.inf, -np.inf, -0.0, 1e-310], np.float64)
    x = gb.input("x", (5,), dtype="float64")
    y = x + gb.constant(vals) + gb.constant(np.int8(3)) + gb.cast(gb.constant(np.arange(5, dtype=np.uint16)), "float64")
    path = tmp_path / "c.gbp"
    gb.save(path, y)
    g = gb.load(path)
    consts = [n.op.value for n in g.nodes if isinstance(n.op, Constant)]
    assert any(c.dtype == np.int8 for c in consts) and any(c.dtype == np.uint16 for c in consts)
    assert all(not c.flags.writeable for c in consts)
    X = np.ones(5)
    assert gb.compile([x], [y])(X)[0].tobytes() == g.compile()(X)[0].tobytes()


def test_save_is_deterministic_and_atomic(tmp_path, zoo, monkeypatch):
    program, _ = zoo
    a, b = tmp_path / "a.gbp", tmp_path / "b.gbp"
    gb.save(a, program)
    gb.save(b, program)
    assert a.read_bytes() == b.read_bytes()
    before = a.read_bytes()
    import graphbp.io.format as fmt

    def boom(f, members):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(fmt, "write_zip", boom)
    with pytest.raises(OSError):
        gb.save(a, program)
    assert a.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["a.gbp", "b.gbp"]  # the temporary file is gone


def test_unregistered_op_cannot_be_saved(tmp_path):
    import dataclasses

    from graphbp.ops.elementwise import Exp

    @dataclasses.dataclass(frozen=True)
    class MyExp(Exp):
        pass

    x = gb.input("x", (2,))
    with pytest.raises(gb.GraphFormatError, match="not registered"):
        gb.save(tmp_path / "x.gbp", gb.ops.apply(MyExp(), x))
    assert not os.listdir(tmp_path)


@pytest.fixture()
def small(tmp_path):
    x = gb.input("x", (None, 2), dtype="float64")
    w = gb.param("w", np.array([[1.0, 2.0], [3.0, 4.0]]))
    y = gb.sum(gb.transpose(gb.exp(x @ w)), axis=(0,))
    path = tmp_path / "small.gbp"
    gb.save(path, gb.compile([x], [y, gb.grad(gb.sum(y), w)]))
    return path


def _nodes_with(doc, op):
    return [i for i, n in enumerate(doc["nodes"]) if n["op"] == op]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(version=99), "newer than this graphbp reads"),
        (lambda d: d.update(version="1"), "invalid version"),
        (lambda d: d.update(format="other"), "expected 'graphbp.graph'"),
        (lambda d: d.pop("kind"), "keys"),
        (lambda d: d["nodes"][-1].update(op="launch_missiles"), "unknown op 'launch_missiles'"),
        (lambda d: d["nodes"][-1].update(inputs=[len(d["nodes"]) + 5]), "dangling"),
        (lambda d: d["nodes"][2].update(inputs=[len(d["nodes"]) - 1]), "cycle"),
        (lambda d: d["nodes"][-1]["inputs"].append(0), "do not fit|cannot type"),
        (lambda d: d["nodes"][_nodes_with(d, "transpose")[0]]["params"].update(axes={"tuple": [0, 0]}), "not a permutation"),
        (lambda d: d["nodes"][_nodes_with(d, "transpose")[0]]["params"].update(axes=[1, 0]), "bare JSON list"),
        (lambda d: d["nodes"][_nodes_with(d, "transpose")[0]]["params"].update(bogus=1), "expected parameters"),
        (lambda d: d["nodes"][_nodes_with(d, "transpose")[0]].update(type={"shape": [9], "dtype": "float64"}), "differs from the type"),
        (lambda d: d["nodes"][1]["params"].update(value={"array": "nope"}), "missing array"),
        (lambda d: d["nodes"][0].update(origin=["f.py", "x", "g"]), "expected an int"),
        (lambda d: d["nodes"][-1].update(provenance=[[10**6, "vjp", 0]]), "outside nodes"),
        (lambda d: d["nodes"][-1].update(provenance=[[0, "rm -rf", 0]]), "invalid rule"),
        (lambda d: d.update(outputs=[0.5]), "expected an int"),
        (lambda d: d.update(inputs=[len(d["nodes"]) - 1]), "not an input"),
        (lambda d: d["nodes"][0].update(scope="abc"), "expected a list"),
        (lambda d: d["nodes"][0]["params"]["type"]["tensor_type"].update(dtype="object"), "not a numeric dtype"),
        (lambda d: d["nodes"][0]["params"]["type"]["tensor_type"].update(shape=[-3, 2]), "negative dim"),
        (lambda d: d.update(compile={"optimize": 1}), "compile"),
    ],
)
def test_malformed_documents_raise_graph_format_error_saying_where(small, tmp_path, mutate, message):
    doc = _doc(small)
    mutate(doc)
    bad = tmp_path / "bad.gbp"
    _write_doc(small, bad, doc)
    with pytest.raises(gb.GraphFormatError, match=message) as info:
        gb.load(bad)
    assert str(bad) in str(info.value)


def test_truncated_and_non_zip_files(small, tmp_path):
    data = small.read_bytes()
    for n in (0, 1, 30, len(data) // 2, len(data) - 1):
        p = tmp_path / f"t{n}.gbp"
        p.write_bytes(data[:n])
        with pytest.raises(gb.GraphFormatError, match="archive"):
            gb.load(p)
    with pytest.raises(gb.GraphFormatError, match="cannot be read"):
        gb.load(tmp_path / "does-not-exist.gbp")


def test_pickled_object_arrays_are_refused(small, tmp_path):
    m = _members(small)
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(io.BytesIO(m["arrays.npz"])) as zf:
        inner = {i.filename: zf.read(i) for i in zf.infolist()}
    inner["a0.npy"] = buf.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for k, v in inner.items():
            zf.writestr(k, v)
    m["arrays.npz"] = out.getvalue()
    bad = tmp_path / "pickle.gbp"
    _write(bad, m)
    with pytest.raises(gb.GraphFormatError, match="not allowed"):
        gb.load(bad)


def test_lying_npy_header_and_extra_members(small, tmp_path):
    m = _members(small)
    with zipfile.ZipFile(io.BytesIO(m["arrays.npz"])) as zf:
        inner = {i.filename: zf.read(i) for i in zf.infolist()}
    hdr = inner["a0.npy"]
    inner["a0.npy"] = hdr.replace(b"(2, 2)", b"(99999999, 99999999)")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for k, v in inner.items():
            zf.writestr(k, v)
    bad = tmp_path / "lie.gbp"
    _write(bad, {**m, "arrays.npz": out.getvalue()})
    with pytest.raises(gb.GraphFormatError, match="header says"):
        gb.load(bad)
    _write(bad, {**m, "evil.py": b"import os"})
    with pytest.raises(gb.GraphFormatError, match="members"):
        gb.load(bad)


def test_oversized_and_deeply_nested_files(small, tmp_path):
    with pytest.raises(gb.GraphFormatError, match="exceeds the limit"):
        gb.load(small, limits=gb.Limits(max_nodes=3))
    with pytest.raises(gb.GraphFormatError, match="exceeds the limit"):
        gb.load(small, limits=gb.Limits(max_json_bytes=100))
    with pytest.raises(gb.GraphFormatError, match="exceeds the limit"):
        gb.load(small, limits=gb.Limits(max_file_bytes=100))
    m = _members(small)
    bad = tmp_path / "deep.gbp"
    _write(bad, {**m, "graph.json": b"[" * 100_000 + b"]" * 100_000})
    with pytest.raises(gb.GraphFormatError, match="graph.json"):
        gb.load(bad)
    doc = _doc(small)
    doc["nodes"][1]["name"] = {"tuple": [{"tuple": []}]}
    _write_doc(small, bad, doc)
    with pytest.raises(gb.GraphFormatError, match="name"):
        gb.load(bad)
    _write(bad, {**m, "graph.json": b'{"version": NaN}'})
    with pytest.raises(gb.GraphFormatError, match="invalid JSON"):
        gb.load(bad)


def test_zip_bomb_member_is_capped(small, tmp_path):
    m = _members(small)
    bad = tmp_path / "bomb.gbp"
    with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("graph.json", b" " * (8 * 2**20))  # compresses to a few KB
        zf.writestr("arrays.npz", m["arrays.npz"])
    with pytest.raises(gb.GraphFormatError, match="exceeds the limit"):
        gb.load(bad, limits=gb.Limits(max_json_bytes=2**20))


def test_registry_covers_leaf_and_all_ops():
    from graphbp.io.format import op_registry

    assert set(op_registry().values()) == set(OP_CLASSES)


def test_program_saves_the_updates_as_given_not_as_rewritten(tmp_path):
    """The passes rewrite update values into fused ops (``add_n``) that a file cannot name;
    ``gb.save`` writes the user's update graph and ``gb.load`` optimises it again, so the
    loaded program steps bitwise like the original."""
    rng = np.random.default_rng(3)
    x = gb.input("x", (None, 4), dtype="float64")
    w = gb.param("w", rng.normal(size=(4, 4)))
    v = gb.param("v", rng.normal(size=4))
    h = gb.tanh(x @ w)
    loss = gb.sum(gb.square(h * v + gb.sin(v) + v * v))  # v read four times: its gradient is an add_n
    gw, gv = gb.grad(loss, [w, v])
    prog = gb.compile([x], [loss], updates=[(w, w - 0.05 * gw), (v, v - 0.05 * gv)])
    assert "add_n" in {n.op.name for n in prog.order}
    path = tmp_path / "p.gbp"
    gb.save(path, prog)
    loaded = gb.load(path)
    X = rng.normal(size=(3, 4))
    for _ in range(3):
        assert prog(X)[0].tobytes() == loaded(X)[0].tobytes()
