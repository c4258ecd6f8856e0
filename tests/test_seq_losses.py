"""``gb.nn.embedding`` and ``gb.nn.masked_softmax_cross_entropy``: values against NumPy (and
PyTorch when installed), gradients against finite differences, and the padding contract."""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb

B, T, V, E = 3, 4, 5, 2
RNG = np.random.default_rng(3)


def _np_masked_ce(logits, t, mask):
    lsm = logits - logits.max(-1, keepdims=True)
    lsm = lsm - np.log(np.exp(lsm).sum(-1, keepdims=True))
    ce = -np.take_along_axis(lsm, np.where(mask != 0, t, 0)[..., None], -1)[..., 0]
    return (ce * mask).sum() / max(mask.sum(), 1.0)


def _feeds():
    logits = RNG.normal(size=(B, T, V))
    t = RNG.integers(0, V, (B, T))
    _, mask = gb.data.pad_sequences([[0] * 4, [0] * 2, [0] * 3])
    t[mask == 0] = -100  # padding may hold an out-of-range id
    return logits, t, mask.astype(np.float64)


def test_masked_ce_matches_numpy_and_ignores_padding():
    logits, t, mask = _feeds()
    x = gb.input("x", (None, T, V), "float64")
    tn = gb.input("t", (None, T), "int64")
    m = gb.input("m", (None, T), "float64")
    loss = gb.nn.masked_softmax_cross_entropy(x, tn, m)
    (value, g), = [gb.compile([x, tn, m], [loss, gb.grad(loss, x)])(logits, t, mask)]
    np.testing.assert_allclose(value, _np_masked_ce(logits, t, mask), rtol=1e-12)
    assert np.all(g[mask == 0] == 0.0)  # padded positions get no gradient
    # changing a padded position's logits changes nothing
    other = logits.copy()
    other[mask == 0] += 100.0
    assert float(gb.compile([x, tn, m], [loss])(other, t, mask)[0]) == pytest.approx(float(value))
    # an all-padding batch is 0, not NaN
    assert float(gb.compile([x, tn, m], [loss])(logits, t, np.zeros_like(mask))[0]) == 0.0


def test_masked_ce_bool_mask_and_gradient_by_finite_differences():
    logits, t, mask = _feeds()
    tn = gb.constant(t)
    mb = gb.constant(mask > 0)
    gb.check_grad(lambda x: gb.nn.masked_softmax_cross_entropy(x, tn, mb), [logits])
    w = RNG.uniform(0.5, 2.0, size=(B, T)) * mask  # float weights weigh positions
    gb.check_grad(lambda x: gb.nn.masked_softmax_cross_entropy(x, tn, gb.constant(w)), [logits])


def test_masked_ce_errors_name_the_operands():
    x = gb.input("x", (B, T, V))
    with pytest.raises(gb.DTypeError, match="integer class ids"):
        gb.nn.masked_softmax_cross_entropy(x, gb.input("t", (B, T)), gb.input("m", (B, T)))
    with pytest.raises(gb.ShapeError, match="targets' shape"):
        gb.nn.masked_softmax_cross_entropy(x, gb.input("t", (B, T), "int64"), gb.input("m", (B,)))


def test_embedding_gathers_rows_and_scatters_gradients():
    table = RNG.normal(size=(V, E))
    ids = np.array([[1, 1, 4], [0, 1, 2]])
    tb = gb.input("table", (V, E), "float64")
    i = gb.input("ids", (None, 3), "int64")
    out = gb.nn.embedding(tb, i)
    assert out.shape == (None, 3, E)
    w = RNG.normal(size=(2, 3, E))
    loss = gb.sum(out * w)
    value, g = gb.compile([tb, i], [out, gb.grad(loss, tb)])(table, ids)
    np.testing.assert_array_equal(value, table[ids])
    expect = np.zeros_like(table)
    np.add.at(expect, ids, w)  # row 1 is used three times: its gradients add up
    np.testing.assert_allclose(g, expect, rtol=1e-12)
    gb.check_grad(lambda tab: gb.sum(gb.nn.embedding(tab, gb.constant(ids)) * w), [table])
    with pytest.raises(gb.ShapeError, match="vocabulary, dim"):
        gb.nn.embedding(gb.input("v", (V,)), i)


def test_embedding_and_masked_ce_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    logits, t, mask = _feeds()
    table = RNG.normal(size=(V, E))
    proj = RNG.normal(size=(E, V))
    ids = RNG.integers(0, V, (B, T))
    # torch: embedding -> linear -> cross_entropy(ignore_index) over the unpadded positions
    tt, pt = torch.tensor(table, requires_grad=True), torch.tensor(proj, requires_grad=True)
    lt = torch.tensor(logits, requires_grad=True)
    z = F.embedding(torch.tensor(ids), tt) @ pt + lt
    target = torch.tensor(np.where(mask > 0, t, -100))
    ref = F.cross_entropy(z.reshape(-1, V), target.reshape(-1), ignore_index=-100)
    ref.backward()

    tb, p, x = (gb.input(n, a.shape, "float64") for n, a in (("table", table), ("proj", proj), ("x", logits)))
    i, tn, m = gb.input("ids", (B, T), "int64"), gb.input("t", (B, T), "int64"), gb.input("m", (B, T), "float64")
    loss = gb.nn.masked_softmax_cross_entropy(gb.nn.embedding(tb, i) @ p + x, tn, m)
    got = gb.compile([tb, p, x, i, tn, m], [loss, *gb.grad(loss, [tb, p, x])])(table, proj, logits, ids, t, mask)
    np.testing.assert_allclose(got[0], ref.item(), rtol=1e-10)
    for mine, theirs in zip(got[1:], (tt, pt, lt)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)
