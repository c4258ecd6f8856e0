"""``licm``: loop-invariant code motion for ``scan`` bodies (issue 12).

On NumPy a recurrent net is fast when the work that does not depend on the carry runs once
over all steps, as one large call, and only the recurrence stays in the loop. Three moves,
each a rebuild of the ``Scan`` node (bodies are immutable, so the body is rebuilt too):

* **hoist**: a body value computed from the xs and loop invariants only (the input
  projection ``x_t @ W_x + b``, and in a reverse scan the whole recomputed forward step,
  which reads the stacked carries as xs) is computed for every step at once before the
  loop by the ops' batched forms over the stacked xs (``(T, B, in) @ W``: one matmul), and
  enters the body as a new sequence;
* **sink**: a value only the ys need (``dx_t = dz_t @ W``) is computed after the loop from
  the stacked values it reads, which the loop emits as ys instead;
* **reduce**: a carry that only accumulates (``acc' = acc + e_t``: a reverse scan's weight
  gradients) leaves the loop when ``e_t`` can be sunk; the sum over the steps runs after it,
  and a sum of per-step products ``sum_t x_t^T dz_t`` is one matmul over ``(T*B, ...)``.

A batched form is the same op over operands with a leading step axis (``Op.batched``, a
fact each op carries); an op without one stays in the body, and so does what depends on
it. Moved nodes keep their user line, scope and provenance. Pure views are
not hoisted alone (they cost nothing per step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..errors import GraphbpError
from ..graph.context import stamp
from ..graph.node import Node
from ..graph.rewrite import rewrite
from ..graph.subgraph import Subgraph, fresh_name, placeholder
from ..ops.base import Op, apply
from ..ops.control import TupleGet
from ..ops.elementwise import Add, Multiply
from ..ops.linalg import MatMul
from ..ops.loop import Scan
from ..ops.reduce import Sum
from ..ops.shape import Transpose
from .core import LogEntry, PassResult


@dataclasses.dataclass
class _Lift:
    """Which body nodes have an outside form, and whether it is stacked (per step) or
    computed once (from invariants only). ``op`` is the batched op to apply."""

    stacked: dict[Node, bool] = dataclasses.field(default_factory=dict)
    op: dict[Node, Op] = dataclasses.field(default_factory=dict)

    def consider(self, n: Node) -> bool:
        """Record ``n``'s outside form when all its operands have one; True if it does."""
        if any(i not in self.stacked for i in n.inputs):
            return False
        flags = tuple(self.stacked[i] for i in n.inputs)
        got = n.op.batched(flags, tuple(i.type for i in n.inputs), n.type)
        if got is None:
            return False
        self.stacked[n], self.op[n] = any(flags), got
        return True


def _region(roots: Sequence[Node], within: set[Node]) -> list[Node]:
    """``roots`` and their ancestors inside ``within``, inputs first."""
    seen: set[Node] = set()
    out: list[Node] = []
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        n, done = stack.pop()
        if done:
            out.append(n)
            continue
        if n in seen or n not in within:
            continue
        seen.add(n)
        stack.append((n, True))
        stack.extend((i, False) for i in reversed(n.inputs))
    return out


def _worth(region: list[Node]) -> bool:
    """Hoisting pays when the region does real work beyond views (a view costs nothing)."""
    return any(not n.op.view and n.op.leaf_kind is None for n in region)


def _worth_sinking(region: list[Node]) -> bool:
    """Sinking pays when the region holds a contraction or reduction (one call over all
    steps instead of one per step); elementwise work alone is not worth the stacked values
    the loop would have to emit for it."""
    return any(not n.op.view and not n.op.elementwise and n.op.leaf_kind is None for n in region)


def _build(nodes: list[Node], lift: _Lift, env: dict[Node, Node]) -> None:
    """The outside forms of ``nodes`` (inputs first) into ``env``, each stamped with its
    body node's user line, scope and provenance."""
    for n in nodes:
        if n in env:
            continue
        if n.op.leaf_kind is not None:  # a constant is the same value outside
            env[n] = n
            continue
        with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
            env[n] = apply(lift.op[n], *(i if i.op.leaf_kind == "constant" else env[i] for i in n.inputs),
                           name=n.name)


def _sum_steps(e: Node, lift: _Lift, env: dict[Node, Node], region: set[Node]) -> Node:
    """``sum_t e_t`` from the stacked operands of ``e``: a sum of per-step products
    ``a_t @ b_t`` is one matmul over the steps laid side by side; a per-step sum is one sum."""
    from ..ops.reduce import sum as sum_
    from ..ops.shape import reshape, transpose

    with stamp(origin=e.origin, scope=e.scope, provenance=e.provenance):
        if isinstance(e.op, MatMul) and all(lift.stacked.get(i) for i in e.inputs):
            a, b = e.inputs
            m, n = e.shape if e.ndim == 2 else (None, None)
            if a.ndim == b.ndim == 2 and m is not None and n is not None:
                if isinstance(a.op, Transpose) and a.op.axes == (1, 0) and lift.stacked.get(a.inputs[0]):
                    _build(_region([a.inputs[0]], region), lift, env)
                    a2 = transpose(reshape(env[a.inputs[0]], (-1, m)))  # (m, T*k): a view
                else:
                    _build(_region([a], region), lift, env)
                    a2 = reshape(transpose(env[a], (1, 0, 2)), (m, -1))
                _build(_region([b], region), lift, env)
                return apply(MatMul(), a2, reshape(env[b], (-1, n)))
        if isinstance(e.op, Sum) and not e.op.keepdims and lift.stacked.get(e.inputs[0]):
            _build(_region([e.inputs[0]], region), lift, env)
            return apply(Sum((0, *(a + 1 for a in e.op.axis))), env[e.inputs[0]])
        _build(_region([e], region), lift, env)
        return sum_(env[e], axis=0)


@dataclasses.dataclass(frozen=True)
class _Moved:
    node: Node  # the new scan
    outputs: list[Node]  # per output of the old scan (as it emitted them), its new value
    rules: tuple[str, ...]


def _uses(body: Subgraph) -> dict[Node, int]:
    uses: dict[Node, int] = {}
    for n in body.nodes():
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    for o in body.outputs:
        uses[o] = uses.get(o, 0) + 1
    return uses


def _size(n: Node) -> float:
    size = n.type.size()
    return float("inf") if size is None else size


def regroup(body: Subgraph, n_carry: int) -> Subgraph:
    """``body`` with each sum or product that mixes carry-dependent and carry-independent
    operands regrouped as ``(independent ones) op (dependent ones)``, so the independent
    part can be hoisted: ``(x W_ih + b_ih) + (h W_hh + b_hh)`` becomes
    ``((x W_ih + b_ih) + b_hh) + h W_hh``, and a reverse step's ``((dc * g) * i) * (1 - i)``
    becomes ``(g * i * (1 - i)) * dc``: one multiply per step, the rest once over all steps.
    Only single-use adds (multiplies) of one dtype are regrouped (floating-point sums and
    products are reassociated, as any reordering compiler does under fast-math; the
    operands stay the same). The independent operands are combined smallest first, so the
    broadcast biases meet each other before the (hoisted, all-steps) product:
    ``x W_ih + (b_ih + b_hh)``."""
    varying: set[Node] = set(body.inputs[:n_carry])
    for n in body.nodes():
        if any(i in varying for i in n.inputs):
            varying.add(n)
    uses = _uses(body)

    def terms(n: Node, root: Node) -> list[Node]:
        out, stack = [], [n]
        while stack:
            m = stack.pop()
            inner = m is root or (type(m.op) is type(root.op) and uses.get(m) == 1)
            if inner and m.dtype == root.dtype:
                stack.extend(reversed(m.inputs))
            else:
                out.append(m)
        return out

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        if type(n.op) not in (Add, Multiply) or n not in varying:
            return None
        parts = terms(n, n)
        still = [t for t in parts if t not in varying]
        moving = [t for t in parts if t in varying]
        if len(still) < 2 or not moving or any(t.dtype != n.dtype for t in parts):
            return None
        still.sort(key=_size)  # the biases first: b_ih + b_hh is one small add, not a pass over all steps
        op = type(n.op)
        with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
            acc = [new[t] for t in still]
            total = acc[0]
            for t in acc[1:]:
                total = apply(op(), total, t)
            for t in moving:
                total = apply(op(), total, new[t])
        return total

    outs = rewrite(list(body.outputs), visit)
    return body if all(a is b for a, b in zip(outs, body.outputs)) else Subgraph(body.inputs, tuple(outs))


def move_out(scan: Node, operands: Sequence[Node]) -> _Moved | None:
    """``scan`` (over ``operands``) with its carry-independent work moved out, or None."""
    op: Scan = scan.op
    grouped = regroup(op.body, op.n_carry)
    if grouped is not op.body:
        op = dataclasses.replace(op, body=grouped)
    body, nc, nx, ny = op.body, op.n_carry, op.n_xs, op.n_ys
    ph, outs = body.inputs, body.outputs
    carry_ph, xs_ph, inv_ph = ph[:nc], ph[nc:nc + nx], ph[nc + nx:]
    emitted = op.emitted()
    stacked_wanted = {i - nc - ny for i in emitted if i >= nc + ny}
    uses = _uses(body)

    # -- reduce + sink: what only the ys (or an accumulating carry) need -------------------
    accs: dict[int, Node] = {}  # carry k -> e_t of acc' = acc + e_t
    for k in range(nc):
        o, c = outs[k], carry_ph[k]
        if (isinstance(o.op, Add) and c in o.inputs and o.inputs[0] is not o.inputs[1] and uses.get(c) == 1
                and uses.get(o) == 1 and k not in stacked_wanted and c.dtype.kind == "f"
                and o.type == c.type == o.inputs[1 - o.inputs.index(c)].type):
            accs[k] = o.inputs[1 - o.inputs.index(c)]
    keep_roots = [outs[k] for k in range(nc) if k not in accs]
    needed = set(_region(keep_roots, set(body.nodes())))  # the recurrence, carries included
    lift = _Lift()
    for p in carry_ph:  # a carry read after the loop is the stacked carries
        lift.stacked[p] = True
    for p in xs_ph:
        lift.stacked[p] = True
    for p in inv_ph:
        lift.stacked[p] = False
    for n in body.nodes():
        if n in lift.stacked:
            continue
        if n.op.leaf_kind is not None:  # a constant: the same value outside
            lift.stacked[n], lift.op[n] = False, n.op
        elif n in needed:
            lift.stacked[n] = True  # emitted as a ys by the loop (its op is not re-applied)
        else:
            lift.consider(n)
    movable = {n for n in lift.op if n not in needed and n.op.leaf_kind is None}

    def region(n: Node) -> list[Node]:
        return _region([n], movable)

    accs = {k: e for k, e in accs.items() if e in movable and lift.stacked[e] and _worth_sinking(region(e))}
    sunk_ys = [j for j in range(ny) if outs[nc + j] in movable and lift.stacked[outs[nc + j]]
               and _worth_sinking(region(outs[nc + j]))]
    moved_regions = _region([*accs.values(), *(outs[nc + j] for j in sunk_ys)], movable)
    frontier = [i for n in moved_regions for i in n.inputs if i in needed and i not in ph and i.op.leaf_kind is None]
    frontier = list(dict.fromkeys(frontier))  # body values the loop emits for after it
    reads_carries = sorted({carry_ph.index(i) for n in moved_regions for i in n.inputs if i in carry_ph})
    keep_c = [k for k in range(nc) if k not in accs]
    keep_y = [j for j in range(ny) if j not in sunk_ys]
    rules = (("reduce",) if accs else ()) + (("sink",) if sunk_ys else ())

    # -- hoist: what does not depend on the (kept) carries ----------------------------------
    new_outs = [outs[k] for k in keep_c] + [outs[nc + j] for j in keep_y] + frontier
    hoist = _Lift()
    for p in xs_ph:
        hoist.stacked[p] = True
    for p in inv_ph:
        hoist.stacked[p] = False
    inner = _region(new_outs, set(body.nodes()))
    for n in inner:
        if n in hoist.stacked or n in carry_ph:
            continue
        if n.op.leaf_kind is not None:
            hoist.stacked[n], hoist.op[n] = False, n.op
        else:
            hoist.consider(n)
    hoistable = {n for n in hoist.op if n.op.leaf_kind is None}
    readers: dict[Node, bool] = {}
    for n in inner:
        if n not in hoistable:
            for i in n.inputs:
                readers[i] = True
    for o in new_outs:
        readers[o] = True
    lifted = [n for n in inner if n in hoistable and readers.get(n) and _worth(_region([n], hoistable))]
    if lifted:
        rules += ("hoist",)
    if not rules:
        return None

    # -- the new body and operands ----------------------------------------------------------
    taken = {p.op.input_name for p in ph}
    init, xs, inv = list(operands[:nc]), list(operands[nc:nc + nx]), list(operands[nc + nx:])
    env: dict[Node, Node] = {p: o for p, o in zip(ph[nc:], xs + inv)}
    _build(_region(lifted, hoistable), hoist, env)
    new_ph: dict[Node, Node] = {}
    for n in lifted:
        t = n.type
        new_ph[n] = placeholder(fresh_name(n.name or f"{n.op.name}_t", taken), t, n.origin)
    body_outs = rewrite(new_outs, lambda n, ins, new: new_ph.get(n))
    reached = _everything(body_outs)
    xs_pairs = [(p, x) for p, x in zip(xs_ph, xs)] + [(new_ph[n], env[n]) for n in lifted if hoist.stacked[n]]
    inv_pairs = [(p, v) for p, v in zip(inv_ph, inv)] + [(new_ph[n], env[n]) for n in lifted if not hoist.stacked[n]]
    used_xs = [(p, x) for p, x in xs_pairs if p in reached]
    xs_pairs = used_xs if used_xs or not xs_pairs else xs_pairs[:1]  # one sequence keeps the length
    inv_pairs = [(p, v) for p, v in inv_pairs if p in reached]
    new_body = Subgraph(tuple(carry_ph[k] for k in keep_c) + tuple(p for p, _ in xs_pairs + inv_pairs),
                        tuple(body_outs))
    nc2, ny2 = len(keep_c), len(keep_y) + len(frontier)
    want = ([keep_c.index(k) for k in range(nc) if k in keep_c and k in emitted]
            + [nc2 + keep_y.index(j) for j in keep_y if nc + j in emitted]
            + [nc2 + len(keep_y) + f for f in range(len(frontier))]
            + [nc2 + ny2 + keep_c.index(k) for k in keep_c if k in stacked_wanted or k in reads_carries])
    emit = tuple(sorted(set(want)))
    new_op = Scan(new_body, nc2, len(xs_pairs), op.reverse, op.length if not xs_pairs else None, emit)
    with stamp(origin=scan.origin, scope=scan.scope, provenance=scan.provenance):
        node = apply(new_op, *[init[k] for k in keep_c], *(x for _, x in xs_pairs), *(v for _, v in inv_pairs),
                     name=scan.name)
        got = {i: apply(TupleGet(emit.index(i)), node) for i in emit}

    # -- after the loop: the sunk ys and the accumulated sums -------------------------------
    after: dict[Node, Node] = {p: o for p, o in zip(ph[nc:], xs + inv)}
    for k in reads_carries:
        after[carry_ph[k]] = got[nc2 + ny2 + keep_c.index(k)]
    for f, n in enumerate(frontier):
        after[n] = got[nc2 + len(keep_y) + f]
    full: list[Node | None] = [None] * (2 * nc + ny)
    for k in keep_c:
        if k in emitted:
            full[k] = got[keep_c.index(k)]
        if nc + ny + k in emitted:
            full[nc + ny + k] = got[nc2 + ny2 + keep_c.index(k)]
    for j in keep_y:
        if nc + j in emitted:
            full[nc + j] = got[nc2 + keep_y.index(j)]
    for j in sunk_ys:
        y = outs[nc + j]
        _build(_region([y], movable), lift, after)
        full[nc + j] = after[y]
    for k, e in accs.items():
        total = _sum_steps(e, lift, after, movable)
        o = outs[k]
        with stamp(origin=o.origin, scope=o.scope, provenance=o.provenance):
            pair = (init[k], total) if o.inputs[0] is carry_ph[k] else (total, init[k])
            full[k] = apply(o.op, *pair, name=o.name)
    return _Moved(node, [full[i] for i in emitted], rules)


def _everything(roots: Sequence[Node]) -> set[Node]:
    from ..graph.traverse import toposort

    return set(toposort(list(roots)))


def hoist_loops(roots: list[Node]) -> PassResult:
    """Move carry-independent work out of every ``scan`` the roots reach (bodies first)."""
    log: list[LogEntry] = []
    replaced: dict[Node, list[Node]] = {}

    def visit(n: Node, ins: tuple[Node, ...], new) -> Node | None:
        if isinstance(n.op, TupleGet) and n.inputs[0] in replaced:
            return replaced[n.inputs[0]][n.op.index]
        bodies = n.op.subgraphs()
        if not bodies:
            return None
        inner = [b.map(lambda outs: hoist_loops(outs).roots) for b in bodies]
        cur = n
        if any(a is not b for a, b in zip(inner, bodies)) or ins != n.inputs:
            with stamp(origin=n.origin, scope=n.scope, provenance=n.provenance):
                cur = apply(n.op.replace_subgraphs(inner), *ins, name=n.name)
        if isinstance(cur.op, Scan):
            try:
                moved = move_out(cur, cur.inputs)
            except GraphbpError:  # a batched form that does not fit: the loop stays as it is
                moved = None
            if moved is not None:
                replaced[n] = moved.outputs
                for r in moved.rules:
                    log.append(LogEntry("licm", r, (n,), moved.node))
                return moved.node
        return cur if cur is not n else None

    return PassResult(rewrite(roots, visit), log)
