"""The public op API: `from refq.autograd import functional as F`.

Each function validates its arguments (ValueError naming the bad value), wraps
non-Tensor operands as constant Tensors and calls one `Function` from the
`ops_*` modules, which hold the forward/backward math and the equations:
  ops_elementwise  add ... where, unbroadcast      ops_reduce  sum, mean, max, var
  ops_linalg       matmul, linear, embedding        ops_shape   reshape ... flip
  ops_nn           activations, softmax, norms      ops_loss    cross_entropy, mse
  ops_conv         conv2d (im2col)                  ops_pool    max/avg pooling
  ops_resize       resize_bilinear, crop_and_resize
Constants take the float dtype of the Tensor operand, so a float32 graph stays
float32 (Python numbers never upcast it) and a float64 graph stays float64.
`OPS` lists every differentiable op by name (tests gradient-check each one).

References: see the ops_* modules.
"""
from __future__ import annotations

import math

import numpy as np

from refq.autograd import ops_conv, ops_elementwise as ew, ops_linalg, ops_loss, ops_nn, ops_pool, ops_reduce
from refq.autograd import ops_resize, ops_shape
from refq.autograd.engine import Tensor


def _tensor(x, dtype=None) -> Tensor:
    """x if it is a Tensor, else a constant Tensor of `dtype` (Python numbers default to float32)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (np.ndarray, np.generic)):
        arr = np.asarray(x)
    else:  # a Python number: convert straight to the target dtype, so float64 graphs keep full precision
        arr = np.asarray(x, dtype=np.float32 if dtype is None else dtype)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    return Tensor(arr)


def _float_dtype(*xs):
    """Dtype of the first floating Tensor among xs (None if there is none)."""
    for x in xs:
        if isinstance(x, Tensor) and x.dtype.kind == "f":
            return x.dtype
    return None


def _tensors(*xs) -> list:
    """All operands as Tensors; constants take the float dtype of the Tensor operands."""
    dtype = _float_dtype(*xs)
    return [_tensor(x, dtype) for x in xs]


# ---- elementwise -------------------------------------------------------------
def add(a, b) -> Tensor:
    """a + b (broadcasting)."""
    return ew.Add.apply(*_tensors(a, b))


def sub(a, b) -> Tensor:
    """a - b (broadcasting)."""
    return ew.Sub.apply(*_tensors(a, b))


def mul(a, b) -> Tensor:
    """a * b (broadcasting)."""
    return ew.Mul.apply(*_tensors(a, b))


def div(a, b) -> Tensor:
    """a / b (broadcasting)."""
    return ew.Div.apply(*_tensors(a, b))


def neg(x) -> Tensor:
    """-x."""
    return ew.Neg.apply(_tensor(x))


def pow(x, p: float) -> Tensor:  # noqa: A001 - the contract's name
    """x ** p for a constant real exponent p."""
    if isinstance(p, Tensor) or not np.isscalar(p) or isinstance(p, (bool, np.bool_, complex)):
        raise ValueError(f"pow: exponent p={p!r} must be a real number (use exp/log for tensor exponents)")
    return ew.Pow.apply(_tensor(x), p=float(p))


def exp(x) -> Tensor:
    """e ** x."""
    return ew.Exp.apply(_tensor(x))


def log(x) -> Tensor:
    """Natural logarithm."""
    return ew.Log.apply(_tensor(x))


def sqrt(x) -> Tensor:
    """Square root."""
    return ew.Sqrt.apply(_tensor(x))


def abs(x) -> Tensor:  # noqa: A001 - the contract's name
    """|x| (gradient 0 at x = 0)."""
    return ew.Abs.apply(_tensor(x))


def clip(x, lo, hi) -> Tensor:
    """Clamp to [lo, hi] (either may be None); zero gradient where the clamp saturates."""
    if lo is not None and hi is not None and np.any(np.asarray(lo) > np.asarray(hi)):
        raise ValueError(f"clip: lo={lo} is above hi={hi}")
    return ew.Clip.apply(_tensor(x), lo=lo, hi=hi)


def maximum(a, b) -> Tensor:
    """Elementwise max (a tie splits the gradient equally)."""
    return ew.Maximum.apply(*_tensors(a, b))


def minimum(a, b) -> Tensor:
    """Elementwise min (a tie splits the gradient equally)."""
    return ew.Minimum.apply(*_tensors(a, b))


def where(cond, a, b) -> Tensor:
    """a where the boolean mask cond holds, else b (broadcasting)."""
    cond = cond.data if isinstance(cond, Tensor) else np.asarray(cond)
    if cond.dtype != np.bool_:
        raise ValueError(f"where: cond has dtype {cond.dtype}, expected bool")
    return ew.Where.apply(*_tensors(a, b), cond=cond)


# ---- products -----------------------------------------------------------------
def matmul(a, b) -> Tensor:
    """a @ b, batched over broadcast leading dims."""
    a, b = _tensors(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align")
    return ops_linalg.MatMul.apply(a, b)


def linear(x, w, b=None) -> Tensor:
    """x @ w.T + b with w [out, in]: [..., I] -> [..., O]."""
    x, w = _tensors(x, w)
    if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: x has shape {x.shape}, w has shape {w.shape}; expected w [out, in] with in = x.shape[-1]")
    if b is None:
        return ops_linalg.Linear.apply(x, w)
    b = _tensor(b, w.dtype)
    if b.shape != (w.shape[0],):
        raise ValueError(f"linear: bias has shape {b.shape}, expected ({w.shape[0]},)")
    return ops_linalg.Linear.apply(x, w, b)


def embedding(weight, ids) -> Tensor:
    """Rows weight[ids] of a [V, D] table: ids [...] -> [..., D]."""
    weight = _tensor(weight)
    ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight has shape {weight.shape}, expected [V, D]")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"embedding: ids have dtype {ids.dtype}, expected an integer dtype")
    if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise ValueError(f"embedding: id {bad} is out of range for a table of {weight.shape[0]} rows")
    return ops_linalg.Embedding.apply(weight, ids=ids)


# ---- reductions ---------------------------------------------------------------
def sum(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - the contract's name
    """Sum over axis (None: all)."""
    return ops_reduce.Sum.apply(_tensor(x), axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False) -> Tensor:
    """Mean over axis (None: all)."""
    return ops_reduce.Mean.apply(_tensor(x), axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - the contract's name
    """Maximum over axis (None: all); ties share the gradient."""
    return ops_reduce.Max.apply(_tensor(x), axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False) -> Tensor:
    """Population variance (ddof=0, as np.var) over axis."""
    return ops_reduce.Var.apply(_tensor(x), axis=axis, keepdims=keepdims)


# ---- shapes and indexing --------------------------------------------------------
def reshape(x, shape) -> Tensor:
    """Same elements, new shape (one entry may be -1)."""
    x = _tensor(x)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
    known = math.prod(n for n in shape if n != -1)
    free = shape.count(-1)
    if free > 1 or any(n < -1 for n in shape) or (free and (known == 0 or x.size % known)) or (not free and known != x.size):
        raise ValueError(f"reshape: cannot reshape shape {x.shape} into {shape}")
    target = tuple(x.size // known if n == -1 else n for n in shape)
    return ops_shape.Reshape.apply(x, shape=target)


def transpose(x, axes=None) -> Tensor:
    """Permute axes (None reverses them)."""
    x = _tensor(x)
    if axes is not None:
        axes = tuple(int(a) % x.ndim if -x.ndim <= a < x.ndim else a for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes={axes} is not a permutation of the {x.ndim} axes of shape {x.shape}")
    return ops_shape.Transpose.apply(x, axes=axes)


def _index_part(p):
    """One index entry as NumPy expects it (Tensors and lists become arrays)."""
    if isinstance(p, Tensor):
        return p.data
    if isinstance(p, list):
        return np.asarray(p)
    return p


def getitem(x, index) -> Tensor:
    """x[index]: basic indices, integer arrays (repeats accumulate) and boolean masks."""
    index = tuple(_index_part(p) for p in index) if isinstance(index, tuple) else _index_part(index)
    return ops_shape.GetItem.apply(_tensor(x), index=index)


def concat(xs, axis=0) -> Tensor:
    """Join tensors along an existing axis."""
    if len(xs) == 0:
        raise ValueError("concat: xs is empty")
    return ops_shape.Concat.apply(*_tensors(*xs), axis=axis)


def stack(xs, axis=0) -> Tensor:
    """Join same-shape tensors along a new axis."""
    if len(xs) == 0:
        raise ValueError("stack: xs is empty")
    return ops_shape.Stack.apply(*_tensors(*xs), axis=axis)


def pad(x, pad_width, value=0.0) -> Tensor:
    """Constant padding; pad_width as np.pad (int, (before, after), or one pair per axis)."""
    x = _tensor(x)
    try:
        widths = np.broadcast_to(np.asarray(pad_width), (x.ndim, 2))
    except ValueError:
        raise ValueError(f"pad: pad_width={pad_width!r} does not fit an input of {x.ndim} dimensions") from None
    if widths.dtype.kind not in "iu" or np.any(widths < 0):
        raise ValueError(f"pad: pad_width={pad_width!r} must hold non-negative integers")
    return ops_shape.Pad.apply(x, pad_width=tuple(map(tuple, widths.tolist())), value=value)


def roll(x, shift, axis=None) -> Tensor:
    """Circular shift as np.roll (SARDFQ jitter)."""
    shift = tuple(int(s) for s in shift) if isinstance(shift, (tuple, list)) else int(shift)
    axis = tuple(axis) if isinstance(axis, list) else axis
    return ops_shape.Roll.apply(_tensor(x), shift=shift, axis=axis)


def flip(x, axis=None) -> Tensor:
    """Reverse the order of elements along axis (SARDFQ horizontal flip)."""
    axis = tuple(axis) if isinstance(axis, list) else axis
    return ops_shape.Flip.apply(_tensor(x), axis=axis)


# ---- activations, softmax, norms -----------------------------------------------
def relu(x) -> Tensor:
    """max(x, 0)."""
    return ops_nn.Relu.apply(_tensor(x))


def gelu(x) -> Tensor:
    """Exact (erf) GELU."""
    return ops_nn.Gelu.apply(_tensor(x))


def silu(x) -> Tensor:
    """x * sigmoid(x)."""
    return ops_nn.Silu.apply(_tensor(x))


def tanh(x) -> Tensor:
    """Hyperbolic tangent."""
    return ops_nn.Tanh.apply(_tensor(x))


def sigmoid(x) -> Tensor:
    """1 / (1 + e^-x)."""
    return ops_nn.Sigmoid.apply(_tensor(x))


def softmax(x, axis=-1) -> Tensor:
    """Softmax along axis."""
    return ops_nn.Softmax.apply(_tensor(x), axis=axis)


def log_softmax(x, axis=-1) -> Tensor:
    """log(softmax(x)) along axis, computed stably."""
    return ops_nn.LogSoftmax.apply(_tensor(x), axis=axis)


def _norm_param(p, default: float, x: Tensor, name: str) -> Tensor:
    """A [D] scale/shift parameter of a norm over x's last axis (None -> a constant `default`)."""
    if p is None:
        return Tensor(np.full(x.shape[-1:], default, dtype=x.dtype))
    p = _tensor(p, x.dtype)
    if p.shape != x.shape[-1:]:
        raise ValueError(f"{name} has shape {p.shape}, expected {x.shape[-1:]} (the last axis of x)")
    return p


def layer_norm(x, weight, bias, eps=1e-5) -> Tensor:
    """LayerNorm over the last axis (weight/bias may be None)."""
    x = _tensor(x)
    if x.ndim == 0:
        raise ValueError("layer_norm: x is a scalar")
    w, b = _norm_param(weight, 1.0, x, "layer_norm: weight"), _norm_param(bias, 0.0, x, "layer_norm: bias")
    return ops_nn.LayerNorm.apply(x, w, b, eps=eps)


def rms_norm(x, weight, eps=1e-5) -> Tensor:
    """RMSNorm over the last axis (weight may be None)."""
    x = _tensor(x)
    if x.ndim == 0:
        raise ValueError("rms_norm: x is a scalar")
    return ops_nn.RMSNorm.apply(x, _norm_param(weight, 1.0, x, "rms_norm: weight"), eps=eps)


# ---- convolution, pooling, resampling ---------------------------------------------
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """2-D convolution, NCHW: x [B, C, H, W], w [O, C/groups, kh, kw] -> [B, O, Ho, Wo]."""
    x, w = _tensors(x, w)
    b = None if b is None else _tensor(b, w.dtype)
    stride, padding, dilation = ops_conv.check_conv2d(x.shape, w.shape, None if b is None else b.shape,
                                                      stride, padding, dilation, groups)
    inputs = (x, w) if b is None else (x, w, b)
    return ops_conv.Conv2d.apply(*inputs, stride=stride, padding=padding, dilation=dilation, groups=int(groups))


def _pool_args(kernel, stride, padding) -> tuple:
    """Validated (kernel, stride, padding) pairs; stride defaults to the kernel."""
    kernel = ops_conv.pair(kernel, "kernel", 1)
    stride = kernel if stride is None else ops_conv.pair(stride, "stride", 1)
    return kernel, stride, ops_conv.pair(padding, "padding", 0)


def max_pool2d(x, kernel, stride=None, padding=0) -> Tensor:
    """Max pooling over kernel windows of [B, C, H, W] (padding counts as -inf)."""
    kernel, stride, padding = _pool_args(kernel, stride, padding)
    return ops_pool.MaxPool2d.apply(_tensor(x), kernel=kernel, stride=stride, padding=padding)


def avg_pool2d(x, kernel, stride=None, padding=0) -> Tensor:
    """Average pooling over kernel windows of [B, C, H, W] (zero padding counted)."""
    kernel, stride, padding = _pool_args(kernel, stride, padding)
    return ops_pool.AvgPool2d.apply(_tensor(x), kernel=kernel, stride=stride, padding=padding)


def resize_bilinear(x, size) -> Tensor:
    """Bilinear resize of [B, C, H, W] to [B, C, h, w] (align_corners=False, PyTorch semantics)."""
    x = _tensor(x)
    if x.ndim != 4:
        raise ValueError(f"resize_bilinear: x has shape {x.shape}, expected [B, C, H, W]")
    return ops_resize.ResizeBilinear.apply(x, size=ops_conv.pair(size, "size", 1))


def crop_and_resize(x, boxes, batch_index, size) -> Tensor:
    """Bilinear crops of boxes [R, 4] (x0, y0, x1, y1; pixel edges) of x [B, C, H, W] -> [R, C, h, w]."""
    x = _tensor(x)
    boxes = np.asarray(boxes.data if isinstance(boxes, Tensor) else boxes, dtype=np.float64)
    batch_index = np.asarray(batch_index.data if isinstance(batch_index, Tensor) else batch_index)
    ops_resize.check_boxes(x.shape, boxes, batch_index)
    return ops_resize.CropAndResize.apply(x, boxes=boxes, batch_index=batch_index, size=ops_conv.pair(size, "size", 1))


# ---- losses -----------------------------------------------------------------
def cross_entropy(logits, target) -> Tensor:
    """Mean softmax cross-entropy of logits [N, C] (any leading dims) vs int labels [N] or probabilities [N, C]."""
    logits = _tensor(logits)
    target = ops_loss.check_target(logits.shape, logits.dtype, target.data if isinstance(target, Tensor) else target)
    return ops_loss.CrossEntropy.apply(logits, target=target)


def mse(a, b) -> Tensor:
    """Mean squared error mean((a - b)^2) (broadcasting)."""
    return ops_loss.MSE.apply(*_tensors(a, b))


OPS = {f.__name__: f for f in (
    add, sub, mul, div, neg, pow, exp, log, sqrt, abs, clip, maximum, minimum, where,
    matmul, linear, embedding, sum, mean, max, var,
    reshape, transpose, getitem, concat, stack, pad, roll, flip,
    relu, gelu, silu, tanh, sigmoid, softmax, log_softmax, layer_norm, rms_norm,
    conv2d, max_pool2d, avg_pool2d, resize_bilinear, crop_and_resize,
    cross_entropy, mse,
)}
