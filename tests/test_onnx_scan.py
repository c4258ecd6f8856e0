"""``gb.scan`` through ONNX ``Loop``: forward, gradient and grad-of-grad programs run by ONNX
Runtime with graphbp's values, an LSTM training step, and the import back into a
``gb.scan`` that ``gb.grad`` differentiates. The op database's scan samples run through
tests/test_onnx.py as well."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphbp as gb
from graphbp.ops.loop import Scan

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from test_onnx import assert_close, run_ort  # noqa: E402

RNG = np.random.default_rng(0)


def _scans(outputs) -> list[Scan]:
    return [n.op for n in gb.toposort(list(outputs)) if isinstance(n.op, Scan)]


def _loops(model) -> int:
    return sum(n.op_type == "Loop" for n in model.graph.node)


def _check(inputs, outs, feeds, tmp_path, *, round_trip: bool = True):
    """ONNX Runtime equals graphbp on ``outs``; the re-imported model again, and its own
    gradients (taken by gb.grad on the imported scans) equal graphbp's."""
    args = [feeds[x.op.input_name] for x in inputs]
    want = gb.compile(inputs, outs, optimize=False)(*args)
    path = tmp_path / "scan.onnx"
    model = gb.export_onnx(outs, path, inputs=inputs)
    onnx.checker.check_model(model, full_check=True)
    assert _loops(model) >= 1
    got = run_ort(model, feeds)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, f"output {k} (ONNX Runtime)")
    if not round_trip:
        return model, None
    back = gb.import_onnx(path)
    again = gb.compile(back.inputs, back.outputs, optimize=False)(*args)
    for k, (g, w) in enumerate(zip(again, want)):
        assert_close(g, w, f"output {k} (imported)")
    return model, back


def _rnn(h0, xs, w, u, reverse=False):
    return gb.scan(lambda h, x: (gb.tanh(x @ u + h @ w), h * 2.0), h0, xs, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_forward_gradient_and_grad_of_grad_programs(reverse, tmp_path):
    """A tanh RNN with its weights as loop invariants: the loss, its gradients (a reverse
    scan) and a Hessian-vector product (a scan over the reverse scan's pullback)."""
    xs = gb.input("xs", (None, 2, 3), "float64")
    h0 = gb.input("h0", (2, 4), "float64")
    w = gb.param("w", 0.4 * RNG.normal(size=(4, 4)))
    u = gb.param("u", 0.4 * RNG.normal(size=(3, 4)))
    hT, ys = _rnn(h0, xs, w, u, reverse)
    loss = gb.sum(hT * hT) + gb.sum(gb.sin(ys))
    grads = gb.grad(loss, [w, u, xs, h0])
    v = gb.constant(RNG.normal(size=(4, 4)))
    hvp = gb.grad(gb.sum(grads[0] * v), [w, u])
    assert len(_scans([*grads, *hvp])) >= 3
    feeds = {"xs": RNG.normal(size=(5, 2, 3)), "h0": RNG.normal(size=(2, 4))}
    model, back = _check([xs, h0], [loss, *grads, *hvp], feeds, tmp_path)
    imported = _scans(back.outputs)
    assert imported and any(s.reverse for s in imported)  # the reverse scans come back reversed
    assert any(s.reverse == reverse for s in _scans(back.outputs[:1]))


def test_gb_grad_of_an_imported_scan_equals_the_original_gradient(tmp_path):
    xs = gb.input("xs", (6, 3), "float64")
    h0 = gb.input("h0", (4,), "float64")
    w = gb.param("w", 0.5 * RNG.normal(size=(4, 4)))
    u = gb.param("u", 0.5 * RNG.normal(size=(3, 4)))
    hT, ys = _rnn(h0, xs, w, u)
    loss = gb.sum(hT) + gb.sum(ys * ys)
    feeds = {"xs": RNG.normal(size=(6, 3)), "h0": RNG.normal(size=(4,))}
    want = gb.compile([xs, h0], gb.grad(loss, [w, u, xs, h0]))(feeds["xs"], feeds["h0"])
    _, back = _check([xs, h0], [loss], feeds, tmp_path)
    by_name = {p.name: p for p in back.params}
    (scan,) = _scans(back.outputs)
    assert scan.n_xs == 1 and not scan.reverse  # xs read per step became the scan's xs
    grads = gb.grad(back.outputs[0], [by_name["w"], by_name["u"], *back.inputs])
    got = gb.compile(back.inputs, grads)(feeds["xs"], feeds["h0"])
    for k, (g, w_) in enumerate(zip(got, want)):
        assert_close(g, w_, f"gradient {k} of the imported model")


def test_nested_carries_integer_counter_and_length_without_xs(tmp_path):
    x = gb.input("x", (3,), "float64")
    w = gb.param("w", 0.5 * RNG.normal(size=(3, 3)))

    def step(c, _):
        n, (a, b) = c["n"], c["ab"]
        return {"n": n + 1, "ab": (gb.tanh(w @ a) + 0.5 * b, a * b)}, {"y": a * 2.0, "k": n}

    c, ys = gb.scan(step, {"n": np.int64(0), "ab": (x, gb.sin(x))}, length=4)
    loss = gb.sum(c["ab"][0]) + gb.sum(c["ab"][1] * gb.cast(c["n"], "float64")) + gb.sum(ys["y"] ** 2)
    outs = [loss, ys["k"], *gb.grad(loss, [x, w])]
    _check([x], outs, {"x": RNG.normal(size=3)}, tmp_path)


def test_length_zero_returns_init_and_empty_ys(tmp_path):
    xs = gb.input("xs", (None, 3), "float64")
    h0 = gb.input("h0", (3,), "float64")
    w = gb.param("w", RNG.normal(size=(3, 3)))
    for reverse in (False, True):
        hT, ys = gb.scan(lambda h, x: (gb.tanh(h @ w + x), h), h0, xs, reverse=reverse)
        outs = [hT, ys, *gb.grad(gb.sum(hT) + gb.sum(ys), [h0, w, xs])]
        feeds = {"xs": np.zeros((0, 3)), "h0": RNG.normal(size=3)}
        _check([xs, h0], outs, feeds, tmp_path)
    c, ys = gb.scan(lambda c, _: (c + 1.0, c), h0, length=0)
    _check([h0], [c, ys], {"h0": RNG.normal(size=3)}, tmp_path)


def test_a_scan_inside_a_scan_body(tmp_path):
    xs = gb.input("xs", (4, 3, 2), "float64")
    w = gb.param("w", RNG.normal(size=(2, 2)))

    def outer(s, row):
        inner, _ = gb.scan(lambda a, x: (gb.tanh(a @ w + x), None), s, row)
        return inner, gb.sum(inner)

    hT, ys = gb.scan(outer, np.zeros(2), xs)
    loss = gb.sum(hT) + gb.sum(ys)
    _check([xs], [loss, *gb.grad(loss, [w, xs])], {"xs": RNG.normal(size=(4, 3, 2))}, tmp_path)


_UNARY = [gb.tanh, gb.sin, gb.sigmoid, lambda z: z * z, lambda z: -z, gb.exp]


@settings(max_examples=15, deadline=None, derandomize=True)
@given(f=st.sampled_from(range(len(_UNARY))), g=st.sampled_from(range(len(_UNARY))), steps=st.integers(0, 4),
       reverse=st.booleans(), unknown=st.booleans())
def test_random_scan_bodies_and_their_gradients_match_onnxruntime(f, g, steps, reverse, unknown):
    xs = gb.input("xs", (None if unknown else steps, 3), "float64")
    h0 = gb.input("h0", (3,), "float64")
    w = gb.param("w", 0.5 * np.random.default_rng(f + 7 * g).normal(size=(3, 3)))

    def step(h, x):
        z = _UNARY[f](h @ w + x)
        return 0.5 * z + 0.25 * h, _UNARY[g](h) * x

    hT, ys = gb.scan(step, h0, xs, reverse=reverse)
    loss = gb.sum(hT * hT) + gb.sum(ys)
    outs = [loss, *gb.grad(loss, [w, h0, xs])]
    rng = np.random.default_rng(steps)
    feeds = {"xs": rng.uniform(-1, 1, size=(steps, 3)), "h0": rng.uniform(-1, 1, size=3)}
    args = [feeds["xs"], feeds["h0"]]
    want = gb.compile([xs, h0], outs, optimize=False)(*args)
    model = gb.export_onnx(outs, inputs=[xs, h0])
    for k, (got, w_) in enumerate(zip(run_ort(model, feeds), want)):
        assert_close(got, w_, f"output {k}")


def _lstm_model(float_dtype: str):
    """embedding -> LSTM (gb.nn.lstm_cell in gb.scan) -> linear -> mean softmax-CE over every step."""
    vocab, emb, hidden, batch = 7, 5, 6, 3
    rng = np.random.default_rng(1)
    tokens = gb.input("tokens", (None, batch), dtype="int64")
    targets = gb.input("targets", (None, batch), dtype="int64")
    p = {name: gb.param(name, (0.3 * rng.normal(size=shape)).astype(float_dtype)) for name, shape in
         (("E", (vocab, emb)), ("w_ih", (4 * hidden, emb)), ("w_hh", (4 * hidden, hidden)),
          ("b", (4 * hidden,)), ("W", (hidden, vocab)), ("c", (vocab,)))}
    zeros = np.zeros((batch, hidden), float_dtype)

    def step(hc, tok):
        h, c = gb.nn.lstm_cell(gb.take(p["E"], tok, axis=0), hc, p["w_ih"], p["w_hh"], p["b"])
        return (h, c), h @ p["W"] + p["c"]

    _, logits = gb.scan(step, (zeros, zeros), tokens)
    loss = gb.mean(gb.softmax_cross_entropy(logits, targets))
    feeds = {"tokens": rng.integers(0, vocab, size=(8, batch)), "targets": rng.integers(0, vocab, size=(8, batch))}
    return tokens, targets, p, loss, feeds


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lstm_forward_and_gradients(dtype, tmp_path):
    tokens, targets, p, loss, feeds = _lstm_model(dtype)
    _check([tokens, targets], [loss, *gb.grad(loss, list(p.values()))], feeds, tmp_path)


def test_lstm_training_step_updates_parameters_as_graphbp_does(tmp_path):
    tokens, targets, p, loss, feeds = _lstm_model("float32")
    params = list(p.values())
    step = gb.compile([tokens, targets], [loss], updates=gb.optim.Adam(lr=0.01).updates(loss, params))
    model = gb.export_onnx(step, tmp_path / "step.onnx")
    onnx.checker.check_model(model, full_check=True)
    got = dict(zip([o.name for o in model.graph.output], run_ort(model, feeds)))
    (value,) = step(feeds["tokens"], feeds["targets"])  # updates the parameters in place
    assert_close(got["output0"], value, "loss")
    for q in params:
        np.testing.assert_allclose(got[f"{q.name}.new"], q.value, rtol=1e-5, atol=1e-6, err_msg=q.name)


# ------------------------------------------------------------ Loop models not written by graphbp
def _loop_model(body_nodes, *, trips, seqs, extra_inits=()):
    """``h = Loop(trips, "", h0)`` over ``h0: float64[2]``, reading the outer float64
    tensors ``seqs`` ({name: shape}) in ``body_nodes``; outputs the final ``h`` and ys ``y``."""
    from onnx import TensorProto as TP, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]), *body_nodes], "body",
        [helper.make_tensor_value_info("i", TP.INT64, []), helper.make_tensor_value_info("cond", TP.BOOL, []),
         helper.make_tensor_value_info("h", TP.DOUBLE, [2])],
        [helper.make_tensor_value_info("cond_out", TP.BOOL, []), helper.make_tensor_value_info("h_new", TP.DOUBLE, [2]),
         helper.make_tensor_value_info("y", TP.DOUBLE, [2])])
    inits = [numpy_helper.from_array(np.array(-1, np.int64), "minus_one"), *extra_inits]
    inputs = [helper.make_tensor_value_info("h0", TP.DOUBLE, [2])]
    inputs += [helper.make_tensor_value_info(n, TP.DOUBLE, list(s)) for n, s in seqs.items()]
    nodes = [helper.make_node("Loop", [trips, "", "h0"], ["hT", "ys"], body=body)]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("hT", TP.DOUBLE, [2]),
                                                   helper.make_tensor_value_info("ys", TP.DOUBLE, [None, 2])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model


def _same_as_onnxruntime(model, feeds, tmp_path, *, reverse=None, n_xs=None):
    """ONNX Runtime is the oracle for ONNX's Loop semantics: the imported scan agrees, and
    its gradient through the scan is finite-difference right."""
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "loop.onnx"
    path.write_bytes(model.SerializeToString())
    want = run_ort(model, feeds)
    back = gb.import_onnx(path)
    args = [feeds[x.name] for x in back.inputs]
    got = gb.compile(back.inputs, back.outputs)(*args)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_close(g, w, f"output {k}")
    (scan,) = _scans(back.outputs)
    if reverse is not None:
        assert scan.reverse == reverse
    if n_xs is not None:
        assert scan.n_xs == n_xs
    h0 = back.inputs[0]
    loss = gb.sum(back.outputs[0] ** 2) + gb.sum(gb.sin(back.outputs[1]))
    (g,) = gb.compile(back.inputs, gb.grad(loss, [h0]))(*args)
    f = gb.compile(back.inputs, [loss])
    eps, fd = 1e-6, np.zeros(2)
    for j in range(2):
        d = np.zeros(2)
        d[j] = eps
        fd[j] = (f(*[a + d if a is args[0] else a for a in args])[0] - f(*[a - d if a is args[0] else a for a in args])[0]) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reads", [False, True])
def test_a_loop_using_its_iteration_number_carries_a_counter(reads, tmp_path):
    """``i`` used as data (not only to read a sequence): an int64 step counter in the carry,
    beside a sequence read at ``-1 - i`` when ``reads``."""
    from onnx import TensorProto as TP, helper, numpy_helper

    body = [helper.make_node("Cast", ["i"], ["fi"], to=TP.DOUBLE),
            helper.make_node("Mul", ["h", "fi"], ["hi"]),
            helper.make_node("Sin", ["hi"], ["s"]),
            helper.make_node("Add", ["h", "s"], ["h_new" if not reads else "h_mid"]),
            helper.make_node("Identity", ["hi"], ["y"])]
    if reads:
        body += [helper.make_node("Sub", ["minus_one", "i"], ["back"]),
                 helper.make_node("Gather", ["b", "back"], ["b_t"], axis=0),
                 helper.make_node("Add", ["h_mid", "b_t"], ["h_new"])]
    trips = numpy_helper.from_array(np.array(4, np.int64), "M")
    model = _loop_model(body, trips="M", seqs={"b": (4, 2)} if reads else {}, extra_inits=[trips])
    feeds = {"h0": np.array([0.3, -0.7])}
    if reads:
        feeds["b"] = np.random.default_rng(5).normal(size=(4, 2))
    _same_as_onnxruntime(model, feeds, tmp_path, n_xs=int(reads), reverse=reads)


def test_known_trip_count_reads_a_prefix_and_mixed_directions_run_forward(tmp_path):
    """``M = 3`` over tensors of 5 rows: ``a`` read forward (its first 3 rows), ``b`` from
    the end (its last 3, newest first): a forward scan over ``a[:3]`` and ``b[-3:][::-1]``."""
    from onnx import helper, numpy_helper

    body = [helper.make_node("Gather", ["a", "i"], ["a_t"], axis=0),
            helper.make_node("Sub", ["minus_one", "i"], ["back"]),
            helper.make_node("Gather", ["b", "back"], ["b_t"], axis=0),
            helper.make_node("Mul", ["h", "a_t"], ["ha"]),
            helper.make_node("Tanh", ["ha"], ["t"]),
            helper.make_node("Add", ["t", "b_t"], ["h_new"]),
            helper.make_node("Identity", ["b_t"], ["y"])]
    trips = numpy_helper.from_array(np.array(3, np.int64), "M")
    model = _loop_model(body, trips="M", seqs={"a": (5, 2), "b": (5, 2)}, extra_inits=[trips])
    rng = np.random.default_rng(2)
    feeds = {"h0": rng.normal(size=2), "a": rng.normal(size=(5, 2)), "b": rng.normal(size=(5, 2))}
    _same_as_onnxruntime(model, feeds, tmp_path, reverse=False, n_xs=2)


def test_reads_from_the_end_only_make_a_reverse_scan(tmp_path):
    from onnx import helper

    body = [helper.make_node("Sub", ["minus_one", "i"], ["back"]),
            helper.make_node("Gather", ["b", "back"], ["b_t"], axis=0),
            helper.make_node("Mul", ["h", "b_t"], ["hb"]),
            helper.make_node("Tanh", ["hb"], ["h_new"]),
            helper.make_node("Identity", ["h"], ["y"])]
    model = _loop_model(body, trips="T", seqs={"b": ("n", 2)})
    trip_count = [helper.make_node("Shape", ["b"], ["T1"], start=0, end=1), helper.make_node("Squeeze", ["T1"], ["T"])]
    for k, node in enumerate(trip_count):  # T = len(b) at run time, before the Loop
        model.graph.node.insert(k, node)
    rng = np.random.default_rng(3)
    feeds = {"h0": rng.normal(size=2), "b": rng.normal(size=(6, 2))}
    _same_as_onnxruntime(model, feeds, tmp_path, reverse=True, n_xs=1)


@pytest.mark.parametrize("majority_reverse", [False, True])
def test_an_onnx_scan_imports_with_its_directions_and_axes(majority_reverse, tmp_path):
    """ONNX ``Scan`` (what other exporters write) as gb.scan: a scan input along axis 1, per
    input and per output directions, an output along axis 1; ONNX Runtime is the oracle."""
    from onnx import TensorProto as TP, helper

    d = int(majority_reverse)
    body = helper.make_graph(
        [helper.make_node("Mul", ["h", "a_t"], ["ha"]), helper.make_node("Tanh", ["ha"], ["t"]),
         helper.make_node("Add", ["t", "b_t"], ["h_new"]), helper.make_node("Identity", ["h"], ["y1"]),
         helper.make_node("Mul", ["b_t", "c_t"], ["y2"])], "body",
        [helper.make_tensor_value_info(n, TP.DOUBLE, [2]) for n in ("h", "a_t", "b_t", "c_t")],
        [helper.make_tensor_value_info(n, TP.DOUBLE, [2]) for n in ("h_new", "y1", "y2")])
    node = helper.make_node("Scan", ["h0", "a", "b", "c"], ["hT", "ys1", "ys2"], body=body, num_scan_inputs=3,
                            scan_input_axes=[0, 1, 0], scan_input_directions=[d, 1 - d, d],
                            scan_output_directions=[1, 0], scan_output_axes=[0, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("h0", TP.DOUBLE, [2]),
                      helper.make_tensor_value_info("a", TP.DOUBLE, ["n", 2]),
                      helper.make_tensor_value_info("b", TP.DOUBLE, [2, "n"]),
                      helper.make_tensor_value_info("c", TP.DOUBLE, ["n", 2])],
        [helper.make_tensor_value_info(n, TP.DOUBLE, s) for n, s in (("hT", [2]), ("ys1", [None, 2]), ("ys2", [2, None]))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    rng = np.random.default_rng(4)
    feeds = {"h0": rng.normal(size=2), "a": rng.normal(size=(5, 2)), "b": rng.normal(size=(2, 5)),
             "c": rng.normal(size=(5, 2))}
    _same_as_onnxruntime(model, feeds, tmp_path, reverse=majority_reverse, n_xs=3)
