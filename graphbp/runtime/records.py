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


@dataclasses.dataclass(frozen=True)
class Operand:
    """The node's operand ``index``."""

    index: int


@dataclasses.dataclass(frozen=True)
class Temp:
    """The lowering's scratch buffer ``index`` (of type ``Lowered.temps[index]``)."""

    index: int


@dataclasses.dataclass(frozen=True)
class Out:
    """The output buffer."""


OUT = Out()
Slot = Union[Operand, Temp, Out]


@dataclasses.dataclass(frozen=True)
class Lit:
    """A Python literal written with ``repr`` (``slice(None)`` as ``:``)."""

    value: Any


@dataclasses.dataclass(frozen=True)
class Name:
    """A global of the generated module (a dtype, a NumPy function, a plan-time array)."""

    name: str


@dataclasses.dataclass(frozen=True)
class Method:
    """``base.method(*args)``."""

    base: Arg
    method: str
    args: tuple[Arg, ...] = ()


@dataclasses.dataclass(frozen=True)
class Attr:
    """``base.attr``."""

    base: Arg
    attr: str


@dataclasses.dataclass(frozen=True)
class Index:
    """``base[i, j, ...]``."""

    base: Arg
    index: tuple[Arg, ...]


Arg = Union[Operand, Temp, Out, Lit, Name, Method, Attr, Index]


@dataclasses.dataclass(frozen=True)
class Call:
    """``fn(*args, **kwargs)``; ``fn=None`` is the node's own kernel (``op.compute``)."""

    fn: str | None
    args: tuple[Arg, ...]
    kwargs: tuple[tuple[str, Arg], ...] = ()


def call(fn: str | None, *args: Arg, **kwargs: Arg) -> Call:
    return Call(fn, tuple(args), tuple(kwargs.items()))


def render(arg: Arg | Call, slot: Callable[[Slot], str], kernel: str = "") -> str:
    """Python source of ``arg``, with ``slot`` naming operands, temps and the output."""
    if isinstance(arg, (Operand, Temp, Out)):
        return slot(arg)
    if isinstance(arg, Call):
        parts = [render(a, slot, kernel) for a in arg.args]
        parts += [f"{k}={render(a, slot, kernel)}" for k, a in arg.kwargs]
        return f"{kernel if arg.fn is None else arg.fn}({', '.join(parts)})"
    if isinstance(arg, Lit):
        v = arg.value
        if isinstance(v, slice):
            return ":".join("" if x is None else repr(x) for x in (v.start, v.stop)) + (
                "" if v.step is None else f":{v.step!r}")
        return repr(v)
    if isinstance(arg, Name):
        return arg.name
    if isinstance(arg, Method):
        return f"{render(arg.base, slot, kernel)}.{arg.method}({', '.join(render(a, slot, kernel) for a in arg.args)})"
    if isinstance(arg, Attr):
        return f"{render(arg.base, slot, kernel)}.{arg.attr}"
    if isinstance(arg, Index):
        return f"{render(arg.base, slot, kernel)}[{', '.join(render(a, slot, kernel) for a in arg.index)}]"
    raise TypeError(f"not a call-record argument: {arg!r}")


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
