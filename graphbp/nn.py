"""Sequence-model building blocks as plain functions of nodes: recurrent cells (for use as
(part of) a ``gb.scan`` step), embedding lookups and a masked per-position cross-entropy.

Each cell is one time step written with the public op builders, so it differentiates,
optimises and draws like any other graph; nothing here is a new op. Weights use PyTorch's
layouts and gate orders, so ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` weights copy over as they
are (``weight_ih_l0`` -> ``w_ih``, ...; tests/test_scan.py checks outputs and gradients):

=========  =========================  ===============================================
cell       weights                    one step (``*`` elementwise, ``σ`` sigmoid)
=========  =========================  ===============================================
rnn_cell   w_ih (H, I), w_hh (H, H)   h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)
lstm_cell  w_ih (4H, I), w_hh (4H, H) i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh, 4)
                                      c' = σ(f) * c + σ(i) * tanh(g);  h' = σ(o) * tanh(c')
gru_cell   w_ih (3H, I), w_hh (3H, H) r, z, n_x = split(x W_ih^T + b_ih, 3);  r_h, z_h, n_h = split(h W_hh^T + b_hh, 3)
                                      r = σ(r + r_h); z = σ(z + z_h); n = tanh(n_x + r * n_h)
                                      h' = (1 - z) * n + z * h
=========  =========================  ===============================================

Biases are optional (``None``: none, as ``bias=False`` in PyTorch). ``x`` is ``(B, I)`` (or
``(I,)``), states ``(B, H)``. The input projection ``x W_ih^T`` does not depend on the
carry: to compute it for all steps in one matmul, apply it to the whole ``(T, B, I)``
sequence before the scan and pass ``x_proj`` with ``project=False``.

:func:`embedding` and :func:`masked_softmax_cross_entropy` are the two ends of a token
model: ids -> vectors, and per-position logits -> one loss over the positions a padding
mask keeps. Both are composites of existing ops (``take``, ``softmax_cross_entropy``,
``where``, sums), so they need no gradient rule of their own.
"""

from __future__ import annotations

from .errors import DTypeError, ShapeError
from .graph.node import Node
from .ops import indexing, linalg, nn as nn_ops, reduce, elementwise as ew
from .ops.activations import sigmoid
from .ops.base import as_node


def _affine(x: Node, w: Node, b: Node | None) -> Node:
    y = linalg.matmul(x, w.T)
    return y if b is None else y + b


def input_projection(xs: Node, w_ih: Node, b_ih: Node | None = None) -> Node:
    """``xs W_ih^T + b_ih`` for a whole ``(T, B, I)`` sequence at once (one matmul)."""
    return _affine(xs, w_ih, b_ih)


def rnn_cell(x: Node, h: Node, w_ih: Node, w_hh: Node, b_ih: Node | None = None, b_hh: Node | None = None,
             project: bool = True) -> Node:
    """One step of an Elman RNN with tanh (``torch.nn.RNNCell``); returns ``h'``."""
    gx = _affine(x, w_ih, b_ih) if project else x
    return ew.tanh(gx + _affine(h, w_hh, b_hh))


def lstm_cell(x: Node, state: tuple[Node, Node], w_ih: Node, w_hh: Node, b_ih: Node | None = None,
              b_hh: Node | None = None, project: bool = True) -> tuple[Node, Node]:
    """One LSTM step (``torch.nn.LSTMCell``, gates in PyTorch's order i, f, g, o);
    ``state`` and the result are ``(h, c)``."""
    h, c = state
    gx = _affine(x, w_ih, b_ih) if project else x
    i, f, g, o = indexing.split(gx + _affine(h, w_hh, b_hh), 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * ew.tanh(g)
    return sigmoid(o) * ew.tanh(c), c


def gru_cell(x: Node, h: Node, w_ih: Node, w_hh: Node, b_ih: Node | None = None, b_hh: Node | None = None,
             project: bool = True) -> Node:
    """One GRU step (``torch.nn.GRUCell``, gates in PyTorch's order r, z, n); returns ``h'``.
    The reset gate scales ``h W_hn^T + b_hn`` (PyTorch's form, not the original paper's)."""
    gx = _affine(x, w_ih, b_ih) if project else x
    rx, zx, nx = indexing.split(gx, 3, axis=-1)
    rh, zh, nh = indexing.split(_affine(h, w_hh, b_hh), 3, axis=-1)
    r, z = sigmoid(rx + rh), sigmoid(zx + zh)
    n = ew.tanh(nx + r * nh)
    return (1.0 - z) * n + z * h


def embedding(table: Node, ids) -> Node:
    """Rows of ``table`` (V, E) at integer ``ids`` of any shape: ``table[ids]``, shape
    ``ids.shape + (E,)`` (``torch.nn.functional.embedding``). The gradient is a
    ``scatter_add`` of the output's gradient into the used rows (repeated ids add up);
    ids get none."""
    table = as_node(table)
    if table.ndim != 2:
        raise ShapeError(f"embedding: the table must be (vocabulary, dim), got {table.describe()}")
    return indexing.take(table, ids, axis=0)


def masked_softmax_cross_entropy(logits, targets, mask) -> Node:
    """Mean softmax cross-entropy over the positions ``mask`` keeps, for padded batches.

    Parameters
    ----------
    logits : node (B, T, V)
        Unnormalised scores per position (any leading shape; the class axis is last).
    targets : integer node (B, T)
        Class index per position. Padded positions may hold anything, even ids outside
        ``[0, V)``: they are replaced by 0 before the lookup and weigh nothing.
    mask : node (B, T), bool or float
        1 (True) where a position counts, 0 where it is padding; float values weight
        positions.

    Returns
    -------
    Node
        Scalar ``sum(ce * mask) / max(sum(mask), 1)``: the mean over kept positions (a
        batch that is all padding gives 0, not NaN), the same as PyTorch's
        ``cross_entropy(..., ignore_index=pad)`` with a 0/1 mask.
    """
    x, t, m = as_node(logits), as_node(targets), as_node(mask)
    if t.dtype.kind not in "iu":
        raise DTypeError(f"masked_softmax_cross_entropy: targets must be integer class ids, got {t.describe()}")
    if m.ndim != t.ndim:
        raise ShapeError(f"masked_softmax_cross_entropy: mask {m.describe()} must have the targets' shape "
                         f"{t.describe()}")
    keep = m if m.dtype.kind == "b" else ew.not_equal(m, 0)
    ce = nn_ops.softmax_cross_entropy(x, ew.where(keep, t, 0))
    w = ew.cast(m, ce.dtype)
    return reduce.sum(ce * w) / ew.maximum(reduce.sum(w), 1.0)
