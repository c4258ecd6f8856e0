"""Ops a graph file may name that graphbp no longer has, and the primitives they load as.

Until gelu became a composite (the general passes now compile it as fast as the fused op
ran; docs/performance.md, W4), a graph held ``gelu(x, approximate)`` as one node and its
tanh-form derivative as one ``gelu_tanh_grad(x)`` node, the factor gelu's VJP multiplied
the cotangent by. Files of format versions 1 and 2 that name them load as the primitives
:func:`graphbp.ops.gelu` builds today: ``gelu`` as that builder's subgraph, and
``gelu_tanh_grad`` as the VJP of the same subgraph against a cotangent of ones. The formula
stays written once, in the builder; the loaded values agree with the old kernels' to
rounding, and the compiler merges the two expansions' shared ``tanh`` as it does for a
graph built today.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from ..autodiff import vjp
from ..errors import GraphbpError
from ..graph.context import stamp
from ..graph.node import Node
from ..graph.source import SourceLocation
from ..graph.types import TensorType, TupleType
from ..ops.activations import float_result, gelu
from ..ops.creation import ones_like
from ..ops.elementwise import cast
from .codec import Decoder
from .container import fail


@dataclasses.dataclass(frozen=True)
class LegacyOp:
    """A removed op: its parameters (name -> allowed values) and how to build it now, from
    its one operand and the parameters as keywords."""

    params: Mapping[str, tuple[str, ...]]
    build: Callable[..., Node]


def _gelu_tanh_derivative(x: Node) -> Node:
    """``d gelu(x, "tanh") / dx`` elementwise (integer operands promoted, as the op did)."""
    if x.dtype.kind != "f":
        x = cast(x, float_result(x.dtype))
    (d,) = vjp(gelu(x, "tanh"), [x], ones_like(x))
    return d


LEGACY_OPS: dict[str, LegacyOp] = {
    "gelu": LegacyOp({"approximate": ("tanh", "none")}, gelu),
    "gelu_tanh_grad": LegacyOp({}, _gelu_tanh_derivative),
}
"""Removed op name -> what a file's node of that name loads as."""


def expand(dec: Decoder, spec: LegacyOp, params: object, inputs: tuple[Node, ...], stored: TensorType | TupleType,
           where: str, *, name: str | None, scope: tuple[str, ...], origin: SourceLocation) -> Node:
    """The node a file's entry of a removed op stands for, built from primitives at the
    entry's origin and scope; its parameters and type are checked like any op's."""
    if not isinstance(params, dict) or set(params) != set(spec.params):
        raise fail(dec.path, f"{where}.params", f"expected parameters {sorted(spec.params)}")
    values = {k: dec.decode(v, f"{where}.params.{k}") for k, v in sorted(params.items())}
    for k, v in values.items():
        if v not in spec.params[k]:
            raise fail(dec.path, f"{where}.params.{k}", f"expected one of {list(spec.params[k])}, got {v!r:.40}")
    if len(inputs) != 1 or not isinstance(inputs[0].type, TensorType):
        raise fail(dec.path, f"{where}.inputs", "expected one tensor operand")
    if inputs[0].dtype.kind not in "fiub":
        raise fail(dec.path, where, f"needs a numeric operand, got {inputs[0].dtype.name}")
    try:
        with stamp(origin=origin, scope=scope, provenance=()):
            out = spec.build(inputs[0], **values)
    except GraphbpError as e:
        raise fail(dec.path, where, f"cannot build it from primitives: {e}") from None
    if out.type != stored:
        raise fail(dec.path, f"{where}.type", f"stored type {stored} differs from the type its expansion gives, {out.type}")
    # the entry's own node carries its name; the expansion's last node is not read by any other
    return Node(out.op, out.inputs, out.type, name=name, origin=origin, scope=scope, provenance=out.provenance)
