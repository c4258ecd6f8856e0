"""The same workloads in PyTorch (eager), JAX (jit) and HIPS autograd, when installed.

Each ``make(framework, workload)`` returns ``(step, feeds)`` like ``workloads.make_mlp`` or
raises ImportError. They are references only (the optional ``bench`` extra), never
dependencies of graphbp.
"""

from __future__ import annotations

import numpy as np

from workloads import GELU_K, LR, data, w4_data


def _torch_mlp(name):
    import torch

    torch.set_num_threads(1)
    d = data(name)
    Ws = [torch.tensor(w, requires_grad=True) for w in d["Ws"]]
    bs = [torch.tensor(b, requires_grad=True) for b in d["bs"]]
    x = torch.from_numpy(d["x"])
    t = torch.from_numpy(d["t"])
    act = torch.relu if d["act"] == "relu" else torch.tanh
    ce = d["loss"] == "softmax_ce"

    def step(x, t):
        h = x
        for i, (W, b) in enumerate(zip(Ws, bs)):
            h = h @ W + b
            if i < len(Ws) - 1:
                h = act(h)
        loss = torch.nn.functional.cross_entropy(h, t) if ce else torch.mean((h - t) ** 2)
        for p in Ws + bs:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in Ws + bs:
                p.sub_(LR * p.grad)
        return loss.item()

    return step, (x, t)


def _torch_w4():
    import torch

    torch.set_num_threads(1)
    d = w4_data()
    x = torch.from_numpy(d["x"])
    a, b, c = (torch.tensor(d[k]) for k in "abc")

    def step(x):
        x = x.detach().requires_grad_(True)
        y = torch.sum(torch.nn.functional.gelu(x * a + b, approximate="tanh") * c)
        (gx,) = torch.autograd.grad(y, x)
        return y.item(), gx

    return step, (x,)


def _jax_mlp(name):
    import jax
    import jax.numpy as jnp

    d = data(name)
    params = [jnp.asarray(w) for w in d["Ws"]] + [jnp.asarray(b) for b in d["bs"]]
    n = len(d["Ws"])
    relu = d["act"] == "relu"
    ce = d["loss"] == "softmax_ce"

    def loss_fn(ps, x, t):
        h = x
        for i in range(n):
            h = h @ ps[i] + ps[n + i]
            if i < n - 1:
                h = jax.nn.relu(h) if relu else jnp.tanh(h)
        if ce:
            logp = jax.nn.log_softmax(h)
            return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))
        return jnp.mean((h - t) ** 2)

    @jax.jit
    def update(ps, x, t):
        loss, gs = jax.value_and_grad(loss_fn)(ps, x, t)
        return loss, [p - LR * g for p, g in zip(ps, gs)]

    state = {"ps": params}
    x, t = jnp.asarray(d["x"]), jnp.asarray(d["t"])

    def step(x, t):
        loss, state["ps"] = update(state["ps"], x, t)
        return float(loss)

    return step, (x, t)


def _w4_loss(xp, x, a, b, c):
    """W4's ``sum(gelu_tanh(x * a + b) * c)`` written with the array module ``xp``."""
    u = x * a + b
    return xp.sum(0.5 * u * (1 + xp.tanh(GELU_K * (u + 0.044715 * u * u * u))) * c)


def _jax_w4():
    import jax
    import jax.numpy as jnp

    d = w4_data()
    a, b, c = d["a"], d["b"], d["c"]

    def f(x):
        return _w4_loss(jnp, x, a, b, c)

    vg = jax.jit(jax.value_and_grad(f))

    def step(x):
        y, g = vg(x)
        g.block_until_ready()
        return y, g

    return step, (jnp.asarray(d["x"]),)


def _autograd_mlp(name):
    import autograd
    import autograd.numpy as anp

    d = data(name)
    params = [w.copy() for w in d["Ws"]] + [b.copy() for b in d["bs"]]
    n = len(d["Ws"])
    relu = d["act"] == "relu"
    ce = d["loss"] == "softmax_ce"

    def loss_fn(ps, x, t):
        h = x
        for i in range(n):
            h = anp.dot(h, ps[i]) + ps[n + i]
            if i < n - 1:
                h = anp.maximum(h, 0) if relu else anp.tanh(h)
        if ce:
            m = anp.max(h, axis=1, keepdims=True)
            lse = anp.log(anp.sum(anp.exp(h - m), axis=1)) + m[:, 0]
            return anp.mean(lse - h[np.arange(h.shape[0]), t])
        return anp.mean((h - t) ** 2)

    vg = autograd.value_and_grad(loss_fn)

    def step(x, t):
        loss, gs = vg(params, x, t)
        for p, g in zip(params, gs):
            p -= LR * g
        return loss

    return step, (d["x"], d["t"])


def _autograd_w4():
    import autograd
    import autograd.numpy as anp

    d = w4_data()
    a, b, c = d["a"], d["b"], d["c"]

    def f(x):
        return _w4_loss(anp, x, a, b, c)

    return autograd.value_and_grad(f), (d["x"],)


FRAMEWORKS = {
    "pytorch-eager": (_torch_mlp, _torch_w4),
    "jax-jit": (_jax_mlp, _jax_w4),
    "autograd": (_autograd_mlp, _autograd_w4),
}


def make(framework: str, workload: str):
    mlp, w4 = FRAMEWORKS[framework]
    return w4() if workload == "W4" else mlp(workload)
