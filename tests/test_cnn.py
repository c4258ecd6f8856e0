"""Image ops beyond the op database: build errors, batch-norm state, file round trip, diagrams."""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb


def _x(shape=(None, 3, 8, 8)):
    return gb.input("x", shape)


@pytest.mark.parametrize("make, words", [
    (lambda: gb.conv2d(_x(), gb.input("w", (4, 2, 3, 3))), ["conv2d", "(?, 3, 8, 8)", "(4, 2, 3, 3)", "groups=1"]),
    (lambda: gb.conv2d(_x(), gb.input("w", (4, 1, 3, 3)), groups=2),
     ["conv2d", "groups=2", "(?, 3, 8, 8)", "(4, 1, 3, 3)"]),
    (lambda: gb.conv2d(_x((2, 3, 4, 4)), gb.input("w", (4, 3, 7, 7)), padding=1),
     ["conv2d", "(2, 3, 4, 4)", "(4, 3, 7, 7)", "padding=((1, 1), (1, 1))", "kernel 7x7"]),
    (lambda: gb.conv2d(_x((3, 8, 8)), gb.input("w", (4, 3, 3, 3))), ["conv2d", "4-D", "(3, 8, 8)"]),
    (lambda: gb.conv2d(_x(), gb.input("w", (4, 3, 2, 2)), stride=2, padding="same"),
     ["conv2d", "padding='same' needs stride 1", "(4, 3, 2, 2)"]),
    (lambda: gb.conv_transpose2d(_x(), gb.input("w", (4, 2, 3, 3))), ["conv_transpose2d", "(?, 3, 8, 8)", "(4, 2, 3, 3)"]),
    (lambda: gb.conv_transpose2d(_x(), gb.input("w", (3, 2, 3, 3)), stride=2, output_padding=2),
     ["conv_transpose2d", "output_padding=(2, 2)", "stride=(2, 2)"]),
    (lambda: gb.max_pool2d(_x((2, 3, 4, 4)), 5), ["max_pool2d", "(2, 3, 4, 4)", "kernel_size=(5, 5)"]),
    (lambda: gb.avg_pool2d(_x((2, 3, 4)), 2), ["avg_pool2d", "4-D", "(2, 3, 4)"]),
    (lambda: gb.max_pool2d(_x(), 2, padding=2), ["max_pool2d", "padding=(2, 2)", "half the kernel"]),
    (lambda: gb.conv1d(_x(), gb.input("w", (4, 3, 3))), ["conv2d", "conv1d input must be 3-D"]),
    (lambda: gb.batch_norm(_x(), *(gb.input(n, (4,)) for n in "gbmv")), ["batch_norm", "(3,)", "(4,)"]),
])
def test_bad_settings_raise_shape_error_at_the_users_line(make, words):
    with pytest.raises(gb.ShapeError) as info:
        make()
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    first = make.__code__.co_firstlineno
    assert any(f"test_cnn.py:{n} " in msg for n in range(first, first + 3)), msg


def test_unknown_spatial_dims_are_refused_with_the_reason():
    with pytest.raises(gb.ShapeError, match="known channel and spatial dims"):
        gb.conv2d(gb.input("x", (None, 3, None, 8)), gb.input("w", (4, 3, 3, 3)))


def test_batch_norm_running_statistics_follow_momentum_and_unbiased_variance():
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 2, 3, 3), dtype="float64")
    gamma, beta = gb.param("gamma", np.ones(2)), gb.param("beta", np.zeros(2))
    rm = gb.param("rm", np.zeros(2), trainable=False)
    rv = gb.param("rv", np.ones(2), trainable=False)
    out, updates = gb.batch_norm_train(x, gamma, beta, rm, rv, momentum=0.25)
    step = gb.compile([x], [out], updates=updates)
    m, v = np.zeros(2), np.ones(2)
    for _ in range(3):
        X = rng.normal(2.0, 3.0, size=(4, 2, 3, 3))
        (y,) = step(X)
        m = 0.75 * m + 0.25 * X.mean(axis=(0, 2, 3))
        v = 0.75 * v + 0.25 * X.var(axis=(0, 2, 3), ddof=1)
        np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(rm.op.value, m, rtol=1e-12)
    np.testing.assert_allclose(rv.op.value, v, rtol=1e-12)
    (ye,) = gb.compile([x], [gb.batch_norm(x, gamma, beta, rm, rv)])(X)
    np.testing.assert_allclose(ye, (X - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5), rtol=1e-10)
    assert not rm.op.trainable and gb.grad(gb.sum(out), [gamma])[0] is not None


def test_conv_gradient_graph_reads_like_the_textbook():
    x = gb.input("x", (None, 1, 6, 6), dtype="float64")
    w = gb.param("w", np.ones((2, 1, 3, 3)))
    gx, gw = gb.grad(gb.sum(gb.conv2d(x, w, padding=1)), [x, w])
    assert gx.op.name == "conv_transpose2d" and gw.op.name == "conv2d_weight_grad"
    (ggw,) = gb.grad(gb.sum(gx * gx), [w])  # grad of grad goes through conv2d again
    names = {n.op.name for n in gb.toposort([ggw])}
    assert {"conv2d", "conv_transpose2d", "conv2d_weight_grad"} <= names


def test_cnn_graph_survives_a_file_round_trip(tmp_path):
    x = gb.input("x", (None, 1, 8, 8))
    w = gb.param("w", gb.init.he_normal((4, 1, 3, 3), seed=0))
    b = gb.param("b", np.zeros(4, np.float32))
    y = gb.avg_pool2d(gb.max_pool2d(gb.relu(gb.conv2d(x, w, b, padding="same")), 2), 2, padding=1)
    loss = gb.sum(y * y)
    (gw,) = gb.grad(loss, [w])
    gb.save(tmp_path / "cnn.gbp", [loss, gw])
    loaded = gb.load(tmp_path / "cnn.gbp")
    X = np.random.default_rng(0).normal(size=(3, 1, 8, 8)).astype(np.float32)
    expect = gb.compile([x], [loss, gw])(X)
    got = gb.compile(list(loaded.inputs), list(loaded.outputs))(X)
    for a, e in zip(got, expect):
        np.testing.assert_array_equal(a, e)


def test_conv_flops_count_the_multiply_adds():
    x = gb.input("x", (None, 3, 8, 8))
    y = gb.conv2d(x, gb.input("w", (4, 3, 3, 3)), padding=1)
    assert y.op.flops([x.type, y.inputs[1].type], y.type).at(2) == 2 * (2 * 4 * 8 * 8) * 27


def test_max_pool_gradient_goes_to_one_maximum_per_window():
    x = gb.input("x", (1, 1, 2, 4), dtype="float64")
    (g,) = gb.compile([x], [gb.grad(gb.sum(gb.max_pool2d(x, 2)), x)])(np.array([[[[1.0, 1, 0, 2], [1, 0, 2, 2]]]]))
    np.testing.assert_array_equal(g, [[[[1, 0, 0, 1], [0, 0, 0, 0]]]])


def test_he_normal_knows_the_conv_fan_in():
    w = gb.init.he_normal((64, 16, 3, 3), seed=0, dtype="float64")
    assert gb.init.fans((64, 16, 3, 3)) == (16 * 9, 64 * 9)
    assert abs(w.std() - np.sqrt(2 / (16 * 9))) < 0.01


def test_cnn_demo_trains_and_draws_collapsed_diagrams(tmp_path, monkeypatch):
    import io

    import graphbp.train.demo as demo

    monkeypatch.setattr(demo.shutil, "which", lambda name: None)  # DOT text: no Graphviz needed
    out = io.StringIO()
    res = demo.run_demo(model="cnn", epochs=1, out=tmp_path, progress=False, stream=out)
    assert res.test_accuracy > 0.9 and len(res.history) == 1
    assert "CNN conv3x3(16)" in out.getvalue() and "shifted by up to one pixel" in out.getvalue()
    forward = (tmp_path / "forward.dot").read_text()
    assert all(f'"{layer}' in forward or layer in forward for layer in ("conv1", "conv2", "dense1", "dense2"))
    with pytest.raises(ValueError, match="model must be one of"):
        demo.run_demo(model="resnet", out=tmp_path)


def test_cnn_example_trains_one_epoch():
    import runpy
    from pathlib import Path

    ns = runpy.run_path(str(Path(__file__).resolve().parent.parent / "examples" / "cnn_digits.py"), run_name="example")
    assert ns["main"](epochs=1) > 0.7


def test_conv_bias_relu_fuses_into_one_op_that_agrees_with_the_unfused_graph():
    """``relu(conv2d(x, w, bias=b))`` becomes one ``conv_bias_act`` (the convolution's buffer
    takes bias and activation in place); values and gradients stay those of the graph as built."""
    rng = np.random.default_rng(0)
    x = gb.input("x", (None, 2, 6, 6), dtype="float64")
    w = gb.param("w", rng.normal(size=(3, 2, 3, 3)))
    b = gb.param("b", rng.normal(size=3))
    y = gb.relu(gb.conv2d(x, w, bias=b, padding=1))
    loss = gb.sum(gb.max_pool2d(y, 2) * 0.5)
    outs = [loss, *gb.grad(loss, [x, w, b])]
    prog = gb.compile([x], outs)
    fused = [e for e in prog.rewrite_log if e.rule == "conv_bias_act"]
    assert len(fused) == 1 and [n.op.name for n in fused[0].before] == ["conv2d", "add", "relu"]
    assert any(n.op.name == "conv_bias_act" for n in prog.order)
    X = rng.normal(size=(4, 2, 6, 6))
    want = gb.evaluate(outs, {x: X})
    for got, ref in zip(prog(X), want):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
