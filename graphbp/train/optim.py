"""Optimisers that build their update rule into the graph (``gb.optim.SGD``, ``gb.optim.Adam``).

``opt.updates(loss, params)`` differentiates ``loss`` symbolically and returns
``(param, new_value)`` pairs for ``gb.compile(updates=...)``. The whole step is graph
nodes, so it is compiled with the model, shown in diagrams, and applied in place by the
program. Optimiser state (momentum buffers, Adam's moments, the step count, the learning
rate) lives in non-trainable ``gb.param`` nodes owned by the optimiser: it persists
across calls, can be inspected and checkpointed (:meth:`Optimizer.state`,
:meth:`Optimizer.load_state`), and the learning rate can change between steps without
recompiling (``opt.lr = 0.01``).

A learning-rate *schedule* is a function from the step count to a learning rate written
with graph ops, e.g. ``lambda step: 0.01 * gb.exp(-step / 1000)``: it receives a float64
scalar node holding the number of updates already applied (0 on the first step) and is
evaluated inside the compiled step, so a plain training loop follows it with no callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import ops
from ..autodiff import grad
from ..errors import DTypeError, GraphError, ShapeError
from ..graph.node import Node
from ..graph.types import format_shape
from ..ops.leaves import Param
from .clip import clip_by_global_norm

Schedule = Callable[[Node], Node]
Updates = list[tuple[Node, Node]]


class Optimizer:
    """Base class: owns the state parameters and turns gradients into update pairs.

    Subclasses implement :meth:`_update`, mapping one parameter, its gradient and the
    shared step nodes to the parameter's new value (and registering any state updates).
    """

    def __init__(self, lr: float | Schedule, *, clip_norm: float | None = None, name: str) -> None:
        self.name = name
        self.clip_norm = clip_norm
        self._state: dict[str, Node] = {}  # name -> state param, in creation order
        self._slots: dict[tuple[Node, str], Node] = {}
        self._pending: dict[str, np.ndarray] = {}  # loaded before the slot existed
        self._step = self._new_state("step", np.zeros((), np.int64))
        self._schedule: Schedule | None = None
        self._lr_param: Node | None = None
        self._lr_program = None
        if callable(lr):
            self._schedule = lr
        else:
            self._lr_param = self._new_state("lr", np.asarray(_positive(lr, "lr"), np.float64))

    # -- public API -------------------------------------------------------------------
    def updates(self, loss: Node, params: Sequence[Node], *, unused: str = "warn") -> Updates:
        """Update pairs for one step of descent on scalar ``loss`` over ``params``.

        Gradients are derived with :func:`graphbp.grad` (and clipped when the optimiser
        was given ``clip_norm``). The step count's own update is included, so pass the
        whole list to ``gb.compile(updates=...)``. ``unused`` is passed to ``gb.grad``:
        a parameter ``loss`` does not depend on warns (``"warn"``), raises (``"raise"``)
        or is allowed (``"ignore"``).
        """
        params = self._check_params(params)
        grads = grad(loss, params, unused=unused)
        return self.apply_gradients(params, grads)

    def apply_gradients(self, params: Sequence[Node], grads: Sequence[Node]) -> Updates:
        """Update pairs from gradients you computed yourself (e.g. modified ones)."""
        params = self._check_params(params)
        grads = list(grads)
        if len(grads) != len(params):
            raise GraphError(f"{self.name}: {len(params)} params but {len(grads)} gradients")
        for p, g in zip(params, grads):
            if len(g.shape) != len(p.shape) or any(a is not None and a != b for a, b in zip(g.shape, p.shape)):
                raise ShapeError(
                    f"{self.name}: gradient {format_shape(g.shape)} does not match param "
                    f"{p.name!r} {format_shape(p.shape)}"
                )
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm)
        done = ops.cast(self._step, "float64")  # updates applied before this one
        count = ops.add(self._step, 1)
        lr = self._lr_node(done)
        lr_by_dtype: dict[np.dtype, Node] = {}
        pairs: Updates = []
        for p, g in zip(params, grads):
            if p.dtype not in lr_by_dtype:
                lr_by_dtype[p.dtype] = ops.cast(lr, p.dtype)
            pairs.append((p, self._update(p, g, lr_by_dtype[p.dtype], count, pairs)))
        pairs.append((self._step, count))
        return pairs

    @property
    def step(self) -> int:
        """Number of updates applied so far (by every program compiled from this optimiser)."""
        return int(self._step.value)

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        if self._lr_param is not None:
            return float(self._lr_param.value)
        if self._lr_program is None:
            from ..runtime import compile

            self._lr_program = compile([], [self._lr_node(ops.cast(self._step, "float64"))])
        return float(self._lr_program()[0])

    @lr.setter
    def lr(self, value: float) -> None:
        if self._lr_param is None:
            raise GraphError(
                f"{self.name}: the learning rate is a schedule compiled into the step; "
                "build a new optimiser to change it"
            )
        self._lr_param.value = np.float64(_positive(value, "lr"))

    def state(self) -> dict[str, np.ndarray]:
        """Copies of every state array by name (step count, lr, per-parameter slots).

        Slot names are ``"<optimiser>/<slot>/<param name>"``; together with the model's
        parameters this is everything needed to resume training exactly.
        """
        return {name: node.value.copy() for name, node in self._state.items()}

    def state_nodes(self) -> dict[str, Node]:
        """The state parameters themselves (read-only use: checkpoint writers, diagrams)."""
        return dict(self._state)

    def load_state(self, state: Mapping[str, Any]) -> list[str]:
        """Restore arrays saved by :meth:`state`.

        Entries for slots that do not exist yet (``updates`` not called) are kept and
        used when the slot is created, so state can be loaded before compiling.

        Returns
        -------
        list of str
            The names held back for slots not created yet.
        """
        deferred = []
        for name in sorted(state):
            arr = np.asarray(state[name])
            if name in self._state:
                self._state[name].value = arr
            else:
                self._pending[name] = arr.copy()
                deferred.append(name)
        return deferred

    # -- helpers for subclasses -----------------------------------------------------------
    def _slot(self, p: Node, slot: str) -> Node:
        """The state parameter ``slot`` of parameter ``p`` (zeros of its shape, created once)."""
        key = (p, slot)
        if key not in self._slots:
            self._slots[key] = self._new_state(f"{slot}/{p.name}", np.zeros(p.shape, p.dtype))
        return self._slots[key]

    def _new_state(self, local: str, init: np.ndarray) -> Node:
        name = f"{self.name}/{local}"
        base, k = name, 1
        while name in self._state:  # two params with one name: keep slots distinct
            k += 1
            name = f"{base}#{k}"
        if name in self._pending:
            loaded = self._pending.pop(name)
            if loaded.shape != init.shape:
                raise ShapeError(
                    f"{self.name}: loaded state {name!r} has shape {format_shape(loaded.shape)}, "
                    f"expected {format_shape(init.shape)}"
                )
            init = loaded.astype(init.dtype)
        node = ops.param(name, init, trainable=False)
        self._state[name] = node
        return node

    def _lr_node(self, done: Node) -> Node:
        if self._lr_param is not None:
            return self._lr_param
        lr = ops.base.as_node(self._schedule(done), like=done)
        if lr.shape != () or lr.dtype.kind != "f":
            raise GraphError(f"{self.name}: a schedule must return a float scalar node, got {lr.describe()}")
        return lr

    def _check_params(self, params: Sequence[Node]) -> list[Node]:
        params = [params] if isinstance(params, Node) else list(params)
        if not params:
            raise GraphError(f"{self.name}: no parameters to update")
        for p in params:
            if not isinstance(p, Node) or not isinstance(p.op, Param):
                raise GraphError(f"{self.name}: can only update gb.param nodes, got {p!r}")
            if not p.op.trainable:
                raise GraphError(f"{self.name}: param {p.name!r} was created with trainable=False")
            if p.dtype.kind != "f":
                raise DTypeError(f"{self.name}: param {p.name!r} is {p.dtype}; only float params can be trained")
        if len(set(params)) != len(params):
            raise GraphError(f"{self.name}: a parameter is listed twice")
        return params

    def _update(self, p: Node, g: Node, lr: Node, count: Node, pairs: Updates) -> Node:
        raise NotImplementedError

    def __repr__(self) -> str:
        lr = "schedule" if self._schedule is not None else f"{self.lr:g}"
        return f"<{type(self).__name__} {self.name!r} lr={lr}, step={self.step}>"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    With ``weight_decay`` = wd, momentum = mu, learning rate lr (PyTorch's convention)::

        d = g + wd * p
        b = mu * b + d                       (b starts at zero)
        p = p - lr * (d + mu * b)            if nesterov
        p = p - lr * b                       if momentum > 0
        p = p - lr * d                       otherwise

    Momentum averages recent gradients, damping oscillation across steep directions and
    speeding progress along shallow ones; Nesterov evaluates the step "ahead".
    """

    def __init__(self, lr: float | Schedule, momentum: float = 0.0, nesterov: bool = False, *,
                 weight_decay: float = 0.0, clip_norm: float | None = None, name: str = "sgd") -> None:
        if not 0.0 <= momentum < 1.0:
            raise GraphError(f"SGD: momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise GraphError("SGD: nesterov=True needs momentum > 0")
        if weight_decay < 0.0:
            raise GraphError(f"SGD: weight_decay must be >= 0, got {weight_decay}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        super().__init__(lr, clip_norm=clip_norm, name=name)

    def _update(self, p, g, lr, count, pairs):
        d = g + self.weight_decay * p if self.weight_decay else g
        if self.momentum:
            buf = self._slot(p, "momentum")
            new_buf = self.momentum * buf + d
            pairs.append((buf, new_buf))
            d = d + self.momentum * new_buf if self.nesterov else new_buf
        return p - lr * d


class Adam(Optimizer):
    """Adam with bias correction; decoupled weight decay (AdamW) when ``weight_decay > 0``.

    At step t = 1, 2, ... with gradient g::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        p = p - lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)

    Dividing by the running RMS gives every parameter a step of about ``lr`` whatever its
    gradient scale; bias correction undoes the moments' zero start. The decay term is
    applied to the weights directly, not through m and v, so it is not rescaled by the
    gradient statistics (Loshchilov & Hutter, "Decoupled Weight Decay Regularization").
    """

    def __init__(self, lr: float | Schedule = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, *, clip_norm: float | None = None,
                 name: str = "adam") -> None:
        for label, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise GraphError(f"Adam: {label} must be in [0, 1), got {b}")
        if eps <= 0.0 or weight_decay < 0.0:
            raise GraphError(f"Adam: need eps > 0 and weight_decay >= 0, got eps={eps}, weight_decay={weight_decay}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self._corrections: dict[tuple[Node, np.dtype], tuple[Node, Node]] = {}
        super().__init__(lr, clip_norm=clip_norm, name=name)

    def _bias_corrections(self, count: Node, dtype: np.dtype) -> tuple[Node, Node]:
        key = (count, dtype)
        if key not in self._corrections:
            t = ops.cast(count, "float64")
            c1 = 1.0 - ops.power(ops.constant(np.float64(self.beta1)), t)
            c2 = 1.0 - ops.power(ops.constant(np.float64(self.beta2)), t)
            self._corrections[key] = (ops.cast(c1, dtype), ops.cast(c2, dtype))
        return self._corrections[key]

    def _update(self, p, g, lr, count, pairs):
        m, v = self._slot(p, "m"), self._slot(p, "v")
        new_m = self.beta1 * m + (1.0 - self.beta1) * g
        new_v = self.beta2 * v + (1.0 - self.beta2) * ops.square(g)
        pairs += [(m, new_m), (v, new_v)]
        c1, c2 = self._bias_corrections(count, p.dtype)
        direction = (new_m / c1) / (ops.sqrt(new_v / c2) + self.eps)
        if self.weight_decay:
            direction = direction + self.weight_decay * p
        return p - lr * direction


def cosine_decay(lr: float, total_steps: int, final_lr: float = 0.0, warmup_steps: int = 0) -> Schedule:
    """Schedule: linear warm-up to ``lr`` over ``warmup_steps``, then half a cosine down to
    ``final_lr`` at ``total_steps`` (held there afterwards).

    Large steps early make fast progress; shrinking them smoothly at the end lets the
    weights settle into the minimum instead of bouncing around it.
    """
    lr, final_lr = _positive(lr, "lr"), float(final_lr)
    if total_steps <= warmup_steps:
        raise GraphError(f"cosine_decay: total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")

    def schedule(step: Node) -> Node:
        span = float(total_steps - warmup_steps)
        frac = ops.minimum(ops.maximum(step - float(warmup_steps), 0.0) / span, 1.0)
        value = final_lr + (lr - final_lr) * 0.5 * (1.0 + ops.cos(np.pi * frac))
        if warmup_steps:
            value = ops.where(ops.less(step, float(warmup_steps)), lr * (step + 1.0) / float(warmup_steps), value)
        return value

    return schedule


def exponential_decay(lr: float, rate: float, every: int = 1) -> Schedule:
    """Schedule: ``lr * rate ** (step / every)`` (smooth decay by ``rate`` per ``every`` steps)."""
    lr = _positive(lr, "lr")
    if not 0.0 < rate <= 1.0:
        raise GraphError(f"exponential_decay: rate must be in (0, 1], got {rate}")

    def schedule(step: Node) -> Node:
        return lr * ops.power(ops.constant(np.float64(rate)), step / float(every))

    return schedule


def _positive(value: Any, what: str) -> float:
    v = float(value)
    if not v > 0.0 or not np.isfinite(v):
        raise GraphError(f"{what} must be a positive finite number, got {value!r}")
    return v


__all__ = ["Optimizer", "SGD", "Adam", "clip_by_global_norm", "cosine_decay", "exponential_decay"]
