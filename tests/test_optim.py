"""Optimisers, clipping and initialisers against hand-written NumPy formulas (exact, float64)."""

import numpy as np
import pytest

import graphbp as gb


def _problem(seed=0, dtype="float64"):
    """A least-squares problem with two parameters (matrix and bias) of the given dtype."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(16, 3)).astype(dtype)
    Y = rng.normal(size=(16, 2)).astype(dtype)
    x = gb.input("x", (None, 3), dtype=dtype)
    y = gb.input("y", (None, 2), dtype=dtype)
    W = gb.param("W", rng.normal(size=(3, 2)).astype(dtype))
    b = gb.param("b", np.zeros(2, dtype))
    loss = gb.mean(gb.square(x @ W + b - y))
    return X, Y, x, y, [W, b], loss


def _trajectory(opt, steps=6, dtype="float64", reference=None):
    """Run the compiled optimiser and, side by side, ``reference(values, grads, t)`` in NumPy.

    The gradients fed to the reference come from a separate compiled gradient program
    evaluated at the reference's own values, so any difference is the update rule's.
    """
    X, Y, x, y, params, loss = _problem(dtype=dtype)
    step = gb.compile([x, y], [loss], updates=opt.updates(loss, params))
    grad_prog = gb.compile([x, y], gb.grad(loss, params))
    ref = [p.value.copy() for p in params]
    state: dict = {}
    losses = []
    for t in range(1, steps + 1):
        saved = [p.value.copy() for p in params]
        for p, r in zip(params, ref):
            p.value = r
        grads = grad_prog(X, Y)
        for p, s in zip(params, saved):
            p.value = s
        ref = reference(ref, grads, t, state)
        losses.append(float(step(X, Y)[0]))
        for p, r in zip(params, ref):
            np.testing.assert_array_equal(p.value, r, err_msg=f"step {t}, param {p.name}")
    return losses


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0), (0.5, True, 0.01)])
def test_sgd_matches_numpy_exactly(momentum, nesterov, wd):
    lr = 0.05

    def ref(values, grads, t, state):
        out = []
        for i, (p, g) in enumerate(zip(values, grads)):
            d = g + wd * p if wd else g
            if momentum:
                buf = momentum * state.get(i, np.zeros_like(p)) + d
                state[i] = buf
                d = d + momentum * buf if nesterov else buf
            out.append(p - lr * d)
        return out

    opt = gb.optim.SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    losses = _trajectory(opt, reference=ref)
    assert opt.step == 6
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_numpy_exactly(wd):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8

    def ref(values, grads, t, state):
        out = []
        for i, (p, g) in enumerate(zip(values, grads)):
            m = b1 * state.get(("m", i), np.zeros_like(p)) + (1.0 - b1) * g
            v = b2 * state.get(("v", i), np.zeros_like(p)) + (1.0 - b2) * np.square(g)
            state["m", i], state["v", i] = m, v
            m_hat = m / (1.0 - b1**t)
            v_hat = v / (1.0 - b2**t)
            d = m_hat / (np.sqrt(v_hat) + eps)
            if wd:
                d = d + wd * p
            out.append(p - lr * d)
        return out

    opt = gb.optim.Adam(lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    losses = _trajectory(opt, reference=ref)
    assert losses[-1] < losses[0]
    st = opt.state()
    assert set(st) == {"adam/step", "adam/lr", "adam/m/W", "adam/v/W", "adam/m/b", "adam/v/b"}
    assert int(st["adam/step"]) == 6


def test_adam_float32_keeps_dtype_and_first_step_is_lr_sized():
    X, Y, x, y, params, loss = _problem(dtype="float32")
    before = [p.value.copy() for p in params]
    opt = gb.optim.Adam(lr=1e-2)
    pairs = opt.updates(loss, params)
    assert all(v.dtype == p.dtype for p, v in pairs)
    gb.compile([x, y], [loss], updates=pairs)(X, Y)
    for p, b in zip(params, before):
        assert p.value.dtype == np.float32
        # bias-corrected first step: |m_hat / sqrt(v_hat)| = 1, so every entry moves by ~lr
        np.testing.assert_allclose(np.abs(p.value - b), 1e-2, rtol=1e-3)


def test_lr_changes_between_steps_without_recompiling():
    X, Y, x, y, params, loss = _problem()
    opt = gb.optim.SGD(0.1)
    step = gb.compile([x, y], [loss], updates=opt.updates(loss, params))
    grads = gb.compile([x, y], gb.grad(loss, params))
    opt.lr = 0.25
    assert opt.lr == 0.25
    W0, gW = params[0].value.copy(), grads(X, Y)[0]
    step(X, Y)
    np.testing.assert_array_equal(params[0].value, W0 - 0.25 * gW)
    with pytest.raises(gb.GraphError):
        opt.lr = -1.0


def test_schedule_is_a_graph_function_of_the_step_count():
    X, Y, x, y, params, loss = _problem()
    opt = gb.optim.SGD(lambda step: 0.1 * gb.power(0.5, step))
    step = gb.compile([x, y], [loss], updates=opt.updates(loss, params))
    grads = gb.compile([x, y], gb.grad(loss, params))
    for k in range(3):
        assert opt.lr == 0.1 * 0.5**k
        W0, gW = params[0].value.copy(), grads(X, Y)[0]
        step(X, Y)
        np.testing.assert_allclose(params[0].value, W0 - 0.1 * 0.5**k * gW, rtol=0, atol=1e-15)
    with pytest.raises(gb.GraphError):
        opt.lr = 0.1


def test_state_roundtrip_resumes_identically():
    def run(steps, load=None):
        X, Y, x, y, params, loss = _problem()
        opt = gb.optim.Adam(lr=0.05)
        if load is not None:
            values, state = load
            for p, v in zip(params, values):
                p.value = v
            deferred = opt.load_state(state)  # before the slots exist: applied on creation
            assert "adam/m/W" in deferred
        step = gb.compile([x, y], [loss], updates=opt.updates(loss, params))
        for _ in range(steps):
            step(X, Y)
        return [p.value.copy() for p in params], opt.state()

    straight, _ = run(6)
    half_values, half_state = run(3)
    resumed, state = run(3, load=(half_values, half_state))
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    assert int(state["adam/step"]) == 6


def test_optimizer_rejects_bad_params():
    x = gb.input("x", (3,), dtype="float64")
    frozen = gb.param("frozen", np.ones(3), trainable=False)
    loss = gb.sum(x * frozen)
    with pytest.raises(gb.GraphError, match="trainable=False"):
        gb.optim.SGD(0.1).updates(loss, [frozen])
    with pytest.raises(gb.GraphError, match="only update gb.param"):
        gb.optim.SGD(0.1).updates(loss, [x])
    with pytest.raises(gb.GraphError):
        gb.optim.SGD(0.1, nesterov=True)


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_by_global_norm_matches_numpy(max_norm):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 3)), rng.normal(size=5)
    ga, gbn = gb.constant(a), gb.constant(b)
    clipped = gb.clip_by_global_norm([ga, gbn], max_norm)
    out = gb.compile([], clipped)()
    norm = np.sqrt(np.sum(np.square(a)) + np.sum(np.square(b)))
    scale = max_norm / np.maximum(norm, max_norm)
    np.testing.assert_array_equal(out[0], a * scale)
    np.testing.assert_array_equal(out[1], b * scale)
    new_norm = np.sqrt(sum(np.sum(o**2) for o in out))
    assert new_norm <= max_norm * (1 + 1e-12)
    if max_norm > norm:
        np.testing.assert_array_equal(out[0], a)  # untouched when already small enough


def test_clip_norm_option_bounds_every_sgd_step():
    X, Y, x, y, params, loss = _problem()
    opt = gb.optim.SGD(1.0, clip_norm=0.1)
    step = gb.compile([x, y], [loss], updates=opt.updates(loss, params))
    before = [p.value.copy() for p in params]
    step(X, Y)
    moved = np.sqrt(sum(np.sum((p.value - b) ** 2) for p, b in zip(params, before)))
    assert moved == pytest.approx(0.1, rel=1e-12)  # lr * clipped norm; the raw norm is larger


def test_initialisers_are_seeded_and_scaled():
    a = gb.init.he_normal((64, 128), seed=0)
    assert a.dtype == np.float32 and a.shape == (64, 128)
    np.testing.assert_array_equal(a, gb.init.he_normal((64, 128), seed=0))
    assert not np.array_equal(a, gb.init.he_normal((64, 128), seed=1))
    assert abs(a.std() - np.sqrt(2 / 64)) < 0.01
    g = gb.init.glorot_uniform((128, 10), seed=1)
    assert np.abs(g).max() <= np.sqrt(6 / 138)
    assert abs(g.std() - np.sqrt(2 / 138)) < 0.01
    u = gb.init.he_uniform((100, 50), seed=2, dtype="float64")
    assert u.dtype == np.float64 and np.abs(u).max() <= np.sqrt(6 / 100)
    assert gb.init.glorot_normal((3, 4), seed=0).shape == (3, 4)
    np.testing.assert_array_equal(gb.init.zeros(3), np.zeros(3, np.float32))
    assert gb.init.fans((32, 16, 3, 3)) == (144, 288)  # conv kernel (out, in, kH, kW)
    with pytest.raises(ValueError):
        gb.init.normal((2,), seed=0, dtype="int32")


def test_builtin_schedules_match_their_formulas():
    import math

    step = gb.input("step", (), dtype="float64")
    cos = gb.compile([step], [gb.optim.cosine_decay(0.1, 100, final_lr=0.01, warmup_steps=10)(step)])
    exp = gb.compile([step], [gb.optim.exponential_decay(0.1, 0.5, every=20)(step)])
    for s in [0, 5, 9, 10, 40, 99, 100, 150]:
        if s < 10:
            want = 0.1 * (s + 1) / 10
        else:
            frac = min(s - 10, 90) / 90
            want = 0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * frac))
        assert float(cos(np.float64(s))[0]) == pytest.approx(want, rel=1e-12)
        assert float(exp(np.float64(s))[0]) == pytest.approx(0.1 * 0.5 ** (s / 20), rel=1e-12)
    opt = gb.optim.Adam(lr=gb.optim.cosine_decay(1e-2, 50))
    assert opt.lr == pytest.approx(1e-2)
