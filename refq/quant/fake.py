"""Fake-quantization autograd ops: straight-through estimator (STE) and learned step size (LSQ).

FakeQuant (uniform quantizer with fixed QParams; used by SARDFQ's block reconstruction, docs/sardfq.md, S5):

    forward   x_hat = scale * (clip(round(x / scale) + zero, qmin, qmax) - zero)      (= uniform.fake_quantize)
    backward  dL/dx = dL/dx_hat * 1[qmin <= round(x / scale) + zero <= qmax]

  round's derivative is taken as 1 (STE), clip's as 1 where it is inactive and 0 where it saturates,
  as in the I&S-ViT quantizer (round_ste, then clamp). Forward values keep x's dtype.
  Per-tensor float32 inputs take the one-pass kernel of refq.kernels.fake_quant (same values and mask).

Log2FakeQuant (plain log2 quantizer of refq.quant.log2 for post-softmax attention):

    forward   a_hat = 2^-clip(round(-log2 a), 0, 2^b - 1)
    backward  dL/da = dL/da_hat * 1[round(-log2 a) <= 2^b - 1]       (0 where a saturates at the smallest level)

  float32 inputs take the one-pass kernel of refq.kernels.fake_quant (same values and mask).

LSQFakeQuant (Esser et al. 2020), with a learnable step size s (per tensor, or per channel along `axis`):

    v = x / s,   x_hat = round(clip(v, -Q_N, Q_P)) * s
    dx_hat/dx = 1[-Q_N < v < Q_P]
    dx_hat/ds = round(v) - v  if -Q_N < v < Q_P;   -Q_N if v <= -Q_N;   Q_P if v >= Q_P         (eq. 3)
    dL/ds = g * sum over the elements sharing s of dL/dx_hat * dx_hat/ds,   g = 1 / sqrt(N * Q_P)

  with N the number of elements sharing one step size (x.size for per-tensor). LSQ has no zero point:
  symmetric=True is the signed range Q_N = 2^(b-1), Q_P = 2^(b-1) - 1; symmetric=False is LSQ's
  unsigned range Q_N = 0, Q_P = 2^b - 1 for non-negative data (negative values clip to 0).

References: Bengio et al., "Estimating or Propagating Gradients Through Stochastic Neurons", 2013 (STE);
Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. (1)-(3) and Sec. 2.2 (gradient scale);
Bengio et al., arXiv:1308.3432, 2013 (straight-through estimator: identity through rounding, zero
gradient where the clamp saturates).
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function, Tensor
from refq.kernels.fake_quant import log2_fake_quant_f32, uniform_fake_quant_f32
from refq.quant.log2 import neg_log2, validate_probabilities
from refq.quant.params import QParams, broadcast_params, normalize_axis, validate_bits, validate_float_array
from refq.quant.uniform import compute_dtype


def fake_quant_plain(x: np.ndarray, params: QParams) -> tuple[np.ndarray, np.ndarray]:
    """(x_hat, STE mask) of uniform fake quantization in plain NumPy: the definition, any dtype and layout."""
    fn = "fake_quant"
    validate_float_array(x, "x", fn)
    scale, zero = broadcast_params(params, x.shape, fn)
    ct = compute_dtype(x)
    with np.errstate(over="ignore"):
        shifted = np.round(x.astype(ct, copy=False) / scale.astype(ct)) + zero.astype(ct)  # [...]
    mask = (shifted >= params.qmin) & (shifted <= params.qmax)  # [...] bool, clamp inactive
    q = np.clip(shifted, params.qmin, params.qmax)  # [...] integer-valued float
    x_hat = (q - zero.astype(ct)) * scale.astype(ct)  # [...] same arithmetic as dequantize
    return x_hat.astype(x.dtype), mask


def log2_fake_quant_plain(a: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(a_hat, STE mask) of log2 fake quantization in plain NumPy (float64 log2): the definition."""
    fn = "log2_fake_quant"
    bits = validate_bits(bits, fn)
    validate_probabilities(a, fn)
    shift = np.round(neg_log2(a))  # [...] float64, inf at a = 0
    mask = shift <= (1 << bits) - 1  # [...] bool, clamp inactive
    q = np.clip(shift, 0, (1 << bits) - 1)  # [...]
    return np.exp2(-q).astype(a.dtype), mask


class FakeQuant(Function):
    """Uniform fake quantization with fixed QParams; STE gradient for x."""

    def forward(self, x, params):
        if not isinstance(params, QParams):
            raise ValueError(f"fake_quant: params is a {type(params).__name__}, expected QParams")
        if x.dtype == np.float32 and params.scale.size == 1 and params.granularity == "tensor":
            x_hat, self.mask, bad = uniform_fake_quant_f32(x, params.scale.item(), params.zero.item(),
                                                           params.qmin, params.qmax)  # one pass, same values
            if not bad:
                return x_hat
        x_hat, self.mask = fake_quant_plain(x, params)  # also raises the errors for bad input
        return x_hat

    def backward(self, g):
        return (g * self.mask,)


class Log2FakeQuant(Function):
    """Plain log2 fake quantization of probabilities; STE gradient for a."""

    def forward(self, a, bits):
        bits = validate_bits(bits, "log2_fake_quant")
        if a.dtype == np.float32:
            a_hat, self.mask, bad = log2_fake_quant_f32(a, bits)  # one pass, same values
            if not bad:
                return a_hat
        a_hat, self.mask = log2_fake_quant_plain(a, bits)  # also raises the errors for bad input
        return a_hat

    def backward(self, g):
        return (g * self.mask,)


class LSQFakeQuant(Function):
    """LSQ fake quantization: gradients for x (STE) and for the step size s (eq. 3, scaled by g)."""

    def forward(self, x, scale, bits, symmetric, axis):
        fn = "lsq_fake_quant"
        validate_float_array(x, "x", fn)
        validate_float_array(scale, "scale", fn)
        q_n, q_p = lsq_bounds(validate_bits(bits, fn), symmetric)
        if x.size == 0:
            raise ValueError(f"{fn}: x has shape {x.shape} with no elements")
        s = _broadcast_scale(scale, x, axis, fn)  # [1.., C, ..1] or []
        if not (s > 0).all():
            raise ValueError(f"lsq_fake_quant: scale must be > 0, got min {scale.min()}")
        ct = np.result_type(x.dtype, scale.dtype, np.float32)
        s = s.astype(ct)
        v = x.astype(ct) / s  # [...]
        r = np.round(np.clip(v, -q_n, q_p))  # [...] integer-valued
        inside = (v > -q_n) & (v < q_p)  # [...] bool
        self.inside = inside
        self.ds = np.where(inside, r - v, np.where(v <= -q_n, -q_n, q_p)).astype(ct)  # [...] eq. (3)
        self.grad_scale = 1.0 / np.sqrt((x.size // scale.size) * q_p)  # g of LSQ Sec. 2.2
        self.reduce_axes = tuple(i for i in range(x.ndim) if axis is None or i != normalize_axis(axis, x.ndim, fn))
        self.scale_shape, self.scale_dtype, self.x_dtype = scale.shape, scale.dtype, x.dtype
        return (r * s).astype(x.dtype)

    def backward(self, g):
        gx = (g * self.inside).astype(self.x_dtype)  # [...]
        gs = np.sum(g * self.ds, axis=self.reduce_axes) * self.grad_scale  # [...] -> [C] or []
        return gx, gs.reshape(self.scale_shape).astype(self.scale_dtype)


def lsq_bounds(bits: int, symmetric: bool) -> tuple[int, int]:
    """(Q_N, Q_P) of LSQ: signed (2^(b-1), 2^(b-1) - 1) or unsigned (0, 2^b - 1)."""
    if symmetric:
        return 1 << (bits - 1), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def lsq_init_scale(x: np.ndarray, bits: int, symmetric: bool = True, axis: int | None = None) -> np.ndarray:
    """LSQ's initial step size 2 mean(|x|) / sqrt(Q_P), float32 of shape () or [C] (1 where x is all zero)."""
    fn = "lsq_init_scale"
    validate_float_array(x, "x", fn)
    _, q_p = lsq_bounds(validate_bits(bits, fn), symmetric)
    if x.size == 0:
        raise ValueError(f"{fn}: x has shape {x.shape} with no elements")
    if axis is None:
        mean_abs = np.mean(np.abs(x.astype(np.float64)))  # []
    else:
        a = normalize_axis(axis, x.ndim, fn)
        mean_abs = np.mean(np.abs(x.astype(np.float64)), axis=tuple(i for i in range(x.ndim) if i != a))  # [C]
    scale = np.where(mean_abs > 0, 2.0 * mean_abs / np.sqrt(q_p), 1.0).astype(np.float32)
    return np.maximum(scale, np.finfo(np.float32).tiny)


def fake_quant(x, params: QParams) -> Tensor:
    """Uniform fake quantization of x with fixed QParams (STE backward)."""
    return FakeQuant.apply(_as_tensor(x), params=params)


def log2_fake_quant(a, bits: int) -> Tensor:
    """Plain log2 fake quantization of probabilities a in [0, 1] (STE backward)."""
    return Log2FakeQuant.apply(_as_tensor(a), bits=bits)


def lsq_fake_quant(x, scale, bits: int, symmetric: bool = True, axis: int | None = None) -> Tensor:
    """LSQ fake quantization of x with learnable step size `scale` (shape () / (1,), or (x.shape[axis],))."""
    return LSQFakeQuant.apply(_as_tensor(x), _as_tensor(scale), bits=bits, symmetric=bool(symmetric), axis=axis)


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _broadcast_scale(scale: np.ndarray, x: np.ndarray, axis, fn: str) -> np.ndarray:
    """Step sizes reshaped to broadcast against x; ValueError when the shape does not fit `axis`."""
    if axis is None:
        if scale.size != 1 or scale.ndim > 1:
            raise ValueError(f"{fn}: per-tensor scale (axis=None) must have shape () or (1,), got {scale.shape}")
        return scale.reshape(())  # []
    a = normalize_axis(axis, x.ndim, fn)
    if scale.shape != (x.shape[a],):
        raise ValueError(f"{fn}: scale has shape {scale.shape}, expected ({x.shape[a]},) for axis={axis} of x {x.shape}")
    return scale.reshape(tuple(n if i == a else 1 for i, n in enumerate(x.shape)))  # [C] -> [1.., C, ..1]
