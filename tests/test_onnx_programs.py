"""Whole programs through ONNX: the examples, random graphs, a training step, the CLI, and a
model exported by PyTorch imported and differentiated."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings

import graphbp as gb

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from test_onnx import assert_close, run_ort  # noqa: E402
from test_random_graphs import SHAPE, _build, graphs  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py"))


def _feeds(program, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for x in program.inputs:
        shape = tuple(5 if d is None else d for d in x.shape)
        if x.dtype.kind in "iu":
            bound = 2
            for n in gb.toposort(program.user_outputs):  # class indices must fit the logits
                if getattr(n.op, "name", "") == "softmax_cross_entropy" and n.inputs[1] is x:
                    bound = n.inputs[0].shape[n.op.axis]
            feeds[x.op.input_name] = rng.integers(0, bound, size=shape).astype(x.dtype)
        else:
            feeds[x.op.input_name] = rng.normal(size=shape).astype(x.dtype)
    return feeds


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_program_runs_the_same_in_onnxruntime(example, tmp_path):
    ns = runpy.run_path(os.path.join(ROOT, "examples", example), run_name="__example__")
    program = ns["build"]()
    model = gb.export_onnx(program, tmp_path / "m.onnx")
    onnx.checker.check_model(model, full_check=True)
    feeds = _feeds(program, np.random.default_rng(0))
    args = [feeds[x.op.input_name] for x in program.inputs]
    want = gb.compile(program.inputs, program.user_outputs, optimize=False)(*args)
    got = run_ort(model, feeds)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, f"{example} output {k}")


def test_a_training_step_updates_parameters_as_graphbp_does(tmp_path):
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 6))
    t = gb.input("t", (None,), dtype="int64")
    W1 = gb.param("W1", gb.init.he_normal((6, 8), seed=1))
    b1 = gb.param("b1", np.zeros(8, np.float32))
    W2 = gb.param("W2", gb.init.glorot_uniform((8, 3), seed=2))
    params = [W1, b1, W2]
    loss = gb.mean(gb.softmax_cross_entropy(gb.relu(x @ W1 + b1) @ W2, t))
    step = gb.compile([x, t], [loss], updates=gb.optim.Adam(lr=0.01).updates(loss, params))
    model = gb.export_onnx(step, tmp_path / "step.onnx")
    onnx.checker.check_model(model, full_check=True)
    names = [o.name for o in model.graph.output]
    assert names[0] == "output0" and {"W1.new", "b1.new", "W2.new"} <= set(names)
    X, T = rng.normal(size=(16, 6)).astype(np.float32), rng.integers(0, 3, size=16)
    got = dict(zip(names, run_ort(model, {"x": X, "t": T})))
    (loss_value,) = step(X, T)  # updates the parameters in place
    assert_close(got["output0"], loss_value, "loss")
    for p in params:
        np.testing.assert_allclose(got[f"{p.name}.new"], p.value, rtol=1e-5, atol=1e-6, err_msg=p.name)


def test_gradient_outputs_are_named_after_their_parameters(tmp_path):
    x = gb.input("x", (None, 3))
    W = gb.param("W", np.ones((3, 2), np.float32))
    loss = gb.sum(gb.tanh(x @ W))
    model = gb.export_onnx(gb.compile([x], [loss, gb.grad(loss, W)]), tmp_path / "g.onnx")
    assert [o.name for o in model.graph.output] == ["output0", "grad.W"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # unknown dim stays symbolic
    docs = " ".join(n.doc_string for n in model.graph.node)
    assert "vjp of tanh" in docs and "test_onnx_programs.py" in docs  # provenance and user line


@settings(max_examples=25, deadline=None)
@given(graphs())
def test_random_graphs_and_their_gradients_match_onnxruntime(graph):
    steps, outs, seed = graph
    xs, loss, rng = _build(steps, outs, seed)
    grads = gb.grad(loss, xs)
    args = [rng.uniform(-1, 1, size=SHAPE) for _ in xs]
    want = gb.compile(xs, [loss, *grads], optimize=False)(*args)
    model = gb.export_onnx([loss, *grads], inputs=xs)
    got = run_ort(model, {f"x{i}": a for i, a in enumerate(args)})
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, f"{steps} output {k}")


def test_cli_exports_an_example(tmp_path):
    out = tmp_path / "xor.onnx"
    r = subprocess.run([sys.executable, "-m", "graphbp", "export", os.path.join(ROOT, "examples", "xor_tanh.py"),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "outputs" in r.stdout and out.exists()
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    bad = subprocess.run([sys.executable, "-m", "graphbp", "export", str(tmp_path / "missing.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_an_op_without_onnx_form_is_named_with_the_users_line():
    x = gb.input("x", (4,))
    y = gb.dropout(x, 0.5, key=gb.input("key", (), dtype="int64"))
    with pytest.raises(gb.GraphError, match=r"dropout_mask cannot be exported.*NumPy's generator(.|\n)*test_onnx_programs.py"):
        gb.export_onnx(y)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")  # dynamo=False: no onnxscript
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_a_pytorch_export_imports_and_its_input_gradient_matches_autograd(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 3), torch.nn.LogSoftmax(dim=-1))
    example = torch.randn(2, 5)
    path = tmp_path / "torch.onnx"
    try:
        torch.onnx.export(net, (example,), str(path), input_names=["x"], output_names=["logp"],
                          dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    except Exception as e:  # an exporter that needs packages this environment lacks
        if os.environ.get("CI"):
            raise  # CI installs what the exporter needs: nothing may skip there
        pytest.skip(f"torch.onnx.export unavailable here: {type(e).__name__}: {e}")
    model = gb.import_onnx(path)
    assert [i.name for i in model.inputs] == ["x"] and model.inputs[0].shape == (None, 5)
    assert len(model.params) == 6  # three weights, three biases, all trainable
    X = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    (out,) = model.outputs
    grad_x = gb.grad(gb.sum(out[:, 1]), model.inputs[0])
    value, gx = gb.compile(model.inputs, [out, grad_x])(X)
    xt = torch.tensor(X, requires_grad=True)
    ref = net(xt)
    ref[:, 1].sum().backward()
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")  # dynamo=False: no onnxscript
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_a_pytorch_cnn_with_batch_norm_imports_and_differentiates(tmp_path):
    """Conv, BatchNormalization (inference), MaxPool, AveragePool, GlobalAveragePool and Gemm
    from torch.onnx.export: values and the input gradient against torch autograd."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, stride=1, padding=1, groups=2), torch.nn.AvgPool2d(2),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 3))
    with torch.no_grad():  # running statistics that are not the identity
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    net.eval()
    path = tmp_path / "cnn.onnx"
    try:
        torch.onnx.export(net, (torch.randn(2, 1, 8, 8),), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, dynamo=False, do_constant_folding=False)
    except Exception as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"torch.onnx.export unavailable here: {type(e).__name__}: {e}")
    assert "BatchNormalization" in {n.op_type for n in onnx.load(str(path)).graph.node}
    model = gb.import_onnx(path)
    stats = [p for p in model.params if not p.op.trainable]
    assert len(stats) == 2  # running mean and variance: state, not trained
    X = np.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype(np.float32)
    (out,) = model.outputs
    gx = gb.grad(gb.sum(out * np.array([1.0, -2.0, 0.5], np.float32)), model.inputs[0])
    value, grad = gb.compile(model.inputs, [out, gx])(X)
    xt = torch.tensor(X, requires_grad=True)
    ref = net(xt)
    (ref * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
