"""``gb.nn`` recurrent cells run through ``gb.scan`` against PyTorch with copied weights:
outputs, final states and every gradient (inputs, initial states, weights, biases)."""

from __future__ import annotations

import numpy as np
import pytest

import graphbp as gb

torch = pytest.importorskip("torch")

T, B, I, H = 6, 3, 4, 5
RNG = np.random.default_rng(1)


def _params(module):
    return {k: gb.param(k, v.detach().numpy().copy()) for k, v in module.named_parameters()}


def _weights(p):
    return p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]


def _compare(module, state_t, run_gb, project):
    """Run ``module`` in torch and ``run_gb(x, *states, p)`` in graphbp; compare everything."""
    xv = RNG.normal(size=(T, B, I))
    states = [RNG.normal(size=(B, H)) for _ in state_t]
    xt = torch.tensor(xv, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in states]
    out_t, final_t = module(xt, st[0] if len(st) == 1 else tuple(st))
    final_t = final_t if isinstance(final_t, tuple) else (final_t,)
    (out_t.square().sum() + sum(f.sum() for f in final_t)).backward()

    p = _params(module)
    x = gb.input("x", (None, B, I), "float64")
    s = [gb.input(f"s{k}", (B, H), "float64") for k in range(len(states))]
    out, final = run_gb(x, s, p, project)
    loss = gb.sum(out * out) + sum(gb.sum(f) for f in final)
    names = list(p)
    grads = gb.grad(loss, [x, *s] + [p[k] for k in names])
    got = gb.compile([x, *s], [out, *final, *grads])(xv, *states)
    want = [out_t, *(f[0] for f in final_t), xt.grad, *(g.grad[0] for g in st),
            *(dict(module.named_parameters())[k].grad for k in names)]
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w.detach().numpy(), rtol=1e-9, atol=1e-11, err_msg=f"output {k}")


@pytest.mark.parametrize("project", [True, False])
def test_rnn_cell_matches_torch_rnn(project):
    def run(x, s, p, project):
        w_ih, w_hh, b_ih, b_hh = _weights(p)
        xs = x if project else gb.nn.input_projection(x, w_ih, b_ih)  # hoisted: one matmul for all steps

        def step(h, x_t):
            h = gb.nn.rnn_cell(x_t, h, w_ih, w_hh, b_ih, b_hh) if project else \
                gb.nn.rnn_cell(x_t, h, w_ih, w_hh, None, b_hh, project=False)
            return h, h
        h, out = gb.scan(step, s[0], xs)
        return out, [h]
    _compare(torch.nn.RNN(I, H, dtype=torch.float64), [0], run, project)


@pytest.mark.parametrize("project", [True, False])
def test_lstm_cell_matches_torch_lstm(project):
    def run(x, s, p, project):
        w_ih, w_hh, b_ih, b_hh = _weights(p)
        xs = x if project else gb.nn.input_projection(x, w_ih, b_ih)

        def step(hc, x_t):
            hc = gb.nn.lstm_cell(x_t, hc, w_ih, w_hh, b_ih, b_hh) if project else \
                gb.nn.lstm_cell(x_t, hc, w_ih, w_hh, None, b_hh, project=False)
            return hc, hc[0]
        (h, c), out = gb.scan(step, (s[0], s[1]), xs)
        return out, [h, c]
    _compare(torch.nn.LSTM(I, H, dtype=torch.float64), [0, 1], run, project)


def test_gru_cell_matches_torch_gru():
    def run(x, s, p, project):
        def step(h, x_t):
            h = gb.nn.gru_cell(x_t, h, *_weights(p))
            return h, h
        h, out = gb.scan(step, s[0], x)
        return out, [h]
    _compare(torch.nn.GRU(I, H, dtype=torch.float64), [0], run, True)


def test_cells_without_biases_build_and_run():
    x = gb.input("x", (B, I), "float64")
    h = gb.input("h", (B, H), "float64")
    w_ih, w_hh = gb.param("w_ih", RNG.normal(size=(4 * H, I))), gb.param("w_hh", RNG.normal(size=(4 * H, H)))
    h2, c2 = gb.nn.lstm_cell(x, (h, h), w_ih, w_hh)
    hv = RNG.normal(size=(B, H))
    xv = RNG.normal(size=(B, I))
    g = (xv @ w_ih.value.T + hv @ w_hh.value.T)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    i, f, gg, o = np.split(g, 4, axis=-1)
    c_ref = sig(f) * hv + sig(i) * np.tanh(gg)
    got_h, got_c = gb.compile([x, h], [h2, c2])(xv, hv)
    np.testing.assert_allclose(got_c, c_ref, rtol=1e-12)
    np.testing.assert_allclose(got_h, sig(o) * np.tanh(c_ref), rtol=1e-12)
