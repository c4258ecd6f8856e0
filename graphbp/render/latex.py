"""``gb.to_latex(target)`` and ``program.explain(format="latex")``: the schedules as equations.

One numbered equation per scheduled node, tagged with its step (``F3``, ``B7``) so the
equations line up with ``explain()`` and the diagrams, in the notation of a backprop
course: the cotangent of a value ``h_1`` is ``\\bar{h}_1``, a matrix product is a
juxtaposition, ``\\odot`` is the elementwise product, and each backward equation names the
chain-rule rule and the forward node it comes from::

    \\bar{h}_{1} &= \\bar{z}_{2} W_{2}^\\top && \\text{vjp of matmul (F2), input 0}

Symbols: user names where they exist (``W1`` -> ``W_{1}``), else a letter by what the op
does (``z`` affine, ``h`` activation, ``v`` anything else) numbered in forward order.
Backward temporaries of one rule are ``\\tau_{k}``; a value with several gradient
contributions gets ``\\bar{u}^{(1)}, \\bar{u}^{(2)}`` and then their sum ``\\bar{u}``.
A pure transpose of a leaf used once is inlined as ``W^\\top`` (its step is skipped).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..graph.node import Node
from .. import ops as _o
from .classify import constant_text, is_leaf_node, leaf_kind, provenance_text
from .subject import Subject, short_type, subject_of


@dataclass(frozen=True)
class Symbol:
    """A math symbol ``base_{sub}``; ``bar`` draws the cotangent, ``sup`` a contribution."""

    base: str
    sub: str = ""

    def tex(self, bar: bool = False, sup: str = "") -> str:
        base = f"\\bar{{{self.base}}}" if bar else self.base
        sub = f"_{{{self.sub}}}" if self.sub else ""
        return base + sub + (f"^{{({sup})}}" if sup else "")


_NAME = re.compile(r"^([A-Za-z])_?(\d+)$")
_WORD = re.compile(r"^([A-Za-z])_([A-Za-z0-9]+)$")


def name_symbol(name: str) -> Symbol:
    """``W1`` -> ``W_{1}``; ``x`` -> ``x``; ``W_out`` -> ``W_{\\mathrm{out}}``; longer names upright."""
    m = _NAME.match(name)
    if m:
        return Symbol(m.group(1), m.group(2))
    if len(name) == 1 and name.isalpha():
        return Symbol(name)
    m = _WORD.match(name)
    if m:
        return Symbol(m.group(1), f"\\mathrm{{{_escape(m.group(2))}}}")
    return Symbol(f"\\mathrm{{{_escape(name)}}}")


def _escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "_&%$#{}":
            out.append("\\" + ch)
        elif ch == "\\":
            out.append("\\backslash ")
        elif ch in "~^":
            out.append(f"\\{ch}{{}}")
        else:
            out.append(ch)
    return "".join(out)


def _text(text: str) -> str:
    return f"\\text{{{_escape(text)}}}"


# -- expressions, keyed by op class ----------------------------------------------------------
Template = Callable[[list[str], Node], str]


def _fn(name: str) -> Template:
    return lambda a, n: f"{name}\\left({', '.join(a)}\\right)"


def _axis(n: Node) -> str:
    axis = getattr(n.op, "axis", None)
    if axis is None:
        return ""
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    return "_{" + ",".join(str(a) for a in axes) + "}"


def _mul(a: list[str], n: Node) -> str:
    scalar = any(i.type.size() == 1 for i in n.inputs)
    return f"{a[0]} {a[1]}" if scalar else f"{a[0]} \\odot {a[1]}"


TEMPLATES: dict[type, Template] = {
    _o.Add: lambda a, n: f"{a[0]} + {a[1]}",
    _o.Subtract: lambda a, n: f"{a[0]} - {a[1]}",
    _o.Multiply: _mul,
    _o.Divide: lambda a, n: f"\\frac{{{a[0]}}}{{{a[1]}}}",
    _o.Negative: lambda a, n: f"-{a[0]}",
    _o.Exp: _fn("\\exp"),
    _o.Log: _fn("\\log"),
    _o.Sqrt: lambda a, n: f"\\sqrt{{{a[0]}}}",
    _o.Square: lambda a, n: f"\\left({a[0]}\\right)^{{2}}",
    _o.Reciprocal: lambda a, n: f"\\frac{{1}}{{{a[0]}}}",
    _o.Greater: lambda a, n: f"\\mathbb{{1}}[{a[0]} > {a[1]}]",
    _o.GreaterEqual: lambda a, n: f"\\mathbb{{1}}[{a[0]} \\ge {a[1]}]",
    _o.Less: lambda a, n: f"\\mathbb{{1}}[{a[0]} < {a[1]}]",
    _o.LessEqual: lambda a, n: f"\\mathbb{{1}}[{a[0]} \\le {a[1]}]",
    _o.Maximum: _fn("\\max"),
    _o.Minimum: _fn("\\min"),
    _o.MatMul: lambda a, n: f"{a[0]} {a[1]}",
    _o.Transpose: lambda a, n: f"{a[0]}^\\top",
    _o.Sum: lambda a, n: f"\\sum{_axis(n)} {a[0]}",
    _o.Mean: lambda a, n: f"\\operatorname{{mean}}{_axis(n)} {a[0]}",
    _o.Tanh: _fn("\\tanh"),
    _o.Sigmoid: _fn("\\sigma"),
    _o.Relu: _fn("\\operatorname{relu}"),
    _o.Where: lambda a, n: f"\\begin{{cases}} {a[1]} & {a[0]} \\\\ {a[2]} & \\text{{otherwise}} \\end{{cases}}",
    _o.Power: lambda a, n: f"\\left({a[0]}\\right)^{{{a[1]}}}",
}

ACTIVATIONS = (_o.Relu, _o.Tanh, _o.Sigmoid, _o.Elu, _o.LeakyRelu, _o.Softplus)
AFFINE = (_o.MatMul, _o.Add, _o.Subtract)


def expression(node: Node, args: list[str]) -> str:
    template = TEMPLATES.get(type(node.op))
    if template is not None and len(args) >= 1:
        try:
            return template(args, node)
        except IndexError:
            pass
    return f"\\operatorname{{{_escape(node.op.name)}}}\\left({', '.join(args)}\\right)"


# -- naming ------------------------------------------------------------------------------------
class Namer:
    """Symbols for every node of a subject, assigned once in topological order."""

    def __init__(self, s: Subject):
        self.s = s
        self.sym: dict[Node, str] = {}
        self.inline: set[Node] = set()
        counts: dict[str, int] = {}
        fwd_sym: dict[Node, Symbol] = {}
        for n in s.order:
            if n.provenance or n in s.backward_set:
                continue
            if n.name:
                fwd_sym[n] = name_symbol(n.name)
            elif is_leaf_node(n):
                if leaf_kind(n) == "constant" and n.type.size() == 1:
                    continue
                label = getattr(n.op, "input_name", None) or getattr(n.op, "param_name", None)
                fwd_sym[n] = name_symbol(label) if label else Symbol("c", str(len(fwd_sym)))
            else:
                letter = "h" if isinstance(n.op, ACTIVATIONS) else "z" if isinstance(n.op, AFFINE) else "v"
                counts[letter] = counts.get(letter, 0) + 1
                fwd_sym[n] = Symbol(letter, str(counts[letter]))
        if len(s.outputs) >= 1 and s.outputs[0] in fwd_sym and s.outputs[0].type.size() == 1 and not s.outputs[0].name:
            fwd_sym[s.outputs[0]] = Symbol("L")
        self.fwd = fwd_sym
        for n, sym in fwd_sym.items():
            self.sym[n] = sym.tex()
        self._name_gradients()

    def _name_gradients(self) -> None:
        s = self.s
        grads = [n for n in s.order if n.provenance]
        users: dict[Node, list[Node]] = {}
        for n in s.order:
            for i in n.inputs:
                users.setdefault(i, []).append(n)

        def group(n: Node) -> tuple:
            r = n.provenance[0]
            if r.rule in ("vjp", "unbroadcast"):
                return (r.forward, "contrib", r.input_index)
            return (r.forward, r.rule, None)

        sinks: dict[Node, list[Node]] = {}  # forward value -> its gradient contributions
        totals: dict[Node, Node] = {}
        for n in grads:
            g = group(n)
            if any(u.provenance and group(u) == g for u in users.get(n, [])):
                continue  # an intermediate of its rule
            fwd, kind, i = g
            if kind == "contrib" and i is not None and i < len(fwd.inputs):
                sinks.setdefault(fwd.inputs[i], []).append(n)
            elif kind in ("accumulate", "seed", "zeros"):
                totals[fwd] = n
        for value, parts in sinks.items():
            base = self.fwd.get(value)
            if base is None:
                continue
            if len(parts) == 1 and value not in totals:
                self.sym[parts[0]] = base.tex(bar=True)
            else:
                for k, p in enumerate(parts, 1):
                    self.sym[p] = base.tex(bar=True, sup=str(k))
        for value, n in totals.items():
            base = self.fwd.get(value)
            if base is not None:
                self.sym[n] = base.tex(bar=True)
        temp = 0
        for n in s.order:
            if n in self.sym or is_leaf_node(n):
                continue
            if n.provenance or n in s.backward_set:
                if (isinstance(n.op, _o.Transpose) and len(users.get(n, [])) == 1 and n.inputs
                        and is_leaf_node(n.inputs[0])):
                    self.inline.add(n)
                    continue
                temp += 1
                self.sym[n] = Symbol("\\tau", str(temp)).tex()

    def ref(self, n: Node) -> str:
        if n in self.inline:
            return expression(n, [self.ref(i) for i in n.inputs])
        if n in self.sym:
            return self.sym[n]
        if leaf_kind(n) == "constant":
            return constant_text(n) if n.type.size() == 1 else "c"
        return f"\\mathrm{{{_escape(n.op.name)}}}"


def _equation(nm: Namer, s: Subject, n: Node, shapes: bool) -> str:
    rhs = expression(n, [nm.ref(i) for i in n.inputs])
    if is_leaf_node(n):
        rhs = constant_text(n) if n.type.size() == 1 else _text(str(n.type))
    note = ""
    if n.provenance:
        r = n.provenance[0]
        step = s.step.get(r.forward, "leaf" if is_leaf_node(r.forward) else "")
        note = _text(f"{provenance_text(n, limit=2)}" + (f" ({step})" if step else ""))
    elif n in s.update_of:
        note = _text(f"update of {s.update_of[n].name or 'parameter'}")
    if shapes:
        shape_note = f"\\in {_text(short_type(n.type))}"
        note = f"{shape_note} \\quad {note}" if note else shape_note
    line = f"{nm.ref(n)} &= {rhs}"
    if note:
        line += f" && {note}"
    return line + f" \\tag{{{s.step.get(n, 'seed' if n.provenance else '')}}}"


def to_latex(target: Any, *, optimized: bool = False, shapes: bool = False, document: bool = False) -> str:
    """The forward and backward schedules of ``target`` as LaTeX ``align`` environments.

    Parameters
    ----------
    optimized : bool, default False
        False: the graph as built, so every gradient equation names the forward op of the
        user's code. True: the compiled schedules (fused ops appear under their own name).
    shapes : bool
        Add each value's type (``\\in f32[?,128]``) beside its equation.
    document : bool
        Wrap in a minimal ``article`` (``amsmath``, ``amssymb``) that ``pdflatex`` compiles.
    """
    s = subject_of(target, optimized=optimized)
    nm = Namer(s)
    parts = ["% graphbp: forward and backward schedules, one equation per scheduled node (tag = step)"]
    for title, nodes in (("Forward", s.forward), ("Backward", s.backward)):
        if title == "Backward":  # seeds are constants, not scheduled: state them first
            nodes = [n for n in s.order if is_leaf_node(n) and n.provenance and n in nm.sym] + list(nodes)
        rows = [_equation(nm, s, n, shapes) for n in nodes if n not in nm.inline]
        parts.append(f"\\paragraph{{{title} schedule ({len(nodes)} ops)}}")
        if rows:
            parts.append("\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}")
        else:
            parts.append("(empty)")
    body = "\n".join(parts) + "\n"
    if not document:
        return body
    return ("\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n"
            "\\begin{document}\n" + body + "\\end{document}\n")
