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
    assert "clip_ufunc(" in prog.source() and "for i in range(" in prog.source()
    nan = prog(np.array([np.nan] * 3000, dtype))
    assert np.isnan(nan[0]).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(None,), (None, 4)])
def test_sum_of_a_product_is_one_vdot_per_block(dtype, shape):
    x = gb.input("x", shape, dtype=dtype)
    u = gb.tanh(x * 0.7)
    v = x * 1.5 + 0.25
    y = gb.sum(u * v)
    (gx,) = gb.grad(y, [x])
    prog = gb.compile([x], [y, gx], runtime=_blocked())
    xv = np.random.default_rng(2).standard_normal((5003,) + tuple(4 for d in shape[1:])).astype(dtype)
    got = prog(xv)
    assert "vdot(" in prog.source() and "for i in range(" in prog.source()
    ref = gb.evaluate([y, gx], {x: xv})
    plain = gb.compile([x], [y, gx], optimize=False)(xv)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for g, p, r in zip(got, plain, ref):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)
        np.testing.assert_allclose(p, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_product_read_elsewhere_is_computed_and_its_sum_is_a_vdot(dtype):
    """SiLU's shape: ``sum(u s)`` where the derivative reads ``u s`` too, and ``u s`` as an
    output: the multiply stays, the sum is a vdot of its factors placed before it."""
    x = gb.input("x", (None,), dtype=dtype)
    u = x * 1.5 + 0.25
    p = u * gb.sigmoid(u)
    y = gb.sum(p)
    (gx,) = gb.grad(y * 0.5, [x])
    for outs in ([y, gx], [y, p]):
        prog = gb.compile([x], outs, runtime=_blocked())
        xv = np.random.default_rng(5).standard_normal(4999).astype(dtype)
        got = prog(xv)
        src = prog.source()
        assert "vdot(" in src and "add_reduce(" not in src
        loop = src.split("for i in range(")[1]
        assert loop.index("vdot(") < loop.index("multiply(", loop.index("clip_ufunc("))  # summed before made
        tol = 1e-5 if dtype == "float32" else 1e-12
        for g, r in zip(got, gb.evaluate(outs, {x: xv})):
            np.testing.assert_allclose(g, r, rtol=tol, atol=tol)
    # read by a step before its sum: still computed (not skipped)
    outs = [gb.sum(p), gb.sum(gb.tanh(p) * x)]
    prog = gb.compile([x], outs, runtime=_blocked())
    got = prog(xv)
    loop = prog.source().split("for i in range(")[1].split("\n    i, j =")[0]
    assert "vdot(" in loop and loop.count("multiply(") >= 2
    for g, r in zip(got, gb.evaluate(outs, {x: xv})):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", ["summand_is_not_a_product", "float16", "broadcast_row"])
def test_sum_of_a_product_stays_a_multiply_and_a_sum(case):
    dtype = "float16" if case == "float16" else "float32"
    x = gb.input("x", (None, 4), dtype=dtype)
    u = gb.tanh(x * 0.5)
    other = gb.input("r", (1, 4), dtype=dtype) if case == "broadcast_row" else x * 2.0 + 1.0
    p = u * other
    outs = [gb.sum(gb.tanh(p) + p)] if case == "summand_is_not_a_product" else [gb.sum(p)]
    feeds = [x, other] if case == "broadcast_row" else [x]
    prog = gb.compile(feeds, outs, runtime=_blocked())
    rng = np.random.default_rng(3)
    vals = [rng.standard_normal((3001, 4)).astype(dtype)] + ([rng.standard_normal((1, 4)).astype(dtype)]
                                                            if case == "broadcast_row" else [])
    got = prog(*vals)
    src = prog.source()
    assert "for i in range(" in src and "vdot(" not in src and "add_reduce(" in src
    assert case == "float16" or "multiply(" in src.split("for i in range(")[1]
    ref = gb.evaluate(outs, dict(zip(feeds, vals)))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(r, np.float64), rtol=2e-2 if dtype == "float16" else 1e-5)


def test_scratch_blocks_start_on_a_cache_line():
    from graphbp.runtime.blocking import CACHE_LINE

    x = gb.input("x", (None, 3), dtype="float32")
    y = gb.sum(gb.sigmoid(x * 2.0) * x)
    prog = gb.compile([x], [y, gb.grad(y, [x])[0]], runtime=_blocked(1000))
    xv = np.random.default_rng(4).standard_normal((2501, 3)).astype(np.float32)
    got = prog(xv)
    np.testing.assert_allclose(got[1], gb.evaluate([gb.grad(y, [x])[0]], {x: xv})[0], rtol=1e-5, atol=1e-6)
    ns = prog._executor.get(()).generated.step.__globals__
    scratch = [v for k, v in ns.items() if "_s" in k and isinstance(v, np.ndarray) and not k.endswith("_tail")]
    assert scratch and all(a.ctypes.data % CACHE_LINE == 0 and a.flags.c_contiguous for a in scratch)
