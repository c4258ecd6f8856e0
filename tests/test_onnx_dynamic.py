"""Programs with unknown (None) dims through ONNX and back: export, import with
``gb.import_onnx``, run at several batch sizes, compare with the original program and with
ONNX Runtime; ``gb.grad`` of the imported model equals the original gradient."""

from __future__ import annotations

import os
import runpy

import numpy as np
import pytest

import graphbp as gb

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

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


def _round_trip(program: gb.Program, tmp_path, size_sets) -> gb.ImportedModel:
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
    regrad = gb.grad(loss, imported.params)
    args = _feeds(program, {0: 5}, np.random.default_rng(1))
    got = gb.compile(imported.inputs, regrad)(*args)
    want = gb.compile(program.inputs, program.user_outputs[1:], optimize=False)(*args)
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"gradient {k}")
