"""Programs with unknown (None) dims through ONNX and back: export, import with
``gb.import_onnx``, run at several batch sizes, compare with the original program and with
ONNX Runtime; ``gb.grad`` of the imported model equals the original gradient."""

from __future__ import annotations

import os
import runpy
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphbp as gb

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from graphbp.onnx.importer import ImportedModel  # noqa: E402
from test_onnx import assert_close, run_ort  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name: str) -> gb.Program:
    return runpy.run_path(os.path.join(ROOT, "examples", name), run_name="__example__")["build"]()


def _feeds(program: gb.Program, sizes: dict[int | None, int], rng) -> list[np.ndarray]:
    """Random feeds, every unknown dim at position ``k`` of an input given ``sizes[k]``."""
    feeds = []
    for x in program.inputs:
        shape = tuple(sizes[k] if d is None else d for k, d in enumerate(x.shape))
        if x.dtype.kind in "iu":
            feeds.append(rng.integers(0, 10, size=shape).astype(x.dtype))
        else:
            feeds.append(rng.normal(size=shape).astype(x.dtype))
    return feeds


def _round_trip(program: gb.Program, tmp_path, size_sets) -> ImportedModel:
    path = tmp_path / "m.onnx"
    model = gb.export_onnx(program, path)
    onnx.checker.check_model(model, full_check=True)
    imported = gb.import_onnx(path)
    assert [x.name for x in imported.inputs] == [x.op.input_name for x in program.inputs]
    assert [x.shape for x in imported.inputs] == [x.shape for x in program.inputs]
    reloaded = gb.compile(imported.inputs, imported.outputs)
    original = gb.compile(program.inputs, program.user_outputs, optimize=False)
    for sizes in size_sets:
        args = _feeds(program, sizes, np.random.default_rng(sum(sizes.values())))
        want = original(*args)
        got = reloaded(*args)
        ort_got = run_ort(model, {x.op.input_name: a for x, a in zip(program.inputs, args)})
        for k, (g, o, w) in enumerate(zip(got, ort_got, want)):
            assert_close(g, w, f"imported output {k} ({imported.output_names[k]}) at {sizes}")
            assert_close(o, w, f"ONNX Runtime output {k} at {sizes}")
    return imported


def test_cnn_digits_gradient_program_round_trips_at_two_batch_sizes(tmp_path):
    program = _example("cnn_digits.py")
    _round_trip(program, tmp_path, [{0: 3}, {0: 7}])


def test_lstm_charlm_gradient_program_round_trips_at_two_batch_sizes(tmp_path):
    program = _example("lstm_charlm.py")  # x, y: (batch, time) both unknown
    _round_trip(program, tmp_path, [{0: 2, 1: 5}, {0: 4, 1: 3}])


def test_grad_of_an_imported_gradient_program_equals_the_original(tmp_path):
    """The imported CNN's loss differentiated again by graphbp gives the exported gradients."""
    program = _example("cnn_digits.py")
    imported = _round_trip(program, tmp_path, [{0: 4}])
    loss = imported.outputs[0]
    params = {p.op.param_name: p for p in imported.params}
    names = imported.output_names[1:]  # grad.w1, grad.b1, ...: the exported gradients, in order
    assert sorted(names) == sorted(f"grad.{name}" for name in params)
    regrad = gb.grad(loss, [params[name.removeprefix("grad.")] for name in names])
    args = _feeds(program, {0: 5}, np.random.default_rng(1))
    got = gb.compile(imported.inputs, regrad)(*args)
    want = gb.compile(program.inputs, program.user_outputs[1:], optimize=False)(*args)
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"gradient {k}")


def _round_trip_nodes(outputs: list, inputs: list, tmp_path, size_sets, rng) -> ImportedModel:
    """``outputs`` of float ``inputs`` (with unknown dims) exported, imported, run at each
    assignment of the unknown dims: imported == original == ONNX Runtime."""
    path = tmp_path / "t.onnx"
    model = gb.export_onnx(outputs, path, inputs=inputs)
    onnx.checker.check_model(model, full_check=True)
    imported = gb.import_onnx(path)
    original = gb.compile(inputs, outputs, optimize=False)
    reloaded = gb.compile(imported.inputs, imported.outputs)
    for sizes in size_sets:
        args = [rng.normal(size=tuple(sizes[k] if d is None else d for k, d in enumerate(x.shape))).astype(x.dtype)
                for x in inputs]
        want = original(*args)
        ort_got = run_ort(model, {x.op.input_name: a for x, a in zip(inputs, args)})
        for k, (g, o, w) in enumerate(zip(reloaded(*args), ort_got, want)):
            _close(g, w, f"imported output {k} at {sizes}")
            _close(o, w, f"ONNX Runtime output {k} at {sizes}")
    return imported


def _close(got, want, what: str) -> None:
    """Float32 agreement relative to the array's scale (second derivatives of convolutions
    reach 1e4, where float32 sums in another order differ in the fifth digit)."""
    assert got.shape == want.shape and got.dtype == want.dtype, f"{what}: {got.dtype}{got.shape} vs {want.dtype}{want.shape}"
    scale = float(np.max(np.abs(want), initial=1.0))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * scale, err_msg=what)


def _with_grads(y, xs):
    """``y`` and the gradients of a non-linear scalar of it (so every cotangent differs)."""
    loss = gb.sum(gb.sin(y) + y * y)
    return [y, *gb.grad(loss, xs)]


N = None
CONST_IDX = np.array([2, 0, -1, 2], np.int64)
SLICING = [  # (name, input shapes, function of the inputs)
    ("rows of a known axis", [(N, 6)], lambda x: x[:, 1:4]),
    ("strided known axis", [(N, 6)], lambda x: x[:, ::2]),
    ("reversed strided known axis", [(N, 6)], lambda x: x[:, 5:0:-2]),
    ("reversed known axis", [(N, 6)], lambda x: x[:, ::-1]),
    ("int on a known axis", [(N, 6)], lambda x: x[:, -1]),
    ("new axes and ellipsis", [(N, 6)], lambda x: x[None, ..., None, 2:]),
    ("reversed unknown axis", [(N, 3)], lambda x: x[::-1]),
    ("last row of an unknown axis", [(N, N)], lambda x: x[-1]),
    ("int rows of an unknown axis", [(N, 3)], lambda x: x[1] * x[-2]),
    ("both unknown axes cut", [(N, N)], lambda x: x[1:, :-1]),
    ("bounds of both signs", [(N, 4)], lambda x: x[1:-1] + x[-3:2].sum()),
    ("negative bounds", [(N, 4)], lambda x: x[-3:-1]),
    ("empty by its bounds", [(N, 4)], lambda x: x[3:1]),
    ("mixed axes", [(4, N, 3)], lambda x: x[1:3, 1:, ::2]),
    ("concatenate unknown sizes", [(N, 3), (N, 3)], lambda a, b: gb.concatenate([a, b], 0)),
    ("concatenate unknown and known", [(N, 3), (2, 3)], lambda a, b: gb.concatenate([a, b, a], 0)),
    ("concatenate along a known axis", [(N, 2), (N, 3)], lambda a, b: gb.concatenate([a, b], 1)),
    ("split and stack", [(N, 6)], lambda x: gb.stack(gb.split(x, 3, axis=1), axis=1)),
    ("take along a known axis", [(N, 5)], lambda x: gb.take(x, CONST_IDX, axis=1)),
    ("take along an unknown axis", [(N, 3)], lambda x: gb.take(x, CONST_IDX, axis=0)),
]


@pytest.mark.parametrize("name, shapes, fn", SLICING, ids=[c[0] for c in SLICING])
def test_slicing_and_indexing_gradients_round_trip_at_unknown_dims(name, shapes, fn, tmp_path):
    xs = [gb.input(f"x{k}", s) for k, s in enumerate(shapes)]
    imported = _round_trip_nodes(_with_grads(fn(*xs), xs), xs, tmp_path, [{0: 3, 1: 5}, {0: 6, 1: 4}],
                                 np.random.default_rng(0))
    # gb.grad of the imported model: the gradient of the same loss of its first output
    again = gb.grad(gb.sum(gb.sin(imported.outputs[0]) + imported.outputs[0] ** 2), imported.inputs)
    args = [np.random.default_rng(1).normal(size=tuple(4 if d is None else d for d in x.shape)).astype(x.dtype)
            for x in xs]
    got = gb.compile(imported.inputs, again)(*args)
    want = gb.compile(xs, _with_grads(fn(*xs), xs)[1:], optimize=False)(*args)
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"{name}: gb.grad of the import, input {k}")


def test_a_strided_cut_of_an_unknown_axis_exports_but_does_not_import(tmp_path):
    """Its gradient scatters into a Range of run-time length, which graphbp cannot build."""
    x = gb.input("x", (None, 3))
    outs = _with_grads(x[1::2], [x])
    model = gb.export_onnx(outs, tmp_path / "s.onnx", inputs=[x])
    assert "Range" in {n.op_type for n in model.graph.node}
    X = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    for got, want in zip(run_ort(model, {"x": X}), gb.compile([x], outs, optimize=False)(X)):
        assert_close(got, want, "ONNX Runtime")
    with pytest.raises(gb.GraphFormatError, match="Range over a run-time size"):
        gb.import_onnx(tmp_path / "s.onnx")


_bound = st.one_of(st.none(), st.integers(-5, 5))


@st.composite
def _index_on(draw, shape):
    """A basic index for ``shape``: on an unknown axis a step-1 run, an int or a reversal
    (what imports back); on a known axis anything, with new axes sprinkled in."""
    items = []
    for d in shape:
        if draw(st.booleans()) and len(items) < 3:
            items.append(None)
        if d is None:
            items.append(draw(st.one_of(st.builds(slice, _bound, _bound), st.integers(-2, 1),
                                        st.just(slice(None, None, -1)))))
        else:
            items.append(draw(st.one_of(st.builds(slice, _bound, _bound, st.sampled_from([None, 1, 2, 3, -1, -2])),
                                        st.integers(-d, d - 1))))
    return tuple(items)


@st.composite
def _sliced(draw):
    shape = draw(st.sampled_from([(None, 5), (None, None), (3, None), (None, 4, 2)]))
    return shape, draw(_index_on(shape)), draw(st.lists(st.integers(2, 6), min_size=2, max_size=2))


@settings(max_examples=30, deadline=None)
@given(_sliced())
def test_random_basic_indices_at_unknown_dims_round_trip_with_their_gradients(case):
    shape, index, sizes = case
    x = gb.input("x", shape)
    with tempfile.TemporaryDirectory() as tmp:
        _round_trip_nodes(_with_grads(x[index], [x]), [x], Path(tmp), [dict(enumerate(sizes)), {0: 2, 1: 3, 2: 2}],
                          np.random.default_rng(0))


def _training_step(example: str) -> gb.Program:
    m = runpy.run_path(os.path.join(ROOT, "examples", example), run_name="__example__")["model"]()
    inputs = [m.x, m.t] if hasattr(m, "t") else [m.x, m.y, m.h0, m.c0]
    return gb.compile(inputs, [m.loss], updates=gb.optim.Adam(1e-3, clip_norm=1.0).updates(m.loss, m.params))


@pytest.mark.parametrize("example, size_sets", [("cnn_digits.py", [{0: 3}, {0: 5}]),
                                                ("lstm_charlm.py", [{0: 2, 1: 4}, {0: 3, 1: 2}])])
def test_training_steps_at_unknown_batch_round_trip(example, size_sets, tmp_path):
    """The Adam step (clipped): the loss and every updated parameter and optimiser state."""
    step = _training_step(example)
    path = tmp_path / "step.onnx"
    model = gb.export_onnx(step, path)
    imported = gb.import_onnx(path)
    news = [new for _, new in step.user_updates]
    original = gb.compile(step.inputs, [*step.user_outputs, *news], optimize=False)  # no update applied
    reloaded = gb.compile(imported.inputs, imported.outputs)
    assert len(imported.outputs) == 1 + len(news)
    for sizes in size_sets:
        args = _feeds(step, sizes, np.random.default_rng(2))
        want = original(*args)
        for k, (g, o, w) in enumerate(zip(reloaded(*args), run_ort(model, dict(zip(
                [x.op.input_name for x in step.inputs], args))), want)):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6, err_msg=f"{imported.output_names[k]} at {sizes}")
            # Adam's first step is lr * g / (|g| + eps): where |g| is near eps, float32 sums
            # in another order move it by a few percent of lr (1e-3)
            np.testing.assert_allclose(o, w, rtol=1e-4, atol=5e-5, err_msg=f"ORT {imported.output_names[k]}")


def _w(shape, seed):
    return gb.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


IMAGE = [  # (name, x's shape (unknown batch), function of x and a weight input)
    ("conv2d strided padded", (8, 3, 3), lambda x, w: gb.conv2d(x, w, stride=2, padding=1)),
    ("conv2d dilated", (8, 3, 3), lambda x, w: gb.conv2d(x, w, dilation=2)),
    ("conv2d grouped", (8, 2, 3), lambda x, w: gb.conv2d(x, w, padding="same", groups=2)),
    ("conv_transpose2d", (8, 3, 3), lambda x, w: gb.conv_transpose2d(x, gb.transpose(w, (1, 0, 2, 3)), stride=2,
                                                                      padding=1, output_padding=1)),
    ("max_pool2d", (8, 3, 3), lambda x, w: gb.max_pool2d(gb.conv2d(x, w), 2)),
    ("avg_pool2d padded", (8, 3, 3), lambda x, w: gb.avg_pool2d(gb.conv2d(x, w, padding=1), 3, 2, padding=1)),
]


@pytest.mark.parametrize("name, wshape, fn", IMAGE, ids=[c[0] for c in IMAGE])
def test_image_op_gradients_at_an_unknown_batch_round_trip(name, wshape, fn, tmp_path):
    """Input and weight gradients of the convolutions and pools, and the gradient of the
    input gradient (max_pool2d_gather, conv2d of a conv_transpose2d), at two batch sizes."""
    x = gb.input("x", (None, 4, 7, 7))
    w = gb.input("w", wshape[:1] + (4 // (2 if "grouped" in name else 1),) + wshape[1:])
    y = fn(x, w)
    gx, gw = gb.grad(gb.sum(gb.sin(y) + y * y), [x, w])
    ggx = gb.grad(gb.sum(gx * gx), x)  # grad of grad through the backward ops
    _round_trip_nodes([y, gx, gw, ggx], [x, w], tmp_path, [{0: 2}, {0: 5}], np.random.default_rng(0))


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")  # dynamo=False: no onnxscript
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_a_pytorch_export_reshaping_at_its_run_time_batch_imports(tmp_path):
    """``x.view(x.size(0), -1)`` and ``x.reshape(b, 2, -1)`` with ``b`` taken from an earlier
    tensor: torch writes ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, folded here."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(64, 3)

        def forward(self, x):
            h = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
            b = h.shape[0]
            h = h.view(b, -1).reshape(b, 2, -1).sum(1)
            return self.fc(torch.cat([h, h * 2], 1))[:, 1:]

    net, path = Net().eval(), tmp_path / "torch.onnx"
    try:
        torch.onnx.export(net, (torch.randn(2, 1, 8, 8),), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, dynamo=False, do_constant_folding=False)
    except Exception as e:  # an exporter that needs packages this environment lacks
        pytest.skip(f"torch.onnx.export unavailable here: {type(e).__name__}: {e}")
    model = gb.import_onnx(path)
    (out,) = model.outputs
    assert out.shape == (None, 2)
    gx = gb.grad(gb.sum(out * out), model.inputs[0])
    for batch in (3, 5):
        X = np.random.default_rng(batch).normal(size=(batch, 1, 8, 8)).astype(np.float32)
        value, grad = gb.compile(model.inputs, [out, gx])(X)
        xt = torch.tensor(X, requires_grad=True)
        ref = net(xt)
        (ref * ref).sum().backward()
        np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-4, atol=1e-5)


def _shape_model(tmp_path, nodes, out_name: str):
    """A model reading ``x`` (batch unknown) whose output comes from ``nodes``."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)])
    path = tmp_path / "h.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


def test_hostile_shape_arithmetic_is_bounded(tmp_path):
    """Squaring a run-time size again and again would grow its polynomial without end: the
    folding bounds refuse it with a GraphFormatError."""
    from onnx import helper

    nodes = [helper.make_node("Shape", ["x"], ["s0"], start=0, end=1)]
    for k in range(40):
        nodes.append(helper.make_node("Mul", [f"s{k}", f"s{k}"], [f"s{k + 1}"]))
    nodes.append(helper.make_node("Reshape", ["x", "s40"], ["y"]))
    with pytest.raises(gb.GraphFormatError, match="folding bounds"):
        gb.import_onnx(_shape_model(tmp_path, nodes, "y"))


def test_a_shape_that_is_no_tensors_shape_is_refused_by_name(tmp_path):
    from onnx import helper

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Mul", ["s", "s"], ["s2"]),
             helper.make_node("ConstantOfShape", ["s2"], ["y"])]
    with pytest.raises(gb.GraphFormatError, match="ConstantOfShape shape: a shape computed from run-time sizes"):
        gb.import_onnx(_shape_model(tmp_path, nodes, "y"))
