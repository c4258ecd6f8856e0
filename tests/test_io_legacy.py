"""Graph files naming removed ops still load: ``gelu`` and ``gelu_tanh_grad`` (io/legacy.py).

``_OLD`` is the document ``gb.save`` wrote for ``[y, grad(y, x), gelu(x, "none")]`` with
``y = sum(gelu(x * a, "tanh") * 0.7)`` while gelu was one op and its VJP built one
``gelu_tanh_grad`` node (one row per node: op, inputs, params, shape, provenance).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import graphbp as gb
from graphbp.io.container import dump_json, encode_npz, write_zip
from graphbp.ops import elementwise as ew

_ORIGIN = ["model.py", 12, "<module>"]
_OLD = [
    ("input", [], {"input_name": "x", "type": {"tensor_type": {"shape": [None], "dtype": "float64"}}}, [None], []),
    ("param", [], {"param_name": "a", "value": {"array": "a0"}, "trainable": True}, [], []),
    ("multiply", [0, 1], {}, [None], []),
    ("gelu", [2], {"approximate": "tanh"}, [None], []),
    ("constant", [], {"value": {"array": "a1"}}, [], []),
    ("multiply", [3, 4], {}, [None], []),
    ("sum", [5], {"axis": {"tuple": [0]}, "keepdims": False}, [], []),
    ("constant", [], {"value": {"array": "a2"}}, [], [[6, "seed", None]]),
    ("reshape", [7], {"shape": {"tuple": [1]}}, [1], [[6, "vjp", 0]]),
    ("broadcast_to", [8, 5], {"shape": {"tuple": [None]}}, [None], [[6, "vjp", 0]]),
    ("multiply", [9, 4], {}, [None], [[5, "vjp", 0]]),
    ("gelu_tanh_grad", [2], {}, [None], [[3, "vjp", 0]]),
    ("multiply", [10, 11], {}, [None], [[3, "vjp", 0]]),
    ("multiply", [12, 1], {}, [None], [[2, "vjp", 0]]),
    ("gelu", [0], {"approximate": "none"}, [None], []),
]
_ARRAYS = {"a0": np.array(1.3), "a1": np.array(0.7), "a2": np.array(1.0)}
_K = math.sqrt(2 / math.pi)


def _document(version: int, rows=_OLD) -> dict:
    names = {0: "x", 1: "a", 7: "seed"}
    nodes = [{"op": op, "inputs": ins, "params": params, "type": {"shape": shape, "dtype": "float64"},
              "name": names.get(i), "scope": [], "origin": _ORIGIN, "provenance": prov}
             for i, (op, ins, params, shape, prov) in enumerate(rows)]
    return {"format": "graphbp.graph", "version": version, "graphbp_version": "0.1.0", "kind": "graph",
            "nodes": nodes, "inputs": [0], "outputs": [6, 13, 14], "updates": [], "compile": None}


def _write_old(path, doc: dict) -> None:
    with open(path, "wb") as f:
        write_zip(f, [("graph.json", dump_json(doc), True), ("arrays.npz", encode_npz(_ARRAYS), False)])


def _reference(xv: np.ndarray) -> list[np.ndarray]:
    """The three outputs in closed form (NumPy, ``math.erf``)."""
    u = 1.3 * xv
    t = np.tanh(_K * (u + 0.044715 * u**3))
    d = 0.5 * (1 + t) + 0.5 * u * (1 - t * t) * _K * (1 + 3 * 0.044715 * u * u)
    erf = np.vectorize(math.erf)(xv / math.sqrt(2))
    return [np.sum(0.5 * u * (1 + t) * 0.7), 0.7 * 1.3 * d, 0.5 * xv * (1 + erf)]


@pytest.mark.parametrize("version", [1, 2])
def test_gelu_and_its_gradient_op_load_as_primitives(tmp_path, version):
    _write_old(tmp_path / "old.gbp", _document(version))
    g = gb.load(tmp_path / "old.gbp")
    assert not {"gelu", "gelu_tanh_grad"} & {n.op.name for n in gb.toposort(g.outputs)}
    xv = np.linspace(-6, 6, 41)
    want = gb.evaluate(g.outputs, {g.inputs[0]: xv})
    for got, ref in zip(want, _reference(xv)):
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)
    program = g.compile()
    for got, ref in zip(program(xv), want):
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)
    # the forward's expansion and the derivative's share one tanh once CSE merged them
    assert sum(isinstance(n.op, ew.Tanh) for n in program.order) == 1
    # the derivative's nodes are gradient nodes; the forward gelu's are not
    assert g.outputs[1].is_gradient and not g.outputs[2].is_gradient
    assert all(n.origin.filename == "model.py" for n in gb.toposort(g.outputs[1:]) if n.inputs)


def test_a_loaded_legacy_graph_saves_in_todays_ops(tmp_path):
    _write_old(tmp_path / "old.gbp", _document(2))
    g = gb.load(tmp_path / "old.gbp")
    gb.save(tmp_path / "new.gbp", g.outputs)
    again = gb.load(tmp_path / "new.gbp")
    xv = np.linspace(-3, 3, 7)
    for u, v in zip(gb.evaluate(g.outputs, {g.inputs[0]: xv}), gb.evaluate(again.outputs, {again.inputs[0]: xv})):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("row, words", [
    (("gelu", [2], {"approximate": "sigmoid"}, [None], []), "nodes[3] (gelu).params.approximate"),
    (("gelu", [2], {}, [None], []), "expected parameters ['approximate']"),
    (("gelu_tanh_grad", [2], {"approximate": "tanh"}, [None], []), "expected parameters []"),
    (("gelu", [2, 1], {"approximate": "tanh"}, [None], []), "expected one tensor operand"),
    (("gelu", [2], {"approximate": "tanh"}, [3], []), "differs from the type its expansion gives"),
])
def test_bad_legacy_entries_are_format_errors(tmp_path, row, words):
    rows = list(_OLD)
    rows[3] = row
    _write_old(tmp_path / "bad.gbp", _document(2, rows))
    with pytest.raises(gb.GraphFormatError, match=re.escape(words)):
        gb.load(tmp_path / "bad.gbp")
