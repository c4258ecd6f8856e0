"""Call records: what a lowering says to run, as data.

A lowering (:mod:`.lowering`) describes the NumPy calls of one node over *slots*, the
node's operands (:class:`Operand`), its scratch buffers (:class:`Temp`) and its output
(``OUT``), plus literals, global names and method, attribute and index expressions over
them. Code generation names the slots when it writes the line (:func:`render`); cache
blocking names them differently (block slices, scratch blocks); a lowering that composes
another one maps slots to slots (:func:`substitute`). Nothing edits generated text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Union

SlotNamer = Callable[[Any], str]
"""Names a slot (an :class:`Operand`, :class:`Temp` or ``OUT``) in the line being written."""


@dataclasses.dataclass(frozen=True)
class Operand:
    """The node's operand ``index``."""

    index: int

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        return slot(self)


@dataclasses.dataclass(frozen=True)
class Temp:
    """The lowering's scratch buffer ``index`` (of type ``Lowered.temps[index]``)."""

    index: int

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        return slot(self)


@dataclasses.dataclass(frozen=True)
class Out:
    """The output buffer."""

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        return slot(self)


OUT = Out()
Slot = Union[Operand, Temp, Out]


@dataclasses.dataclass(frozen=True)
class Lit:
    """A Python literal written with ``repr`` (``slice(None)`` as ``:``)."""

    value: Any

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        v = self.value
        if isinstance(v, slice):
            return ":".join("" if x is None else repr(x) for x in (v.start, v.stop)) + (
                "" if v.step is None else f":{v.step!r}")
        return repr(v)


@dataclasses.dataclass(frozen=True)
class Name:
    """A global of the generated module (a dtype, a NumPy function, a plan-time array)."""

    name: str

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        return self.name


@dataclasses.dataclass(frozen=True)
class Method:
    """``base.method(*args)``."""

    base: Arg
    method: str
    args: tuple[Arg, ...] = ()

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        args = ", ".join([a.render(slot, kernel) for a in self.args])
        return f"{self.base.render(slot, kernel)}.{self.method}({args})"


@dataclasses.dataclass(frozen=True)
class Attr:
    """``base.attr``."""

    base: Arg
    attr: str

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        return f"{self.base.render(slot, kernel)}.{self.attr}"


@dataclasses.dataclass(frozen=True)
class Index:
    """``base[i, j, ...]``."""

    base: Arg
    index: tuple[Arg, ...]

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        return f"{self.base.render(slot, kernel)}[{', '.join([a.render(slot, kernel) for a in self.index])}]"


Arg = Union[Operand, Temp, Out, Lit, Name, Method, Attr, Index]


@dataclasses.dataclass(frozen=True)
class Call:
    """``fn(*args, **kwargs)``; ``fn=None`` is the node's own kernel (``op.compute``)."""

    fn: str | None
    args: tuple[Arg, ...]
    kwargs: tuple[tuple[str, Arg], ...] = ()

    def render(self, slot: SlotNamer, kernel: str = "") -> str:
        parts = [a.render(slot, kernel) for a in self.args]
        if self.kwargs:
            parts += [f"{k}={a.render(slot, kernel)}" for k, a in self.kwargs]
        return f"{kernel if self.fn is None else self.fn}({', '.join(parts)})"


def call(fn: str | None, *args: Arg, **kwargs: Arg) -> Call:
    return Call(fn, tuple(args), tuple(kwargs.items()))


def render(arg: Arg | Call, slot: SlotNamer, kernel: str = "") -> str:
    """Python source of ``arg``, with ``slot`` naming operands, temps and the output
    (each record renders itself: code generation renders every line of a long schedule)."""
    if not hasattr(arg, "render"):
        raise TypeError(f"not a call-record argument: {arg!r}")
    return arg.render(slot, kernel)


def _template_slot(s: Slot) -> str:
    if isinstance(s, Operand):
        return f"\0{s.index}\1"
    if isinstance(s, Temp):
        return f"\0o\1_t{s.index}"
    return "\0o\1"


def template(render: Callable[[SlotNamer, str], str]) -> str:
    """The source ``render(slot, kernel)`` writes, as a :meth:`str.format` template: operand
    ``k`` is ``{k}``, the output ``{o}``, scratch buffer ``j`` ``{o}_t{j}`` (the names code
    generation gives them) and the node's own kernel ``{kernel}``. Records are shared by the
    steps lowered alike, so a long schedule renders a few templates and formats one per step."""
    text = render(_template_slot, "\0kernel\1")  # repr escapes NUL: no literal holds one
    return text.replace("{", "{{").replace("}", "}}").replace("\0", "{").replace("\1", "}")


def substitute(arg: Any, mapping: Mapping[Slot, Arg]) -> Any:
    """``arg`` (or a :class:`Call`) with slots replaced per ``mapping`` (to compose lowerings)."""
    if isinstance(arg, (Operand, Temp, Out)):
        return mapping.get(arg, arg)
    if isinstance(arg, Call):
        return Call(arg.fn, tuple(substitute(a, mapping) for a in arg.args),
                    tuple((k, substitute(a, mapping)) for k, a in arg.kwargs))
    if isinstance(arg, Method):
        return Method(substitute(arg.base, mapping), arg.method, tuple(substitute(a, mapping) for a in arg.args))
    if isinstance(arg, Attr):
        return Attr(substitute(arg.base, mapping), arg.attr)
    if isinstance(arg, Index):
        return Index(substitute(arg.base, mapping), tuple(substitute(a, mapping) for a in arg.index))
    return arg
