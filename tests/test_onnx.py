"""ONNX export checked by ONNX Runtime, and import round trips (the ``onnx`` extra).

Driven by the op database: every sample's forward value and, where defined, its gradients
are exported as one ONNX model, checked with ``onnx.checker`` (full check), run by ONNX
Runtime and compared with graphbp's unoptimised program; the model is then imported back
and compiled, and must give the same values again.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops import OP_CLASSES
from graphbp.ops.leaves import Leaf

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from graphbp.onnx.emit import EMITTERS, NOT_EXPORTED  # noqa: E402
from opdb import OPDB, OpInfo, Sample  # noqa: E402

CASES = [
    pytest.param(info, i, id=f"{info.name}-{i}")
    for info in OPDB
    if not any(c in NOT_EXPORTED for c in info.ops)
    for i in range(len(info.samples(np.random.default_rng(0))))
]


def run_ort(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


NO_KERNEL = ort.capi.onnxruntime_pybind11_state.NotImplemented
"""ONNX Runtime's CPU provider has no float64 kernels for convolutions and pools."""


def assert_close(got, want, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} vs {want.dtype}"
    tol = 2e-5 if want.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)


def _program(info: OpInfo, s: Sample, *, concrete: bool = False):
    shapes = [a.shape for a in s.args] if concrete else s.shapes()
    inputs = [gb.input(f"a{i}", shape, dtype=a.dtype) for i, (a, shape) in enumerate(zip(s.args, shapes))]
    out = info.build(*inputs, **s.kwargs)
    outs = [out]
    if info.grad and out.dtype.kind == "f":
        idx = [k for k, a in enumerate(s.args) if a.dtype.kind == "f" and k not in info.nondiff]
        if idx:
            value = gb.compile(inputs, [out], optimize=False)(*s.args)[0]
            weights = gb.constant(np.random.default_rng(3).normal(size=value.shape).astype(value.dtype))
            outs += gb.grad(gb.sum(out * weights), [inputs[k] for k in idx])
    return inputs, outs


def test_every_op_class_exports_or_says_why_not():
    missing = [c.__name__ for c in OP_CLASSES
               if not issubclass(c, Leaf) and c not in EMITTERS and c not in NOT_EXPORTED]
    assert not missing, f"op classes with no ONNX emitter in graphbp/onnx/emit.py nor a NOT_EXPORTED reason: {missing}"


@pytest.mark.parametrize("info, i", CASES)
def test_opdb_values_and_gradients_match_onnxruntime_and_round_trip(info: OpInfo, i: int, tmp_path):
    s = info.samples(np.random.default_rng(0))[i]
    inputs, outs = _program(info, s)
    want = gb.compile(inputs, outs, optimize=False)(*s.args)
    path = tmp_path / "m.onnx"
    model = gb.export_onnx(outs, path, inputs=inputs)
    onnx.checker.check_model(model, full_check=True)
    try:
        got = run_ort(model, {f"a{k}": a for k, a in enumerate(s.args)})
    except NO_KERNEL:  # the same sample in float32 runs there, at float32 tolerance
        s32 = Sample(tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in s.args), s.kwargs, s.declared)
        ins32, outs32 = _program(info, s32)
        want32 = gb.compile(ins32, outs32, optimize=False)(*s32.args)
        got = run_ort(gb.export_onnx(outs32, inputs=ins32), {f"a{k}": a for k, a in enumerate(s32.args)})
        for k, (g, w) in enumerate(zip(got, want32)):
            assert_close(g, w, f"{info.name} {s32!r} output {k} (ONNX Runtime, float32)")
    else:
        for k, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, f"{info.name} {s!r} output {k} (ONNX Runtime)")
    # import: at the sample's static shapes (a model whose gradient slices or concatenates
    # along unknown dims computes indices from runtime shapes, which import does not take)
    inputs, outs = _program(info, s, concrete=True)
    gb.export_onnx(outs, path, inputs=inputs)
    back = gb.import_onnx(path)
    again = gb.compile(back.inputs, back.outputs, optimize=False)(*s.args)
    for k, (g, w) in enumerate(zip(again, want)):
        assert_close(g, w, f"{info.name} {s!r} output {k} (imported)")


def test_interop_doc_table_is_generated_from_the_backend_tables():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "docs" / "gen_interop.py"
    spec = importlib.util.spec_from_file_location("gen_interop", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.OUT.read_text()
    assert text == gen.generate(text), "docs/interop.md is stale: run python docs/gen_interop.py"


def _single_op_session(op_type: str, dtype, shapes, **attrs):
    from onnx import helper

    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    ins = [helper.make_tensor_value_info(f"i{k}", et, list(s)) for k, s in enumerate(shapes)]
    node = helper.make_node(op_type, [f"i{k}" for k in range(len(shapes))], ["y"], **attrs)
    graph = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", et, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


_IMAGE_KERNELS = {"Conv": [(1, 2, 5, 5), (3, 2, 3, 3)], "ConvTranspose": [(1, 2, 5, 5), (2, 3, 3, 3)],
                  "AveragePool": [(1, 2, 5, 5)], "GlobalAveragePool": [(1, 2, 5, 5)], "MaxPool": [(1, 2, 5, 5)]}
_POOL_ATTRS = {"AveragePool": {"kernel_shape": [2, 2]}, "MaxPool": {"kernel_shape": [2, 2]}}


@pytest.mark.parametrize("op_type", sorted(_IMAGE_KERNELS))
def test_which_image_ops_onnxruntime_runs_in_float64(op_type):
    """docs/interop.md says which image ops ONNX Runtime cannot run in float64: this asks it.
    If a kernel appears (or goes), the docs' paragraph on float64 convolutions must change."""
    shapes, attrs = _IMAGE_KERNELS[op_type], _POOL_ATTRS.get(op_type, {})
    _single_op_session(op_type, np.float32, shapes, **attrs)  # the float32 kernel exists
    if op_type == "MaxPool":
        sess = _single_op_session(op_type, np.float64, shapes, **attrs)
        assert sess.run(None, {"i0": np.ones(shapes[0])})[0].dtype == np.float64
    else:
        with pytest.raises(NO_KERNEL, match="Could not find an implementation"):
            _single_op_session(op_type, np.float64, shapes, **attrs)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_onnx_gelu_imports_as_primitives_and_gb_gelu_exports_them(approximate, tmp_path):
    """ONNX's ``Gelu`` (opset 20) imports as the primitives ``gb.gelu`` builds, with ONNX
    Runtime's values; ``gb.gelu`` exports as those primitives, with no ``Gelu`` node."""
    from onnx import TensorProto, helper

    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [9])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "gelu.onnx")
    xv = np.linspace(-5, 5, 9, dtype=np.float32)
    back = gb.import_onnx(tmp_path / "gelu.onnx")
    assert {n.op.name for n in gb.toposort(back.outputs)} <= {"input", "constant", "multiply", "add", "tanh", "erf"}
    (got,) = gb.compile(back.inputs, back.outputs)(xv)
    assert_close(got, run_ort(model, {"x": xv})[0], f"imported Gelu(approximate={approximate!r})")
    x = gb.input("x", (9,))
    exported = gb.export_onnx([gb.gelu(x, approximate)], inputs=[x])
    assert "Gelu" not in {n.op_type for n in exported.graph.node}
    assert_close(run_ort(exported, {"x": xv})[0], got, "gb.gelu exported")
