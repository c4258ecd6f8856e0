"""Generated Python for a planned program: one straight-line function per schedule.

The source is readable on purpose (``program.source()``): each line is one NumPy call
followed by a comment naming the node, its type and the user's line that built it. Values
are named ``v<k>`` (``k`` = position in the program's topological order); inputs and
parameters keep their names. Planned buffers, parameters, constants and views of them are
module globals bound once per shape signature; per-call values (fallback results, views of
feeds, outputs) are locals released with ``del`` after their last use. The source is
registered in :mod:`linecache`, so a traceback through a program shows the generated line.
"""

from __future__ import annotations

import builtins
import itertools
import keyword
import linecache
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


from ..errors import GraphError
from ..graph.node import Node
from ..ops.leaves import Constant, Input, Param
from .lowering import KERNEL_GLOBALS, Operand, Slot, Temp, stand_in
from .numerics import guarded_nodes
from .blocking import Merge, emit_region, find_regions, plan_merge
from .loopgen import LoopLayout, loop_source
from .plan import Planned, Step, materialize

_counter = itertools.count(1)


class _Line(str):
    """A generated line that computes ``node`` from operands named ``args``: the executor
    maps a traceback's line back to the node without reading the source text."""

    node: Node
    args: tuple[str, ...]


def _tagged(text: str, node: Node, args: Sequence[str]) -> _Line:
    line = _Line(text)
    line.node, line.args = node, tuple(args)
    return line


def slot_names(operands: Sequence[str], out: str, temps: Sequence[str]) -> Callable[[Slot], str]:
    """The slot naming of one step: operand ``k`` -> ``operands[k]``, and so on."""

    def slot(s: Slot) -> str:
        if isinstance(s, Operand):
            return operands[s.index]
        if isinstance(s, Temp):
            return temps[s.index]
        return out

    return slot


def _ident(text: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", text) or "x"
    if base[0].isdigit():
        base = "_" + base
    name = base
    k = 1
    while name in taken or keyword.iskeyword(name) or hasattr(builtins, name):
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


class Generated:
    """The compiled module of one shape signature: ``step(*feeds) -> list of arrays``, or
    with ``into`` a layout, ``loop(steps, *args)`` (kept as ``step`` too)."""

    def __init__(self, source: str, filename: str, namespace: dict[str, Any],
                 line_nodes: dict[int, tuple[Node, tuple[str, ...]]], entry: str = "step") -> None:
        self.source = source
        self.filename = filename
        self.namespace = namespace
        self.step: Callable[..., Any] = namespace[entry]
        #: line number -> (node the line computes, names of its operands)
        self.line_nodes = line_nodes


def generate(
    plan: Planned,
    order: Sequence[Node],
    inputs: Sequence[Node],
    outputs: Sequence[Node],
    updates: Sequence[tuple[Node, Node]],
    *,
    check: Callable[[int, Any], None] | None = None,
    title: str = "",
    into: LoopLayout | None = None,
) -> Generated:
    """Write, compile and bind the code of ``plan``.

    With ``into`` the module's ``loop(steps, *args)`` runs the program once per step with
    its feeds and one preallocated buffer per output taken from ``args`` as the layout says
    (:mod:`.loopgen`), and writes the outputs there instead of returning fresh arrays (a
    scan's body writes its per-step results straight into the stacked ``(T, ...)``
    buffers): a fresh output is computed into its buffer, any other output (a view, a feed,
    a fallback result, a duplicate) is copied into it. The buffers must not overlap the
    feeds; two outputs of one value may share one buffer object (a scan's carry that is
    also a ys)."""
    index = {n: k for k, n in enumerate(order)}
    taken = set(KERNEL_GLOBALS) | {"step", "forward", "backward", "check", "NODES", "errstate"}
    names: dict[Node, str] = {}
    for i in inputs:
        names[i] = _ident(i.op.input_name, taken)
    leaves = [n for n in order if not n.inputs]
    for n in leaves:
        if isinstance(n.op, Param):
            names[n] = _ident(n.op.param_name, taken)
        elif isinstance(n.op, Constant):
            names[n] = _ident(f"c{index[n]}", taken)
        elif n not in names:
            names[n] = _ident(f"unfed_{index[n]}", taken)
    for st in plan.steps:
        names[st.node] = f"v{index[st.node]}"
        taken.add(names[st.node])
    for v, p in plan.deferred_param.items():
        names[v] = names[p]

    ns: dict[str, Any] = dict(KERNEL_GLOBALS)
    ns.update(materialize(plan, names))
    for n in leaves:
        if isinstance(n.op, (Param, Constant)):
            ns[names[n]] = n.op.value
    for st in plan.steps:
        ns.update(st.low.names)
    if check is not None:
        ns["check"] = check
    # values a where discards (sqrt'(0), log of the untaken branch) compute without warnings
    masked = guarded_nodes(order, list(outputs) + [v for _, v in updates])
    ns["errstate"] = np.errstate
    slot_of: dict[Node, str] = {}  # into: a fresh output -> the parameter of its buffer
    out_params = [_ident(f"out{k}", taken) for k in range(len(outputs))] if into is not None else []
    for o, p in zip(outputs, out_params):
        if o in plan.fresh_outputs:
            slot_of.setdefault(o, p)
    slotted: set[Node] = set()
    parts = _concat_parts(plan, slot_of, names, outputs) if into is not None else {}
    filled = {c for c, _ in parts.values()}
    quiet = '    with errstate(divide="ignore", invalid="ignore", over="ignore"): '

    def overwrites_operand(st: Step) -> bool:
        """The step writes into a buffer an operand lives in (its range must be read first)."""
        n = st.node
        if st.low.kind != "out":
            return False
        if st.deferred:
            return True
        b = plan.buffer_of.get(n)
        return b is not None and any(plan.buffer_of.get(r) == b for i in n.inputs for r in plan.holds.get(i, (i,)))

    def is_local(v: Node) -> bool:
        return isinstance(v.op, Input) or not plan.static.get(v, False)

    # str() of each type and origin object, once (dtype.name is slow); keyed by id: the plan
    # and the nodes keep them alive, and nodes of one shape share one type object
    type_text: dict[int, str] = {}
    origin_text: dict[int, str] = {}
    types = plan.types

    def comment(n: Node, what: str) -> str:
        o = n.origin
        where = origin_text.get(id(o))
        if where is None:
            where = origin_text[id(o)] = f"  {o}" if o else ""
        label = n.name if n.name and n.name != names[n] else ""
        t = types[n]
        tt = type_text.get(id(t))
        if tt is None:
            tt = type_text[id(t)] = str(t)
        return f"  # {what}: {tt}{' ' + label if label else ''}{where}"

    def kernel(st: Step) -> str:
        """The global name of the step's own kernel (``op.compute``), bound when a call uses it."""
        n = st.node
        if not st.low.own_kernel:
            return ""
        kname = f"{n.op.name}_{index[n]}"
        ns[kname] = n.op.compute
        return kname

    standins: dict[Node, str] = {}

    def operands(n: Node) -> list[str]:
        """Operand names of ``n``; a shape-only operand is a stand-in of its planned type (its
        data is never read, so it need not be alive: see :mod:`.liveness`)."""
        skip = type(n.op).shape_only_inputs
        if not skip:
            return [names[i] for i in n.inputs]
        out = []
        for k, i in enumerate(n.inputs):
            if k in skip:
                nm = standins.get(i)
                if nm is None:
                    nm = standins[i] = _ident(f"shape_of_{names[i]}", taken)
                    ns[nm] = stand_in(plan.types[i])
                out.append(nm)
            else:
                out.append(names[i])
        return out

    def out_stmt(st: Step, args: list[str], me: str, temp_names: list[str]) -> str:
        return st.low.statement(slot_names(args, me, temp_names), kernel(st))

    def annotate(st: Step, text: str) -> _Line:
        n = st.node
        args = [names[i] for i in n.inputs]
        return _tagged(text + comment(n, f"v{index[n]} = {n.op.name}({', '.join(args)})"), n, args)

    def region_dels(items) -> list[str]:
        """``del`` of the per-call values whose last reader is one of the region's steps."""
        positions = {p for p, _ in items}
        done = {n: None for _, st in items for n in (st.node, *st.node.inputs)}
        gone = [names[v] for v in done if plan.last.get(v, -1) in positions
                and is_local(v) and v.inputs and v not in plan.fresh_outputs]
        return [f"    del {', '.join(gone)}"] if gone else []

    static = plan.static
    dying: dict[int, set[Node]] = {}  # step -> the per-call values read for the last time there
    for v, s in plan.last.items():
        if not static.get(v, False):
            dying.setdefault(s, set()).add(v)

    def body(steps, first: int) -> list[str]:
        lines = []
        regions = {} if check is not None or parts else {a: b for a, b in find_regions(steps, plan, first)}
        skip_to = 0
        for s, st in enumerate(steps, start=first):
            k = s - first
            if k < skip_to:
                continue
            if k in regions:
                stop = regions[k]
                lines += emit_region(list(enumerate(steps[k:stop], start=s)), plan, names, index, ns, operands,
                                     out_stmt, annotate)
                skip_to = stop
                lines += region_dels(list(enumerate(steps[k:stop], start=s)))
                continue
            n, low = st.node, st.low
            ins = [names[i] for i in n.inputs]
            args = operands(n) if type(n.op).shape_only_inputs else ins
            me = names[n]
            desc = f"v{index[n]} = {n.op.name}({', '.join(ins)})"
            kind = low.kind
            checked = check is not None and kind in ("out", "call")
            pre = checked and overwrites_operand(st)
            if pre:
                lines.append(f"    r{index[n]} = check.ranges(({''.join(a + ', ' for a in args)}))")
            lead = quiet if n in masked else "    "
            if n in filled:  # its operands were computed into their places in it
                lines.append(_tagged(f"    {me} = {slot_of[n]}" + comment(n, desc + " (its operands wrote into it)"),
                                     n, args))
                slotted.add(n)
            elif kind == "out":
                stmt = low.template.format(*args, o=me, kernel=kernel(st))
                if n in parts:
                    stmt = f"{me} = {parts[n][1]}; {stmt}"
                elif n in slot_of:
                    stmt = f"{me} = {slot_of[n]}; {stmt}"
                    slotted.add(n)
                elif n in plan.fresh_outputs:
                    t = plan.types[n]
                    ns.setdefault(t.dtype.name, t.dtype.type)
                    stmt = f"{me} = empty({t.shape!r}, {t.dtype.name}); {stmt}"
                text = f"{lead}{stmt}" + comment(n, desc + (f" into {me} in place" if st.deferred else ""))
                lines.append(_tagged(text, n, args))
            elif kind == "call":
                stmt = low.template.format(*args, o=me, kernel=kernel(st))
                lines.append(_tagged(f"{lead}{me} = {stmt}" + comment(n, desc), n, args))
            elif kind == "view":
                stmt = low.template.format(*args, o=me)
                if static[n]:
                    lines.append(f"    # {me} = {stmt} (a view bound at plan time)" + comment(n, n.op.name)[3:])
                else:
                    lines.append(_tagged(f"    {me} = {stmt}" + comment(n, desc), n, args))
            else:
                lines.append(f"    # {me} = {n.op.name}(...) computed at plan time" + comment(n, "const")[3:])
            if checked:
                lines.append(f"    check({index[n]}, {me}, ({''.join(a + ', ' for a in args)})"
                             + (f", r{index[n]})" if pre else ")"))
            dies = dying.get(s)
            if dies:
                gone = [nm for i, nm in zip(n.inputs, ins) if i in dies and i.inputs]
                if n in dies:
                    gone.append(me)
                if gone:
                    lines.append(f"    del {', '.join(dict.fromkeys(gone))}")
        return lines

    def fused_step(m: Merge, fwd: list, plain: list) -> list[str]:
        nf = plan.n_forward
        items = list(enumerate(fwd[m.head:m.fwd_stop], start=m.head))
        items += list(enumerate(plain[m.bwd_start:m.bwd_stop], start=nf + m.bwd_start))
        lines = [f"    # forward then backward, as forward() and backward() above, except that the blocked steps"
                 f" v{index[fwd[m.head].node]}.. and v{index[plain[m.bwd_start].node]}.. run as one loop"
                 " (what the backward reads of them stays in cache); the small steps between move around it"]
        lines += body(fwd[:m.head], 0)
        for p in m.hoisted:
            lines += body([plan.steps[p]], p)
        lines += emit_region(items, plan, names, index, ns, operands, out_stmt, annotate, keep=m.keep,
                             tag=f"m{index[fwd[m.head].node]}", merged=True)
        lines += region_dels(items)
        for p in m.sunk:
            lines += body([plan.steps[p]], p)
        return lines + body(plain[m.bwd_stop:], nf + m.bwd_stop)

    feeds = [names[i] for i in inputs]
    fwd = plan.steps[: plan.n_forward]
    bwd = plan.steps[plan.n_forward:]
    if into is not None:
        fixed = {i for i, (a, d) in zip(inputs, into.feeds) if d is None and not any(a in s for s in into.swaps)}
        hoisted = _invariant_views(plan, fixed)
        lines = _output_copies(plan, outputs, updates, names, out_params, slot_of, slotted,
                               body(fwd, 0) + body(bwd, plan.n_forward), into)
        params = [*inputs, *outputs]
        src = [f"# graphbp program{': ' + title if title else ''}, looped: its outputs written into the buffers "
               + ", ".join(out_params),
               "# v<k> is node k of the program's topological order; a NumPy call's last positional",
               "# argument is its preallocated output buffer.", "",
               *loop_source(into, feeds, out_params, lambda k: plan.types[params[k]].shape == (), lines, hoisted,
                            lambda text: _ident(text, taken))]
        source, filename, line_nodes = _register(src)
        exec(compile(source, filename, "exec"), ns)
        return Generated(source, filename, ns, line_nodes, entry="loop")
    fwd_nodes = [st.node for st in fwd]
    handoff = [n for n in fwd_nodes if is_local(n) and plan.last.get(n, -1) >= plan.n_forward]
    hand = [names[n] for n in handoff]
    sig = ", ".join(feeds)
    src = [
        f"# graphbp program{': ' + title if title else ''}",
        "# v<k> is node k of the program's topological order; a NumPy call's last positional",
        "# argument is its preallocated output buffer.",
        "",
        f"def forward({sig}):",
        *(body(fwd, 0) or ["    pass"]),
        f"    return ({', '.join(hand)}{',' if len(hand) == 1 else ''})",
        "",
        f"def backward({', '.join(feeds + hand)}):",
    ]
    n_plain = len(bwd)
    while n_plain and bwd[n_plain - 1].deferred:
        n_plain -= 1
    plain = bwd[:n_plain]  # updates placed early (plan.place_updates) run inline; the rest after the outputs
    src += body(plain, plan.n_forward)
    tail: list[str] = []  # outputs, then the parameter updates: shared by backward and a fused step
    result = []
    seen: set[Node] = set()
    for o in outputs:
        if o in plan.fresh_outputs and o not in seen:
            result.append(names[o])
        else:
            result.append(f"array({names[o]})")  # copies: views, parameters, duplicates
        seen.add(o)
    tail.append(f"    result = [{', '.join(result)}]")
    updated = {p for p, _ in updates}
    commits, snaps = [], []
    for p, v in updates:
        if v in plan.deferred_param:
            continue
        vn = names[v]
        if plan.holds.get(v, frozenset((v,))) & updated:
            snaps.append(f"    new_{names[p]} = array({vn})  # reads a parameter updated below")
            vn = f"new_{names[p]}"
        commits.append(f"    copyto({names[p]}, {vn}, 'same_kind')  # update {p.op.param_name}")
    if commits or n_plain < len(bwd):
        tail.append("    # parameter updates: everything above has been computed")
    tail += snaps
    tail += body(bwd[n_plain:], plan.n_forward + n_plain)
    tail += commits
    tail.append("    return result")
    src += tail
    src += ["", f"def step({sig}):"]
    merge = None
    opts = plan.options
    if check is None and len(plan.steps) <= opts.huge_steps:
        merge = plan_merge(fwd, plain, plan, lambda v: is_local(v) and bool(v.inputs))
    if merge is None:
        src.append(f"    {', '.join(hand)}{',' if len(hand) == 1 else ''} = forward({sig})" if hand
                   else f"    forward({sig})")
        src.append(f"    return backward({', '.join(feeds + hand)})")
    else:
        src += fused_step(merge, fwd, plain)
        src += tail
    huge = len(plan.steps) > opts.huge_steps
    source, filename, line_nodes = _register(src, line_map=not huge)
    if not huge:
        exec(compile(source, filename, "exec"), ns)
        return Generated(source, filename, ns, line_nodes)
    # CPython compiles one huge function slowly and with a lot of memory: run the same
    # statements as module-level chunks over the namespace instead (values become globals).
    start = src.index(f"def backward({', '.join(feeds + hand)}):")
    flat = [ln[4:] for ln in src[5:start] if ln.startswith("    ") and not ln.startswith("    return")]
    flat += [ln[4:] for ln in src[start + 1:] if ln.startswith("    ") and not ln.startswith("    return")
             and " = forward(" not in ln]
    chunks, cur = [], []
    for ln in flat:
        if len(cur) >= opts.chunk_lines and not ln.startswith(" "):
            chunks.append(cur)
            cur = []
        cur.append(ln)
    chunks.append(cur)
    codes = []
    for k, chunk in enumerate(chunks):
        text = "\n".join(chunk) + "\n"
        name = f"{filename[:-1]} part {k}>"
        linecache.cache[name] = (len(text), None, text.splitlines(keepends=True), name)
        codes.append(compile(text, name, "exec"))
    feed_names = list(feeds)

    def step(*values):
        ns.update(zip(feed_names, values))
        for code in codes:
            exec(code, ns)
        return ns.pop("result")

    ns["step"] = step
    return Generated(source, filename, ns, {})  # chunks are separate code objects: no line map


def _concat_parts(plan: Planned, slot_of: dict[Node, str], names: dict[Node, str],
                  outputs: Sequence[Node]) -> dict[Node, tuple[Node, str]]:
    """For ``into`` code: operands of an output whose op lays them side by side
    (``op.operand_places``: concatenate) computed straight into their place in its buffer
    (``v = out2[:, 128:256]; multiply(a, b, v)``), as a hand-written LSTM step writes the
    four gate gradients into one array. The caller's buffer exists from the start and
    overlaps nothing, so writing it early is safe. Only when every operand is an elementwise
    result (its kernel writes any strided ``out``) read by that output alone. Returns
    operand -> (the output node, the view it is computed into)."""
    readers: dict[Node, int] = {}
    for st in plan.steps:
        for i in st.node.inputs:
            readers[i] = readers.get(i, 0) + 1
    made = {st.node: st for st in plan.steps}
    out: dict[Node, tuple[Node, str]] = {}
    for c, buf in slot_of.items():
        places = c.op.operand_places([plan.types[i] for i in c.inputs])
        if places is None or made[c].low.kind != "out" or len(set(c.inputs)) != len(c.inputs):
            continue
        ok = all(
            i in made and made[i].low.kind == "out" and not made[i].deferred and i.op.elementwise
            and readers.get(i) == 1 and i not in outputs and i not in plan.viewed
            and plan.types[i].dtype == plan.types[c].dtype for i in c.inputs)
        if not ok:
            continue
        for i, idx in zip(c.inputs, places):
            out[i] = (c, f"{buf}[{', '.join(_slice_text(s) for s in idx)}]")
    return out


def _slice_text(s: slice) -> str:
    """``a:b`` as it is written in an index (``:`` for the whole axis)."""
    return f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"


def _output_copies(plan: Planned, outputs: Sequence[Node], updates: Sequence[tuple[Node, Node]],
                   names: dict[Node, str], out_params: list[str], slot_of: dict[Node, str], slotted: set[Node],
                   lines: list[str], layout: LoopLayout) -> list[str]:
    """The lines of an ``into`` step: the body, then the outputs not computed into their
    buffer copied there (no forward/backward split: a loop body is run whole each step)."""
    if updates:
        raise GraphError("codegen: a program updating parameters has no output-buffer form")
    lines = list(lines)
    bind = dict(zip(out_params, layout.outs))
    for o, p in zip(outputs, out_params):
        if o in slotted and (slot_of[o] == p or bind[p] == bind[slot_of[o]]):  # written there, or the same buffer
            continue
        if o in slotted:  # a second output of a value: the caller may pass one buffer for both
            lines.append(f"    if {p} is not {slot_of[o]}: copyto({p}, {names[o]})  # output {plan.types[o]}")
        else:
            lines.append(f"    copyto({p}, {names[o]})  # output {plan.types[o]}")
    return lines


def _invariant_views(plan: Planned, fixed: set[Node]) -> set[Node]:
    """Views computed per call from ``fixed`` feeds (the same array every step of a loop) and
    static values only: a loop takes them once."""
    same = set(fixed)
    out = set()
    for st in plan.steps:
        n = st.node
        if st.low.kind == "view" and not plan.static.get(n, False) and all(
                i in same or plan.static.get(i, False) or isinstance(i.op, (Param, Constant))
                for i in n.inputs):
            same.add(n)
            out.add(n)
    return out


def _register(src: list[str], line_map: bool = True) -> tuple[str, str, dict[int, tuple[Node, tuple[str, ...]]]]:
    """A module's source under a fresh file name in ``linecache`` (so tracebacks show the
    generated line), and (with ``line_map``) its line -> (node, argument names) map."""
    source = "\n".join(src) + "\n"
    line_nodes = {k: (ln.node, ln.args) for k, ln in enumerate(src, start=1) if isinstance(ln, _Line)} if line_map else {}
    filename = f"<graphbp program {next(_counter)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return source, filename, line_nodes
