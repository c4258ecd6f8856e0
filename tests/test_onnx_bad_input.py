"""Bad input to ONNX interop: malformed models that are valid protobuf are refused with a
GraphFormatError naming what is wrong (or, where ONNX allows it, imported right), and the
export command reports a file it cannot write."""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _save(tmp_path, nodes, shape=(2, 3)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    return path


def test_a_value_assigned_twice_is_refused(tmp_path):
    """ONNX graphs are in SSA form: a second node writing ``y`` is not "the later one wins",
    and no node overwrites a graph input."""
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Tanh", ["x"], ["y"])])
    with pytest.raises(gb.GraphFormatError, match="'y'.*already defined"):
        gb.import_onnx(path)
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["x"]), helper.make_node("Tanh", ["x"], ["y"])])
    with pytest.raises(gb.GraphFormatError, match="'x'.*already defined"):
        gb.import_onnx(path)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g", [x, x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    with pytest.raises(gb.GraphFormatError, match="two graph inputs"):
        gb.import_onnx(path)


def test_an_input_of_more_dims_than_the_limit_is_refused(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], shape=[1] * 65)
    with pytest.raises(gb.GraphFormatError, match="max_ndim"):
        gb.import_onnx(path)


@pytest.mark.parametrize("axis, shape", [(0, (1, 24)), (1, (2, 12)), (3, (24, 1)), (-1, (6, 4)), (-3, (1, 24))])
def test_flatten_takes_every_axis_onnx_allows(tmp_path, axis, shape):
    path = _save(tmp_path, [helper.make_node("Flatten", ["x"], ["y"], axis=axis)], shape=(2, 3, 4))
    m = gb.import_onnx(path)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    (y,) = gb.compile(m.inputs, m.outputs)(x)
    np.testing.assert_array_equal(y, x.reshape(shape))


@pytest.mark.parametrize("axis", [4, -4, 99])
def test_flatten_axis_out_of_range_is_refused(tmp_path, axis):
    path = _save(tmp_path, [helper.make_node("Flatten", ["x"], ["y"], axis=axis)], shape=(2, 3, 4))
    with pytest.raises(gb.GraphFormatError, match="axis"):
        gb.import_onnx(path)


def test_the_export_command_reports_an_unwritable_output_path(tmp_path):
    """``graphbp export`` says which file it could not write (exit 2), not a traceback."""
    import subprocess
    import sys

    src = tmp_path / "prog.py"
    src.write_text("import graphbp as gb\n\ndef grads():\n    x = gb.input('x', (None, 3))\n"
                   "    return gb.compile([x], [gb.sum(gb.tanh(x))])\n")
    out = tmp_path / "missing-dir" / "m.onnx"
    r = subprocess.run([sys.executable, "-m", "graphbp", "export", f"{src}:grads", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot write" in r.stderr and "m.onnx" in r.stderr
    r = subprocess.run([sys.executable, "-m", "graphbp", "export", f"{src}:grads", "--out", str(tmp_path / "m.onnx")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (tmp_path / "m.onnx").exists()  # FILE.py:FUNCTION picks the function
