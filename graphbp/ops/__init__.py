"""All ops and their public builders (``gb.add``, ``gb.matmul``, ...).

``OP_CLASSES`` is the explicit registry of op classes: the op database in the tests and
the generated op reference both iterate it, so an op without a test entry fails a test.
"""

from __future__ import annotations

from .base import Op, apply, as_node
from .elementwise import (
    Abs, Add, Cos, Divide, Equal, Exp, Greater, GreaterEqual, Less, LessEqual, Log, Log1p,
    Maximum, Minimum, Multiply, Negative, NotEqual, Power, Reciprocal, Sign, Sin, Sqrt,
    Square, Subtract, Tanh, Where, Cast,
    abs, add, cos, divide, equal, exp, greater, greater_equal, less, less_equal, log, log1p,
    maximum, minimum, multiply, negative, not_equal, power, reciprocal, sign, sin, sqrt,
    square, subtract, tanh, where, cast, cast_to, astype,
)
from .creation import Full, full_like, ones_like, zeros_like
from .leaves import Constant, Input, Param, constant, input, param
from .linalg import MatMul, matmul
from .reduce import Mean, ReducedCount, Sum, mean, sum
from .shape import (
    BroadcastTo, ExpandDims, Reshape, Squeeze, Transpose,
    broadcast_to, expand_dims, flatten, reshape, reshape_like, squeeze, swapaxes, transpose,
)
from .elementwise import Clip, clip
from .reduce import LogSumExp, Max, Min, Prod, logsumexp, max, min, prod, var
from .activations import (
    Elu, Erf, LeakyRelu, Relu, Sigmoid, Softplus,
    elu, erf, gelu, leaky_relu, relu, sigmoid, softplus,
)
from .indexing import (
    ConcatSlice, Concatenate, EmbedSlice, GetItem, OneHot, ScatterAdd, Take,
    concatenate, embed_slice, getitem, one_hot, scatter_add, split, stack, take,
)
from .collective import AllreduceMean, AllreduceStart, AllreduceWait
from .fused import AddN, ConvBiasAct, MatMulBiasAct
from .nn import (
    DropoutMask, LogSoftmax, SigmoidBinaryCrossEntropy, Softmax, SoftmaxCrossEntropy, SoftmaxCrossEntropyProbs,
    dropout, dropout_mask, log_softmax, mse, sigmoid_binary_cross_entropy, softmax,
    softmax_cross_entropy,
)
from .conv import Conv2D, Conv2DWeightGrad, ConvTranspose2D, conv1d, conv2d, conv_transpose2d
from .pool import AvgPool2D, AvgPool2DGrad, MaxPool2D, MaxPool2DGather, MaxPool2DGrad, avg_pool2d, max_pool2d
from .norm import BatchNormTrain, batch_norm, batch_norm_train, layer_norm
from .control import Cond, TupleGet, cond, unpack
from .loop import Scan, scan

OP_CLASSES: tuple[type[Op], ...] = (
    Input, Param, Constant,
    Add, Subtract, Multiply, Divide, Power, Maximum, Minimum, Where,
    Greater, GreaterEqual, Less, LessEqual, Equal, NotEqual,
    Cast, Full,
    Negative, Exp, Log, Log1p, Sqrt, Square, Abs, Sign, Reciprocal, Sin, Cos, Tanh,
    MatMul,
    Sum, Mean, ReducedCount,
    Reshape, BroadcastTo, Transpose, ExpandDims, Squeeze,
    Clip, Max, Min, Prod, LogSumExp,
    Relu, LeakyRelu, Elu, Erf, Sigmoid, Softplus,
    GetItem, EmbedSlice, Concatenate, ConcatSlice, Take, ScatterAdd, OneHot,
    Softmax, LogSoftmax, SoftmaxCrossEntropy, SigmoidBinaryCrossEntropy, DropoutMask,
    SoftmaxCrossEntropyProbs, AddN, MatMulBiasAct, ConvBiasAct,
    AllreduceMean, AllreduceStart, AllreduceWait,
    Conv2D, ConvTranspose2D, Conv2DWeightGrad,
    MaxPool2D, MaxPool2DGrad, MaxPool2DGather, AvgPool2D, AvgPool2DGrad,
    TupleGet, Cond, Scan,
)

__all__ = [  # the builders ``from graphbp.ops import *`` puts in the ``gb`` namespace
    "input", "param", "constant",
    "add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "where", "clip",
    "greater", "greater_equal", "less", "less_equal", "equal", "not_equal",
    "negative", "exp", "log", "log1p", "sqrt", "square", "abs", "sign", "reciprocal",
    "sin", "cos", "tanh", "cast", "astype",
    "relu", "leaky_relu", "elu", "gelu", "erf", "sigmoid", "softplus",
    "matmul",
    "sum", "mean", "max", "min", "prod", "logsumexp", "var",
    "reshape", "transpose", "swapaxes", "broadcast_to", "expand_dims", "squeeze",
    "concatenate", "stack", "split", "getitem", "take", "one_hot",
    "full_like", "zeros_like", "ones_like", "reshape_like", "embed_slice", "scatter_add",
    "softmax", "log_softmax", "softmax_cross_entropy", "sigmoid_binary_cross_entropy",
    "mse", "dropout", "cond", "scan",
    "conv2d", "conv1d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "flatten",
    "batch_norm", "batch_norm_train", "layer_norm",
]
