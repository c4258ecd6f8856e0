"""The op protocol and the one builder every node goes through.

An :class:`Op` keeps its NumPy kernel (``compute``), its static shape/dtype rule
(``infer``) and its chain-rule rule (``vjp``) together. Ops are frozen dataclasses, so an
op's parameters are its fields: hashable (common-subexpression elimination), printable
(rendering) and serialisable (``gb.save``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import DTypePromotionWarning, DTypeError, GraphError, ShapeError
from ..graph.context import current_labels
from ..graph.cost import Poly, size_poly
from ..graph.node import Node
from ..graph.subgraph import Subgraph
from ..graph.source import user_location
from ..graph.types import TensorType, TupleType, format_shape


BodyRunner = Callable[[Subgraph], Callable[..., Sequence[np.ndarray]]]
"""How a higher-order op's kernel runs a body: ``run_body(body)(*arrays) -> outputs``."""


class OpError(Exception):
    """Raised inside ``infer`` with just the reason; :func:`apply` adds op, operands and line."""

    def __init__(self, reason: str, kind: type[Exception] = ShapeError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def shape_error(reason: str) -> OpError:
    return OpError(reason, ShapeError)


def dtype_error(reason: str) -> OpError:
    return OpError(reason, DTypeError)


@dataclasses.dataclass(frozen=True)
class Op:
    """Base class of all ops. Subclasses are frozen dataclasses whose fields are parameters.

    Class attributes
    ----------------
    name : str
        The public (NumPy) name, e.g. ``"matmul"``.
    differentiable : bool
        False for ops whose output carries no gradient (comparisons, integer ops).
    elementwise : bool
        True when output element i depends only on input elements i (after broadcasting);
        the fusion pass relies on it.
    vjp_formula : str
        The VJP rule in one line of math, listed in the generated op reference.
    """

    name: ClassVar[str] = "op"
    differentiable: ClassVar[bool] = True
    elementwise: ClassVar[bool] = False
    nondiff_inputs: ClassVar[tuple[int, ...]] = ()
    vjp_formula: ClassVar[str] = ""  # one line for the generated op reference (docs/ops.md)
    shape_only_inputs: ClassVar[tuple[int, ...]] = ()
    """Inputs read only for their runtime shape (``like=`` operands): keeping their shape, not
    their data, is enough (saved-activation accounting, memory plan, rendering)."""
    effectful: ClassVar[bool] = False
    """True when running the op does more than produce its output (a collective, a random draw):
    passes never fold, merge (CSE), drop or reorder it across another effectful node."""
    singular_inputs: ClassVar[tuple[int, ...]] = ()
    """Inputs where the derivative can be infinite or undefined at points a ``where`` mask
    typically excludes (``sqrt`` at 0, ``log`` at 0, a divisor of 0); ``nan_guard`` reads it."""
    view: ClassVar[bool] = False
    """True when the output is a re-view of input 0 (reshape, transpose, broadcast, ...):
    no arithmetic, no FLOPs, and the executor may alias the operand's buffer."""
    schedule: ClassVar[str] = "any"
    """Where the scheduler places the node among the independent work around it: ``"early"``
    (as soon as its operands are ready: a nonblocking collective's start) or ``"late"`` (just
    before its first reader: the matching wait); ``"any"`` keeps the topological order."""
    reads_tuples: ClassVar[bool] = False
    """True for the projection that reads a multi-output node's tuple (``TupleGet``); every
    other op takes tensors, so ``apply`` refuses a tuple operand before its ``infer`` runs."""
    leaf_kind: ClassVar[str | None] = None
    """``"input"``, ``"param"`` or ``"constant"`` for ops whose value comes from outside the
    schedule (graph exports and diagrams read it without importing the op classes)."""
    may_hold_bodies: ClassVar[bool] = False
    """Set for each class: True when it overrides :meth:`subgraphs` (a higher-order op), so a
    pass walking a deep graph asks :meth:`subgraphs` of those nodes only."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.may_hold_bodies = cls.subgraphs is not Op.subgraphs

    def infer(self, *types: TensorType) -> TensorType:
        raise NotImplementedError

    def compute(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def compute_with(self, run_body: BodyRunner, *xs: np.ndarray) -> Any:
        """The kernel with each body run by ``run_body(body)(*arrays)``.

        A higher-order op's ``compute`` passes the bodies' compiled programs
        (``Subgraph.program``); the reference interpreter passes itself, so it reaches
        every node of every body with one ``op.compute`` each. First-order ops hold no
        body: this is ``compute``."""
        return self.compute(*xs)

    def vjp(self, node: Node, g: Node) -> Sequence[Node | None]:
        """Cotangents for each input given the output cotangent ``g``.

        An op with several outputs (``infer`` returns a ``TupleType``) gets a tuple ``g``
        instead, one entry per output, ``None`` for an output nothing reads (a symbolic
        zero: no array of zeros is built).

        They may have the output's (broadcast) shape: the autodiff pass sums them back to
        each input's shape. ``None`` means no gradient flows to that input.
        """
        raise NotImplementedError(f"{self.name} has no gradient rule")

    def flops(self, in_types: Sequence[TensorType], out_type: TensorType) -> Poly:
        """A rough FLOP count at these types, as a polynomial in the unknown batch dim.

        Default: one per output element, none for views. Ops whose work is not proportional
        to their output (contractions, reductions, convolutions) override it."""
        return Poly() if self.view else size_poly(out_type)

    def batched(self, stacked: Sequence[bool], types: Sequence[TensorType], out: TensorType) -> "Op | None":
        """The op computing ``stack(self(x_t))`` for every step at once, when the operands
        flagged in ``stacked`` carry a leading step axis (``types``/``out``: the per-step
        types), or None. Loop-invariant code motion (passes/licm.py) hoists a scan body's
        work by it. Elementwise ops batch as themselves when every stacked operand has the
        output's rank (broadcasting aligns from the right); others say so in
        :meth:`batched_form`."""
        if self.effectful or self.subgraphs():
            return None
        if not any(stacked):
            return self
        if self.elementwise and not self.shape_only_inputs:
            ok = all(t.ndim == out.ndim for t, s in zip(types, stacked) if s)
            return self if ok else None
        return self.batched_form(stacked, types)

    def batched_form(self, stacked: Sequence[bool], types: Sequence[TensorType]) -> "Op | None":
        """:meth:`batched` for a non-elementwise op with at least one stacked operand.
        Default: none (the op stays in the loop body)."""
        return None

    def subgraphs(self) -> tuple[Subgraph, ...]:
        """The closed graphs this op holds (a branch, a loop body), in a fixed order.

        The one way passes, traversal, the runtime, rendering and the file format step into
        bodies. Empty for first-order ops; higher-order ops return their body fields."""
        return ()

    def replace_subgraphs(self, new: Sequence[Subgraph]) -> "Op":
        """This op with its subgraphs replaced by ``new`` (same order as :meth:`subgraphs`);
        ``self`` when every body is the same object."""
        old = self.subgraphs()
        if len(new) != len(old):
            raise GraphError(f"{self.name} holds {len(old)} subgraphs, got {len(new)}")
        if all(a is b for a, b in zip(old, new)):
            return self
        fields = [k for k, v in self.params().items() if isinstance(v, Subgraph)]
        return dataclasses.replace(self, **dict(zip(fields, new)))

    def loop_carries(self, body: int) -> tuple[tuple[int, int], ...]:
        """For a loop op: ``(output, input)`` index pairs of body ``body`` (of
        :meth:`subgraphs`), where the value the body returns as that output is what it reads
        as that input at the next iteration (the carries). Diagrams draw each as a back edge.
        Empty for every op that runs its bodies once (the default)."""
        return ()

    def keep_outputs(self, indices: Sequence[int]) -> "Op | None":
        """For a multi-output op: the op computing only outputs ``indices`` (in that order),
        so passes can drop outputs nothing reads; ``None`` when it cannot (the default)."""
        return None

    def operand_places(self, in_types: Sequence[TensorType]) -> tuple[tuple[slice, ...], ...] | None:
        """For an op whose output is its operands laid side by side (``concatenate``): each
        operand's place in the output as a basic index, so its VJP slices the cotangent there,
        its lowering copies into it and generated code may compute the operand straight into
        it. None when the op is not one (the default) or a size is unknown."""
        return None

    def parts(self) -> tuple[str, ...]:
        """For an op a pass made from several (a fused op): the names of the ops it stands
        for, in order (diagrams draw "fused: matmul, add, tanh"). Empty for the others."""
        return ()

    def params(self) -> dict[str, Any]:
        """The op's parameters by name (its dataclass fields)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __str__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if not isinstance(v, (np.ndarray, Subgraph)))
        return f"{self.name}({ps})" if ps else self.name


def format_operands(nodes: Sequence[Node]) -> str:
    return ", ".join(
        f"{n.name or n.op.name}: {n.dtype.name}{format_shape(n.shape)}" for n in nodes
    )


def describe_error(op: Op, nodes: Sequence[Node], reason: str) -> str:
    """The full message of a build-time error: op, operands, the user's line, provenance."""
    lines = [f"{op.name}: {reason}", f"  operands: {format_operands(nodes)}"]
    from ..graph.context import current_provenance

    prov = current_provenance()
    if prov:
        fwd = prov[0].forward
        where = f" built at {fwd.origin}" if fwd.origin else ""
        lines.insert(0, f"while deriving the gradient of {fwd.op.name}{where}:")
        lines.append(f"  generated gradient node: {op.name} ({prov[0].describe()})")
    else:
        loc = user_location(3)
        if loc is not None:
            lines.append(f"  built at {loc}")
    return "\n".join(lines)


def apply(op: Op, *inputs: Node, name: str | None = None) -> Node:
    """Build ``op(*inputs)``: check the operands with the op's rule, then make the node."""
    for i, x in enumerate(inputs):
        if not isinstance(x, Node):
            raise GraphError(f"{op.name}: input {i} is a {type(x).__name__}, not a node")
        if isinstance(x.type, TupleType) and not op.reads_tuples:
            raise GraphError(f"{op.name}: input {i} is the multi-output {x.describe()}; "
                             "read one of its outputs (graphbp.ops.control.unpack)")
    try:
        out_type = op.infer(*[x.type for x in inputs])
    except OpError as e:
        raise e.kind(describe_error(op, inputs, e.reason)) from None
    origin, scope, prov = _labels()
    return Node(op, inputs, out_type, name=name, origin=origin, scope=scope, provenance=prov)


def _labels() -> tuple:
    """``(origin, scope, provenance)`` of a node built now: what :func:`~graphbp.graph.context.stamp`
    set, the origin defaulting to the user's line of the forward op a gradient node comes
    from, else to the user's own line (the innermost frame outside the package)."""
    origin, scope, prov = current_labels()
    if origin is None:
        origin = prov[0].forward.origin if prov else user_location(2)
    return origin, scope, prov


def as_node(value: Any, like: Node | None = None) -> Node:
    """Nodes pass through; Python scalars, lists and arrays become constants.

    The dtype policy (docs/concepts.md, "Dtypes"), in the spirit of JAX's weak types: Python
    scalars and (nested) lists or tuples of Python numbers are *weak*: next to ``like`` they
    take the dtype NumPy 2 gives a Python scalar of their kind, so ``x * 2.0`` and
    ``x + [1, 2, 3, 4]`` keep a float32 ``x`` float32. NumPy arrays and scalars are *strong*:
    they keep their dtype and promote by NumPy's rules, and a
    :class:`~graphbp.errors.DTypePromotionWarning` (at the user's line) says when that widens
    a float ``like``, e.g. a float64 array meeting a float32 model.
    """
    if isinstance(value, Node):
        return value
    from .leaves import constant

    if like is not None and _is_weak(value):
        kind = np.asarray(value).dtype.kind
        return constant(value, dtype=np.result_type(like.dtype, _WEAK.get(kind, 0.0)))
    if isinstance(value, (bool, int, float, np.ndarray, np.generic, list, tuple)):
        node = constant(value)
        if like is not None and like.dtype.kind == "f" and node.dtype.kind in "fiub":
            wide = np.result_type(like.dtype, node.dtype)
            if wide != like.dtype:
                import warnings

                from ..graph.source import user_stacklevel

                warnings.warn(
                    f"a {node.dtype.name} array promotes {like.describe()} to {wide.name}; "
                    f"pass np.asarray(..., dtype=np.{like.dtype.name}) (or a Python scalar or list, "
                    f"which adopt the tensor's dtype) to stay in {like.dtype.name}",
                    DTypePromotionWarning, stacklevel=user_stacklevel())
        return node
    raise GraphError(f"cannot use a {type(value).__name__} as a graph value")


_WEAK = {"b": False, "i": 0, "u": 0, "f": 0.0, "c": 0j}  # a Python scalar of each kind


def _is_weak(value: Any) -> bool:
    """A Python number, or a non-empty (nested) list/tuple of only Python numbers."""
    stack, seen_any = [value], False
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, (bool, int, float)):
            seen_any = True
        else:
            return False
    return seen_any


def as_nodes(*values: Any) -> tuple[Node, ...]:
    """Convert operands, typing Python scalars after the first node among them."""
    like = next((v for v in values if isinstance(v, Node)), None)
    return tuple(as_node(v, like) for v in values)


def float_dtype(dtype: np.dtype) -> np.dtype:
    """The floating dtype NumPy computes in for a transcendental of ``dtype``."""
    return np.result_type(dtype, np.float16) if dtype.kind != "f" else dtype
