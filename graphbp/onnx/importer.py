"""``gb.import_onnx``: an ONNX model as graphbp nodes, so it can be differentiated and drawn.

The model file is untrusted input. It is checked before it is parsed (size caps from
:class:`~graphbp.io.Limits`), external data may only come from files inside the model's own
folder, every tensor's declared size is checked against its bytes, and every failure is a
:class:`~graphbp.errors.GraphFormatError`: never another exception, never code execution
(ONNX is plain protobuf; nothing is unpickled or evaluated).

Values are kept in one of three forms while importing: a graphbp node; a *static* NumPy
array known at import time (initializers used as axes or shapes, ``Constant`` nodes, and
arithmetic on them, folded here); or a shape computed from run-time sizes (``Shape`` of a
tensor with unknown dims and the arithmetic on it, :mod:`.symbolic`), which the ops that
take a shape (``Reshape``, ``Expand``, ``ConstantOfShape``, ``Split``) turn into graphbp's
``like=`` operands (:mod:`.handlers_shape`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ..errors import GraphbpError, GraphFormatError
from ..graph.node import Node
from ..io.bounded import read_file, read_region
from ..io.container import DEFAULT_LIMITS, Limits
from ..ops.leaves import Constant
from ._deps import require_onnx
from . import handlers_image, handlers_loop, handlers_shape  # noqa: F401 - register their handlers
from .handlers import HANDLERS, Ctx, Static
from .handlers_shape import SYMBOLIC
from .symbolic import Dims, SymbolicError

MAX_STATIC_ELEMENTS = 1 << 24
"""Static values folded at import time are capped (a shape computation has a few elements;
a model asking to fold more is refused rather than trusted with memory)."""


@dataclasses.dataclass
class ImportedModel:
    """What :func:`import_onnx` returns.

    Attributes
    ----------
    inputs : list[Node]
        ``gb.input`` nodes in the model's input order, named as in the model (initializers
        listed as inputs are not among them: they are parameters).
    params : list[Node]
        Trainable parameters made from the float initializers (``gb.grad`` and the
        optimisers take them); 0-d initializers and those graphbp exported as constants
        stay constants.
    outputs : list[Node]
        The model's outputs in order; ``output_names`` has their ONNX names.
    """

    inputs: list[Node]
    params: list[Node]
    outputs: list[Node]
    output_names: list[str]

    def output(self, name: str) -> Node:
        """The output named ``name``."""
        try:
            return self.outputs[self.output_names.index(name)]
        except ValueError:
            raise KeyError(f"no output {name!r}; outputs are {self.output_names}") from None


def import_onnx(path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS,
                batch_dims: bool = True) -> ImportedModel:
    """Load the ONNX model at ``path`` as graphbp nodes.

    Parameters
    ----------
    path : path-like
        An ``.onnx`` file. External data must sit in the model's folder (or below it).
    limits : Limits
        Caps on file, tensor and node counts (``gb.load``'s, see docs/reliability.md).
    batch_dims : bool
        Symbolic (named) input dims become unknown (``None``) dims; with False they are an
        error.

    Raises
    ------
    GraphFormatError
        For any malformed, oversized or unsupported model, naming the node and the problem.
    """
    onnx = require_onnx()
    path = os.fspath(path)
    model = _read_model(onnx, path, limits)
    try:
        return _convert(onnx, model, path, limits, batch_dims)
    except GraphFormatError:
        raise
    except GraphbpError as e:  # a graphbp shape or dtype rule refused what the model says
        raise GraphFormatError(f"{path}: {e}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, MemoryError,
            RecursionError, UnicodeDecodeError) as e:
        raise GraphFormatError(f"{path}: malformed model ({type(e).__name__}: {e})") from None


def _read_model(onnx: Any, path: str, limits: Limits) -> Any:
    """Parse the model, its size checked before anything is read (protobuf caps at 2 GiB)."""
    cap = min(limits.max_file_bytes, 2**31 - 1)
    data = read_file(path, cap, "Limits.max_file_bytes" if cap == limits.max_file_bytes else "protobuf's 2 GiB")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends: any parse failure
        raise GraphFormatError(f"{path}: not an ONNX model ({type(e).__name__})") from None
    if not model.HasField("graph"):
        raise GraphFormatError(f"{path}: not an ONNX model (no graph)")
    return model


def _convert(onnx: Any, model: Any, path: str, limits: Limits, batch_dims: bool) -> ImportedModel:
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise GraphFormatError(f"{path}: the model imports no default-domain opset")
    if len(graph.node) > limits.max_nodes:
        raise GraphFormatError(f"{path}: {len(graph.node)} nodes, over Limits.max_nodes={limits.max_nodes}")
    ctx = Ctx(onnx, path, opset, limits)
    folder = os.path.dirname(os.path.abspath(path))
    total = 0
    inits: dict[str, tuple[np.ndarray, str]] = {}
    for t in graph.initializer:
        arr = _tensor(onnx, t, folder, path, limits)
        total += arr.nbytes
        if total > limits.max_array_bytes:
            raise GraphFormatError(f"{path}: initializers exceed Limits.max_array_bytes={limits.max_array_bytes}")
        inits[t.name] = (arr, t.doc_string)
    ctx.initializers = inits
    inputs: list[Node] = []
    from ..ops.leaves import input as make_input

    for vi in graph.input:
        if vi.name in inits:
            continue
        dtype, shape = _value_type(onnx, vi, path, batch_dims)
        node = make_input(vi.name, shape, dtype=dtype)
        ctx.values[vi.name] = node
        inputs.append(node)
    run_nodes(ctx, graph.node)
    outputs, names = [], []
    for vi in graph.output:
        if vi.name not in ctx.values and vi.name not in inits:
            raise GraphFormatError(f"{path}: output {vi.name!r} is produced by no node")
        outputs.append(ctx.node(ctx.value(vi.name, None, -1)))
        names.append(vi.name)
    return ImportedModel(inputs, list(ctx.params.values()), outputs, names)


def run_nodes(ctx: Ctx, nodes: Any) -> None:
    """Convert ONNX nodes in order into ``ctx.values`` (the main graph and ``If`` branches)."""
    path = ctx.path
    for k, n in enumerate(nodes):
        ctx.count_node()
        if n.domain not in ("", "ai.onnx"):
            raise GraphFormatError(f"{path}: node {k} ({n.name or n.op_type}) is in domain {n.domain!r}: unsupported")
        handler = HANDLERS.get(n.op_type)
        if handler is None:
            raise GraphFormatError(f"{path}: node {k} ({n.name or n.op_type}): ONNX op {n.op_type} is not supported "
                                   "(docs/interop.md lists what imports)")
        args = [ctx.value(name, n, k) if name else None for name in n.input]
        ctx.where = f"node {k} ({n.name or n.op_type}, {n.op_type})"
        outs = None
        if n.op_type in SYMBOLIC and any(isinstance(a, Dims) for a in args):
            try:
                outs = SYMBOLIC[n.op_type](ctx, n, args)  # shape arithmetic on run-time sizes
            except SymbolicError as e:
                raise ctx.fail(str(e)) from None
        if outs is None:
            outs = handler(ctx, n, args)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        produced = [o for o in n.output]
        if len(outs) < len([o for o in produced if o]):
            raise GraphFormatError(f"{path}: {ctx.where}: only {len(outs)} of its {len(produced)} outputs are supported")
        for name, v in zip(produced, outs):
            if name:
                ctx.values[name] = _fold(v)


def _fold(v: Any) -> Any:
    """A node whose inputs are all constants becomes a static value (shape arithmetic), and so
    does a shape computed from run-time sizes that none is left in."""
    if isinstance(v, Dims):
        return Static(v.array()) if v.is_static else v
    if not isinstance(v, Node) or not v.inputs or not all(isinstance(i.op, Constant) for i in v.inputs):
        return v
    if v.type.size() is None or v.type.size() > MAX_STATIC_ELEMENTS or getattr(v.op, "effectful", False):
        return v
    return Static(np.asarray(v.op.compute(*(i.op.value for i in v.inputs))))


def _value_type(onnx: Any, vi: Any, path: str, batch_dims: bool):
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.elem_type:
        raise GraphFormatError(f"{path}: input {vi.name!r} is not a tensor")
    dtype = _np_dtype(onnx, tt.elem_type, path, f"input {vi.name!r}")
    if not tt.HasField("shape"):
        raise GraphFormatError(f"{path}: input {vi.name!r} has no shape (graphbp graphs are static)")
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            if d.dim_value < 0:
                raise GraphFormatError(f"{path}: input {vi.name!r} has a negative dim")
            dims.append(int(d.dim_value))
        elif batch_dims:
            dims.append(None)
        else:
            raise GraphFormatError(f"{path}: input {vi.name!r} has a symbolic dim and batch_dims=False")
    return dtype, tuple(dims)


def _np_dtype(onnx: Any, elem_type: int, path: str, what: str) -> np.dtype:
    try:
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        raise GraphFormatError(f"{path}: {what} has unknown element type {elem_type}") from None
    if dt.kind not in "biuf":
        raise GraphFormatError(f"{path}: {what} has element type {dt}, which graphbp does not hold")
    return dt


def _tensor(onnx: Any, t: Any, folder: str, path: str, limits: Limits) -> np.ndarray:
    """An initializer's array, with its declared size checked against the bytes present."""
    what = f"initializer {t.name!r}"
    dt = _np_dtype(onnx, t.data_type, path, what)
    dims = list(t.dims)
    if len(dims) > limits.max_ndim or any(d < 0 for d in dims):
        raise GraphFormatError(f"{path}: {what} has bad dims {dims[:8]}")
    count = int(np.prod(dims, dtype=object)) if dims else 1
    nbytes = count * dt.itemsize
    if nbytes > limits.max_array_bytes:
        raise GraphFormatError(f"{path}: {what} declares {nbytes} bytes, over Limits.max_array_bytes")
    if t.data_location == onnx.TensorProto.EXTERNAL:
        arr = np.empty(count, dtype=dt.newbyteorder("<"))
        _external(t, folder, path, memoryview(arr).cast("B"))
        return arr.astype(dt, copy=False).reshape(dims)
    if t.HasField("raw_data"):
        if len(t.raw_data) != nbytes:
            raise GraphFormatError(f"{path}: {what} declares {nbytes} bytes but holds {len(t.raw_data)}")
    else:
        held = max(len(t.float_data), len(t.int32_data), len(t.int64_data), len(t.double_data), len(t.uint64_data))
        if held != count:
            raise GraphFormatError(f"{path}: {what} declares {count} elements but holds {held}")
    try:
        arr = onnx.numpy_helper.to_array(t)
    except Exception as e:
        raise GraphFormatError(f"{path}: {what} cannot be read ({type(e).__name__})") from None
    return np.array(arr, dtype=dt).reshape(dims)


def _external(t: Any, folder: str, path: str, out: memoryview) -> None:
    """External data: a file inside the model's folder; its declared byte range is read
    straight into ``out`` (the tensor's buffer), refused if the file does not hold it."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(folder, loc))
    if not loc or os.path.isabs(loc) or os.path.commonpath([target, root]) != root:
        raise GraphFormatError(f"{path}: initializer {t.name!r}: external data {loc!r} is outside the model's folder")
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", out.nbytes))
    except ValueError:
        raise GraphFormatError(f"{path}: initializer {t.name!r}: bad external data offset/length") from None
    if length != out.nbytes:
        raise GraphFormatError(f"{path}: initializer {t.name!r}: external data holds {length} bytes, "
                               f"its dims need {out.nbytes}")
    read_region(target, offset, out, f"external data of initializer {t.name!r}")
