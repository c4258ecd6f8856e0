"""Image ops check their own geometry (strides, dilations, kernels, padding) in ``infer``,
not only in the builders: a graph file or an ONNX model can hold any integers there, and
loading either must end in a typed error (GraphFormatError), never a ZeroDivisionError at
load time or a NumPy error at run time."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops import conv, pool
from graphbp.ops.base import apply

X = gb.input("x", (2, 2, 6, 6), "float64")
W = gb.param("w", np.ones((2, 2, 3, 3)))
G = gb.input("g", (2, 2, 6, 6), "float64")

BAD_OPS = [
    (conv.Conv2D((0, 1), ((1, 1), (1, 1)), (1, 1), 1), (X, W)),
    (conv.Conv2D((1, 1), ((1, 1), (1, 1)), (0, 1), 1), (X, W)),
    (conv.Conv2D((1, -2), ((1, 1), (1, 1)), (1, 1), 1), (X, W)),
    (conv.Conv2D((1, 1), ((1, 1), (1, 1, 1)), (1, 1), 1), (X, W)),
    (conv.Conv2D((1,), ((1, 1), (1, 1)), (1, 1), 1), (X, W)),
    (conv.ConvTranspose2D((0, 1), ((1, 1), (1, 1)), (1, 1), 1), (X, W)),
    (conv.ConvTranspose2D((1, 1), ((1, 1), (1, 1)), (1, 0), 1), (X, W)),
    (conv.Conv2DWeightGrad((0, 1), ((1, 1), (1, 1)), (1, 1), 1, (3, 3)), (X, G)),
    (conv.Conv2DWeightGrad((1, 1), ((1, 1), (1, 1)), (1, 1), 1, (0, 3)), (X, G)),
    (pool.MaxPool2D((2, 2), (0, 2), (0, 0)), (X,)),
    (pool.MaxPool2D((0, 2), (2, 2), (0, 0)), (X,)),
    (pool.AvgPool2D((2, 2), (2, 2), (-1, 0)), (X,)),
    (pool.AvgPool2D((2, 2), (2, -1), (0, 0)), (X,)),
]


@pytest.mark.parametrize("op, operands", BAD_OPS, ids=[f"{op.name}-{k}" for k, (op, _) in enumerate(BAD_OPS)])
def test_bad_geometry_is_a_shape_error_naming_the_op(op, operands):
    with pytest.raises(gb.ShapeError, match=op.name) as err:
        apply(op, *operands)
    assert "test_image_geometry.py" in str(err.value)


@pytest.mark.parametrize("field, value", [("stride", [0, 1]), ("dilation", [1, 0]), ("kernel", [0, 2]),
                                          ("stride", [1, -1]), ("kernel", [2])])
def test_a_graph_file_with_bad_geometry_fails_to_load_with_a_format_error(tmp_path, field, value):
    x = gb.input("x", (None, 1, 6, 6), "float64")
    w = gb.param("w", np.ones((2, 1, 3, 3)))
    y = gb.avg_pool2d(gb.max_pool2d(gb.conv2d(x, w, padding=1), 2), 1)
    gb.save(tmp_path / "ok.gbp", [gb.grad(gb.sum(y), w), y])
    with zipfile.ZipFile(tmp_path / "ok.gbp") as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    doc = json.loads(members["graph.json"])
    hit = 0
    for n in doc["nodes"]:
        p = n.get("params") or {}
        if field in p and isinstance(p[field], dict) and "tuple" in p[field] and not isinstance(
                p[field]["tuple"][0], dict):
            p[field] = {"tuple": value}
            hit += 1
    assert hit
    members["graph.json"] = json.dumps(doc).encode()
    with zipfile.ZipFile(tmp_path / "bad.gbp", "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    with pytest.raises(gb.GraphFormatError):
        gb.load(tmp_path / "bad.gbp")


@pytest.mark.parametrize("node", [("Conv", {"strides": [0, 0]}), ("Conv", {"dilations": [0, 1]}),
                                  ("MaxPool", {"kernel_shape": [2, 2], "strides": [0, 1]}),
                                  ("AveragePool", {"kernel_shape": [0, 2]})])
def test_an_onnx_model_with_bad_geometry_is_a_format_error(tmp_path, node):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    op_type, attrs = node
    inputs = ["x", "w"] if op_type == "Conv" else ["x"]
    graph = helper.make_graph(
        [helper.make_node(op_type, inputs, ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")] if op_type == "Conv" else [])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString())
    with pytest.raises(gb.GraphFormatError):
        gb.import_onnx(path)
