"""``program.explain()``: the schedules and a cost summary as plain text.

One line per scheduled op (step, op, type, bytes, where it came from), then node counts,
a FLOP estimate, peak memory (the executor's memory plan when the caller gives concrete
shapes, else a liveness estimate over the schedules), the saved activations with the
backward steps and rules that read each, and the values rematerialisation recomputes.
"""

from __future__ import annotations

from typing import Any

from ..graph.node import Node
from ..graph.subgraph import Subgraph
from ..graph.types import TensorType
from ..ops.control import TupleGet
from ..ops.loop import Scan
from .classify import absorbed_ops, leaf_kind, op_detail, provenance_text
from .costs import Poly, bytes_poly, liveness_peak, total_flops
from .subject import Subject, node_title, origin_text, short_type, subject_of


class Explanation(str):
    """Text that shows itself unquoted at the REPL (``program.explain()`` just works)."""

    def __repr__(self) -> str:
        return str(self)


def explain(target: Any, *, optimized: bool | None = None, rows: int | None = None,
            shapes: dict[str, tuple[int, ...]] | None = None, format: str = "text") -> Explanation:
    """Describe ``target`` (Program, node or nodes) as text.

    Parameters
    ----------
    optimized : bool, optional
        Describe the compiled graph (default for text) or the graph as built (default for
        LaTeX, whose equations then name the forward op of the user's code).
    format : {"text", "latex"}
        ``"latex"``: the schedules as numbered equations (:func:`graphbp.to_latex`).
    rows : int, optional
        The batch size used to pick the peak step when shapes have unknown dims.
    shapes : dict of input name -> concrete shape, optional
        With a Program that has ``memory_plan``, report the planner's peak for these shapes.
    """
    if format == "latex":
        from .latex import to_latex

        return Explanation(to_latex(target, optimized=bool(optimized)))
    if format != "text":
        raise ValueError(f"explain: format must be 'text' or 'latex', got {format!r}")
    s = subject_of(target, optimized=optimized is not False)
    out: list[str] = []
    out.append(_header(s))
    for name, nodes in (("forward", s.forward), ("backward", s.backward)):
        out.append("")
        out.append(f"{name} schedule: {len(nodes)} ops")
        out.extend(_schedule_lines(s, nodes))
    out.extend(_body_lines(s))
    out.append("")
    out.extend(_summary(s, rows, shapes))
    return Explanation("\n".join(out) + "\n")


def _body_lines(s: Subject) -> list[str]:
    """Each body of a higher-order op (``op.subgraphs()``) as equations, under its step."""
    steps = {n: f"{side}{k}" for side, nodes in (("F", s.forward), ("B", s.backward)) for k, n in enumerate(nodes)}
    lines: list[str] = []
    for n, step in steps.items():
        bodies = n.op.subgraphs()
        names = [k for k, v in n.op.params().items() if isinstance(v, Subgraph)] if bodies else []
        for name, body in zip(names, bodies):
            lines += ["", f"{step} {n.op.name} · {name.replace('_', ' ')}:"]
            lines += ["  " + line for line in body.format().splitlines()]
        if isinstance(n.op, Scan):
            lines += _per_step(s, n)
    return lines


def _per_step(s: Subject, n: Node) -> list[str]:
    """A loop's schedule per step: ops run, bytes written into the stacked outputs, and of
    those the bytes saved for the backward pass (read by the backward schedule)."""
    op: Scan = n.op
    per_step = {}  # emitted stacked output position -> its type at one step
    first = op.n_carry
    for pos, (full, t) in enumerate(zip(op.emitted(), n.type.items)):
        if full >= first:
            per_step[pos] = TensorType(t.shape[1:], t.dtype)
    getters = [u for u in s.order if u.inputs and u.inputs[0] is n and isinstance(u.op, TupleGet)]
    base: dict[Node, Node] = {}  # a view -> the value it views (the pieces of a stacked merged gate)
    for v in s.order:
        if v.op.view and v.inputs and not isinstance(v.op, TupleGet):
            base[v] = base.get(v.inputs[0], v.inputs[0])
    read = {base.get(v, v) for v in s.saved_set}
    saved = {u.op.index for u in getters if u in read}
    ops = len(op.body.nodes()) - len(op.body.inputs)
    total = sum((bytes_poly(t) for t in per_step.values()), Poly())
    kept = sum((bytes_poly(t) for pos, t in per_step.items() if pos in saved), Poly())
    line = (f"  per step ({'reverse' if op.reverse else 'forward'}): {ops} body ops; stacked outputs "
            f"{len(per_step)} ({total}), of which saved for the backward pass {len(saved)} ({kept})")
    return [line]


def _header(s: Subject) -> str:
    p = s.program
    if p is not None:
        ins = ", ".join(getattr(i.op, "input_name", "?") for i in p.inputs)
        return f"Program ({ins}) -> {len(s.outputs)} outputs, {len(s.updates)} updates"
    return f"graph of {len(s.outputs)} output node(s)"


def _schedule_lines(s: Subject, nodes: list[Node]) -> list[str]:
    rows = []
    for n in nodes:
        detail = op_detail(n)
        fused = absorbed_ops(n)
        op = n.op.name + (f"({detail})" if detail and not fused else "")
        if fused:
            op += " [" + ", ".join(fused) + "]"
        args = ", ".join(_arg(s, i) for i in n.inputs)
        why = provenance_text(n, limit=3) if n.provenance else ""
        if n in s.update_of:
            why = f"update of {node_title(s.update_of[n])}"
        marks = []
        if n in s.saved_set:
            marks.append("saved")
        if n in s.output_index:
            marks.append(f"output {s.output_index[n]}")
        where = origin_text(n)
        scope = "/".join(n.scope)
        tail = "  ".join(x for x in (why, scope and f"[{scope}]", where, " ".join(marks) and f"<{' '.join(marks)}>") if x)
        rows.append((s.step[n], f"{op}({args})", short_type(n.type), str(bytes_poly(n.type)), tail))
    return _table(rows)


def _arg(s: Subject, n: Node) -> str:
    if n in s.step:
        return s.step[n]
    kind = leaf_kind(n)
    if kind == "constant" and n.type.size() == 1:
        from .classify import constant_text

        return constant_text(n)
    return node_title(n)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (empty)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    widths = [min(w, 48) for w in widths]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]


def _summary(s: Subject, rows: int | None, shapes: dict | None) -> list[str]:
    leaves = [n for n in s.order if leaf_kind(n) is not None]
    kinds = {k: [n for n in leaves if leaf_kind(n) == k] for k in ("input", "param", "constant")}
    pbytes = sum((bytes_poly(n.type) for n in kinds["param"]), Poly())
    grads = sum(1 for n in s.backward if n.provenance)
    fused = [n for n in s.order if absorbed_ops(n)]
    lines = ["summary"]
    lines.append(f"  nodes: {len(s.order)} ({len(s.forward)} forward ops, {len(s.backward)} backward ops of which "
                 f"{grads} from gradient rules, {len(kinds['input'])} inputs, {len(kinds['param'])} params, "
                 f"{len(kinds['constant'])} constants)")
    if fused:
        lines.append(f"  fused nodes: {len(fused)} absorbing {sum(len(absorbed_ops(n)) for n in fused)} ops")
    lines.append(f"  parameters: {pbytes}")
    lines.append(f"  FLOPs (estimate): forward {total_flops(s.forward).format('FLOP')}, "
                 f"backward {total_flops(s.backward).format('FLOP')}")
    live = liveness_peak(s.forward + s.backward, list(s.outputs) + [v for _, v in s.updates], rows)
    at = f" at {s.step[live.peak_node]} ({live.peak_node.op.name})" if live.peak_node is not None else ""
    lines.append(f"  peak live activations (liveness estimate, compared at {live.rows} rows): {live.peak}{at}")
    plan = _memory_plan(s, shapes)
    if plan is not None:
        lines.append(f"  memory plan for {plan.signature}: forward peak {plan.forward_peak} B, backward peak "
                     f"{plan.backward_peak} B, saved {plan.saved} B, buffers {plan.buffers} B")
    saved = sum((bytes_poly(n.type) for n in s.saved), Poly())
    lines.append(f"  saved activations: {len(s.saved)} tensors, {saved}")
    for n in s.saved:
        lines.append(f"    {s.step.get(n, '?'):>4}  {node_title(n):<18} {short_type(n.type):<14} {bytes_poly(n.type)}"
                     f"  read by {_saved_why(s, n)}")
    remat = getattr(s.program, "remat", None)
    if remat is not None and remat.recomputed:  # rematerialisation (runtime/remat.py)
        lines.append(f"  recomputed in backward (remat={remat.mode}): {len(remat.recomputed)} values, "
                     f"saved {remat.saved_before} -> {remat.saved_after} B at {remat.reference_rows} rows")
        for n in remat.recomputed:
            lines.append(f"    {s.step.get(n, '?'):>4}  {node_title(n):<18} {short_type(n.type):<14} copy of "
                         f"{s.step.get(n.provenance[0].forward, '?')}")
    lines.append("  (row = one unit of an unknown dim, usually the batch)")
    return lines


def _saved_why(s: Subject, n: Node, limit: int = 3) -> str:
    """Why ``n`` is saved: the backward steps reading its data and the rules that built them
    (their provenance: ``B4 vjp of tanh F3, input 0``). Shape-only reads do not count."""
    reasons = []
    for b in s.backward:
        skip = type(b.op).shape_only_inputs
        if not any(i is n for k, i in enumerate(b.inputs) if k not in skip):
            continue
        if b in s.update_of:
            why = f"update of {node_title(s.update_of[b])}"
        elif b.provenance:
            seen: list[str] = []
            for r in b.provenance:
                step = s.step.get(r.forward)
                what = f"to recompute {r.forward.op.name}" if r.rule == "remat" else r.describe()
                text = what + (f" [{step}]" if step else "")
                if text not in seen:
                    seen.append(text)
            why = "; ".join(seen[:2]) + (f" (+{len(seen) - 2} more)" if len(seen) > 2 else "")
        else:
            why = f"{b.op.name} of gradients"
        reasons.append(f"{s.step.get(b, '?')} ({why})")
    if not reasons:
        return "nothing in the backward schedule"
    return ", ".join(reasons[:limit]) + (f", +{len(reasons) - limit} more" if len(reasons) > limit else "")


def _memory_plan(s: Subject, shapes: dict | None) -> Any:
    p = s.program
    if p is None or shapes is None or not hasattr(p, "memory_plan"):
        return None
    ordered = [tuple(shapes[i.op.input_name]) for i in p.inputs]
    return p.memory_plan(*ordered)
