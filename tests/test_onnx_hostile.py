"""ONNX import on hostile files: every failure is a GraphFormatError, sizes are checked
before anything is allocated, external data stays inside the model's folder, and the
optional dependency's absence is a clear ImportError."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import graphbp as gb

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model(tmp_path, inits=(), nodes=None, name="m.onnx"):
    nodes = nodes or [helper.make_node("MatMul", ["x", "W"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def _weights():
    return numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "W")


def test_a_valid_model_imports(tmp_path):
    m = gb.import_onnx(_model(tmp_path, [_weights()]))
    assert [p.name for p in m.params] == ["W"] and m.outputs[0].shape == (None, 2)


def test_byte_mutations_raise_only_graph_format_errors(tmp_path):
    """Random flips, truncations and splices of a valid model: a GraphFormatError or a
    model that imports, never another exception (the importer parses protobuf only)."""
    good = _model(tmp_path, [_weights()]).read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"error": 0, "ok": 0}
    for case in range(300):
        data = bytearray(good)
        kind = case % 3
        if kind == 0:
            for _ in range(rng.integers(1, 8)):
                data[rng.integers(len(data))] = rng.integers(256)
        elif kind == 1:
            data = data[: rng.integers(len(data))]
        else:
            at = rng.integers(len(data))
            data = data[:at] + bytes(rng.integers(0, 256, size=rng.integers(1, 64), dtype=np.uint8)) + data[at:]
        path = tmp_path / "fuzz.onnx"
        path.write_bytes(bytes(data))
        try:
            gb.import_onnx(path)
            outcomes["ok"] += 1
        except gb.GraphFormatError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100  # most mutations are caught, none escaped as another type


def test_declared_sizes_must_match_the_bytes_and_the_limits(tmp_path):
    short = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 2], raw_data=b"\0" * 8)
    with pytest.raises(gb.GraphFormatError, match="declares 24 bytes but holds 8"):
        gb.import_onnx(_model(tmp_path, [short]))
    huge = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20], raw_data=b"")
    with pytest.raises(gb.GraphFormatError, match="max_array_bytes"):
        gb.import_onnx(_model(tmp_path, [huge]))
    with pytest.raises(gb.GraphFormatError, match="max_file_bytes"):
        gb.import_onnx(_model(tmp_path, [_weights()]), limits=gb.Limits(max_file_bytes=10))


def test_external_data_outside_the_models_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(6, dtype=np.float32).tobytes())
    inner = tmp_path / "models"
    inner.mkdir()
    for location in ("../secret.bin", str(secret)):
        t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 2], data_location=TensorProto.EXTERNAL)
        t.external_data.add(key="location", value=location)
        with pytest.raises(gb.GraphFormatError, match="outside the model's folder"):
            gb.import_onnx(_model(inner, [t]))
    os.symlink(secret, inner / "link.bin")
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 2], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="link.bin")
    with pytest.raises(gb.GraphFormatError, match="outside the model's folder"):
        gb.import_onnx(_model(inner, [t]))
    (inner / "w.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    t = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[3, 2], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="w.bin")
    m = gb.import_onnx(_model(inner, [t]))
    np.testing.assert_array_equal(m.params[0].value, np.arange(6, dtype=np.float32).reshape(3, 2))


def test_unsupported_ops_and_domains_name_the_node(tmp_path):
    nodes = [helper.make_node("LpNormalization", ["x"], ["y"], name="norm1")]
    with pytest.raises(gb.GraphFormatError, match=r"norm1.*LpNormalization is not supported"):
        gb.import_onnx(_model(tmp_path, nodes=nodes))
    nodes = [helper.make_node("Range", ["a", "b", "c"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("a", 0), ("b", 1 << 40), ("c", 1))]
    with pytest.raises(gb.GraphFormatError, match="Range of .* elements is refused"):
        gb.import_onnx(_model(tmp_path, inits, nodes=nodes))


def test_without_the_onnx_extra_import_graphbp_works_and_export_says_how_to_install(tmp_path):
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "import graphbp as gb\n"
        "x = gb.input('x', (2,))\n"
        "try:\n"
        "    gb.export_onnx(gb.tanh(x))\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    assert r.returncode == 0, r.stderr
    assert "pip install 'graphbp[onnx]'" in r.stdout


def _loop_model(tmp_path, body, trips=3, name="loop.onnx", cond=""):
    """``y = Loop(trips, cond, x)`` over ``x: float[3]`` with ``body``."""
    inits = [numpy_helper.from_array(np.array(trips, np.int64), "M")]
    node = helper.make_node("Loop", ["M", cond, "x"], ["y"], body=body)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], initializer=inits)
    path = tmp_path / name
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())
    return path


def _body(nodes, cond_out="cond_out", n_carry=1):
    ins = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    ins += [helper.make_tensor_value_info(f"c{k}", TensorProto.FLOAT, [3]) for k in range(n_carry)]
    outs = [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
            helper.make_tensor_value_info("c_new", TensorProto.FLOAT, [3])]
    return helper.make_graph(nodes, "body", ins, outs)


def test_a_counting_loop_imports_as_a_scan_and_while_loops_are_refused(tmp_path):
    body = _body([helper.make_node("Identity", ["cond"], ["cond_out"]),
                  helper.make_node("Tanh", ["c0"], ["c_new"])])
    m = gb.import_onnx(_loop_model(tmp_path, body))
    x = np.array([0.1, -0.2, 0.3], np.float32)
    (y,) = gb.compile(m.inputs, m.outputs)(x)
    np.testing.assert_allclose(y, np.tanh(np.tanh(np.tanh(x))), rtol=1e-6)
    stops = _body([helper.make_node("Less", ["i", "M"], ["cond_out"]), helper.make_node("Tanh", ["c0"], ["c_new"])])
    with pytest.raises(gb.GraphFormatError, match="computes its condition: a while loop"):
        gb.import_onnx(_loop_model(tmp_path, stops))
    with pytest.raises(gb.GraphFormatError, match="condition input is a while loop"):
        gb.import_onnx(_loop_model(tmp_path, body, cond="x"))
    wrong = _body([helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Tanh", ["c0"], ["c_new"])],
                  n_carry=2)
    with pytest.raises(gb.GraphFormatError, match="body has 4 inputs"):
        gb.import_onnx(_loop_model(tmp_path, wrong))
    with pytest.raises(gb.GraphFormatError, match="trip count must be one integer >= 0"):
        gb.import_onnx(_loop_model(tmp_path, body, trips=-1))


def test_bodies_nested_too_deep_are_refused(tmp_path):
    """Loops inside loops 20 deep (protobuf itself stops at about 30): refused by depth."""
    inner = _body([helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Neg", ["c0"], ["c_new"])])
    for _ in range(20):
        loop = helper.make_node("Loop", ["M", "", "c0"], ["c_new"], body=inner)
        inner = _body([helper.make_node("Identity", ["cond"], ["cond_out"]), loop])
    with pytest.raises(gb.GraphFormatError, match="nested more than MAX_NESTING=16 deep"):
        gb.import_onnx(_loop_model(tmp_path, inner, trips=1))


def test_mutated_loop_models_raise_only_graph_format_errors(tmp_path):
    """Byte mutations of an exported LSTM-style scan (Loop body, Gather reads, flips)."""
    xs = gb.input("xs", (None, 3), "float64")
    w = gb.param("w", np.full((3, 3), 0.1))
    hT, ys = gb.scan(lambda h, x: (gb.tanh(h @ w + x), h), np.zeros(3), xs, reverse=True)
    loss = gb.sum(hT) + gb.sum(ys)
    path = tmp_path / "scan.onnx"
    gb.export_onnx([loss, *gb.grad(loss, [w])], path, inputs=[xs])
    good = path.read_bytes()
    rng = np.random.default_rng(1)
    caught = 0
    for case in range(200):
        data = bytearray(good)
        if case % 2:
            for _ in range(rng.integers(1, 8)):
                data[rng.integers(len(data))] = rng.integers(256)
        else:
            data = data[: rng.integers(len(data))]
        bad = tmp_path / "fuzz.onnx"
        bad.write_bytes(bytes(data))
        try:
            gb.import_onnx(bad)
        except gb.GraphFormatError:
            caught += 1
    assert caught > 50


def test_bad_scan_attributes_are_graph_format_errors(tmp_path):
    body = helper.make_graph([helper.make_node("Add", ["h", "x_t"], ["h_new"])], "body",
                             [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3]) for n in ("h", "x_t")],
                             [helper.make_tensor_value_info("h_new", TensorProto.FLOAT, [3])])

    def model(**attrs):
        node = helper.make_node("Scan", ["h0", "xs"], ["hT"], body=body, **attrs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [3]),
                                                helper.make_tensor_value_info("xs", TensorProto.FLOAT, ["n", 3])],
                                  [helper.make_tensor_value_info("hT", TensorProto.FLOAT, [3])])
        path = tmp_path / "scan.onnx"
        path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]).SerializeToString())
        return path

    m = gb.import_onnx(model(num_scan_inputs=1))
    (h,) = gb.compile(m.inputs, m.outputs)(np.ones(3, np.float32), np.ones((4, 3), np.float32))
    np.testing.assert_array_equal(h, np.full(3, 5.0, np.float32))
    for attrs, message in (({"num_scan_inputs": 3}, "num_scan_inputs"), ({}, "num_scan_inputs"),
                           ({"num_scan_inputs": 1, "scan_input_directions": [2]}, "scan_input_directions"),
                           ({"num_scan_inputs": 1, "scan_input_axes": [0, 1]}, "scan_input_axes must list 1"),
                           ({"num_scan_inputs": 1, "scan_input_axes": [5]}, "out of range")):
        with pytest.raises(gb.GraphFormatError, match=message):
            gb.import_onnx(model(**attrs))
