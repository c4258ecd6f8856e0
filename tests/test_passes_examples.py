"""Every example: the optimised program agrees with the unoptimised one (values and
gradients), with all passes and with each pass alone, and one SGD step updates the
parameters identically."""

import importlib.util
import pathlib

import numpy as np
import pytest

import graphbp as gb
from graphbp.ops.leaves import Input
from graphbp.passes import PASS_NAMES

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


def _load(path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _feeds(inputs, rng):
    out = []
    for node in inputs:
        shape = tuple(7 if d is None else d for d in node.shape)
        if node.dtype.kind in "iu":
            out.append(rng.integers(0, 10, size=shape).astype(node.dtype))
        else:
            out.append(rng.normal(size=shape).astype(node.dtype))
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("only", [None, *PASS_NAMES])
def test_example_programs_agree(path, only):
    mod = _load(path)
    prog = mod.build()
    feeds = _feeds(prog.inputs, np.random.default_rng(0))
    switches = {p: True for p in PASS_NAMES} if only is None else {p: p == only for p in PASS_NAMES}
    opt = gb.compile(prog.inputs, prog.user_outputs, debug=True, passes=switches)(*feeds)
    ref = gb.compile(prog.inputs, prog.user_outputs, optimize=False)(*feeds)
    tol = 2e-5 if any(o.dtype == np.float32 for o in ref) else 1e-10
    for r, o in zip(ref, opt):
        np.testing.assert_allclose(o, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_training_step_agrees(path):
    mod = _load(path)
    m = mod.model()
    inputs = [n for n in gb.toposort([m.loss]) if isinstance(n.op, Input)]  # data, targets, carries
    feeds = _feeds(inputs, np.random.default_rng(1))
    start = [p.value.copy() for p in m.params]
    results = []
    for optimize in (False, True):
        for p, v in zip(m.params, start):
            p.value[...] = v
        step = gb.compile(inputs, [m.loss],
                          updates=gb.optim.SGD(0.1).updates(m.loss, m.params), optimize=optimize)
        loss = step(*feeds)[0]
        results.append((loss, [p.value.copy() for p in m.params]))
    (l0, p0), (l1, p1) = results
    tol = 2e-5 if l0.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(l1, l0, rtol=tol)
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)
