"""Blocked elementwise chains (runtime/blocking.py, runtime/lowering.py): a chain's full sum
accumulated per block in the chain's own precision, and the cheaper sigmoid lowering, each
against the unoptimised program and ``gb.evaluate``."""

import numpy as np
import pytest

import graphbp as gb


def _blocked(elements=1000):
    return gb.RuntimeOptions(block_min_bytes=1024, block_elements=elements, merged_block_elements=elements)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_blocked_sum_of_a_chain_is_accurate_in_every_float_dtype(dtype):
    """Each block is summed pairwise in its dtype (float16 in float64) and the partials in a
    Python float: as accurate as ``np.sum`` of the whole array."""
    x = gb.input("x", (None,), dtype=dtype)
    y = gb.sum(gb.tanh(x * 0.5) * x + 1.0)
    prog = gb.compile([x], [y], runtime=_blocked())
    xv = np.random.default_rng(0).standard_normal(20011).astype(dtype)
    got = prog(xv)[0]
    loop = prog.source()
    assert "_acc += float(add_reduce(" in loop
    assert ("float64" in loop.split("add_reduce(")[1].split(")")[0]) == (dtype == "float16")
    want = np.sum(np.tanh(xv.astype(np.float64) * 0.5) * xv.astype(np.float64) + 1.0)
    assert got.dtype == np.dtype(dtype)
    tol = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-13}[dtype]
    np.testing.assert_allclose(float(got), want, rtol=tol)
    np.testing.assert_allclose(float(got), float(gb.evaluate([y], {x: xv})[0]), rtol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_lowering_four_calls_in_a_blocked_chain(dtype):
    """``e / (1 + e)`` with ``e = exp(clip(x))``: finite, flag-free and close to the op's
    kernel over the whole range, NaN kept, inside a blocked chain and its gradient."""
    x = gb.input("x", (None,), dtype=dtype)
    s = gb.sigmoid(x * 2.0)
    y = gb.sum(s * x)
    (gx,) = gb.grad(y, [x])
    prog = gb.compile([x], [s, y, gx], runtime=_blocked())
    plain = gb.compile([x], [s, y, gx], optimize=False)
    xv = np.concatenate([np.linspace(-400, 400, 4001), np.random.default_rng(1).standard_normal(6000)]).astype(dtype)
    with np.errstate(all="raise"):
        got = prog(xv)
    ref = gb.evaluate([s, y, gx], {x: xv})
    tol = 2e-6 if dtype == "float32" else 1e-13
    for g, p, r in zip(got, plain(xv), ref):
        np.testing.assert_allclose(g, r, rtol=tol, atol=1e-30)
        np.testing.assert_allclose(p, r, rtol=tol, atol=1e-30)
    assert "clip(" in prog.source() and "for i in range(" in prog.source()
    nan = prog(np.array([np.nan] * 3000, dtype))
    assert np.isnan(nan[0]).all()
