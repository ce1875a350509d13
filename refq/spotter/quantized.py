"""int8 inference of the spotter: every convolution as an im2col GEMM on the Numba int8 kernels.

For a convolution y = W * x + b with W [O, C, kh, kw] (Jacob et al. 2018, Sec. 2):
* weights: per-output-channel symmetric int8, W ~ s_w[o] Q_w[o, :] with s_w = max|W[o]| / 127
  (`refq.quant.fit_minmax`, granularity "channel");
* activations: dynamic per-image symmetric int8 of the layer input, x ~ s_x[b] Q_x[b] with
  s_x = max|x[b]| / 127, quantized once *before* im2col (so the int8 codes, not floats, are unfolded);
* im2col of the codes: one row per output position, A [B Ho Wo, kh kw C] int8 (channels last); then
      Y[m, o] = (sum_k A[m, k] Q_w[o, k]) s_x[b(m)] s_w[o] + b[o]
  exactly what `refq.kernels.gemm_int8_dequant` computes (int32 accumulation, float32 epilogue); the
  weight codes are packed once, at quantization time, for the kernel that runs them.
Everything else (ReLU, pooling, sigmoid, resizing, text pooling, the LSTM, CTC decoding) stays float32.
`quantize_spotter` returns a params dict in which each conv weight is a `QuantizedWeight`; the model's
`conv` dispatches on it, so the whole pipeline (detection, pooling, decoding, evaluation) runs unchanged.
`conv2d_int8_reference` is the plain NumPy twin (int64 accumulation of the same codes), tested equal.

References:
    Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
    Inference", CVPR 2018, Sec. 2.2-2.4. Nagel et al., "A White Paper on Neural Network Quantization",
    arXiv:2106.08295, Sec. 2.3 (per-channel weights, per-tensor activations).
    Chellapilla et al., IWFHR 2006 (im2col).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from refq.autograd.ops_conv import out_size
from refq.kernels import PackedWeights, dequant_epilogue, gemm_packed, pack_int8
from refq.quant import fit_minmax, quantize

QMAX = 127
ACT_SCALE_FLOOR = np.float32(1e-8)


class QuantizedWeight(NamedTuple):
    """Per-output-channel int8 conv weight: codes [O, kh*kw*C] ((kh, kw, C) order), scales [O], the float shape,
    and the codes packed once for the GEMM kernel (refq.kernels.pack_int8; None: packed on each call)."""
    codes: np.ndarray
    scale: np.ndarray
    shape: tuple
    packed: PackedWeights | None = None


def quantize_weight(w: np.ndarray) -> QuantizedWeight:
    """Symmetric per-output-channel int8 codes of a conv weight [O, C, kh, kw], laid out (kh, kw, C) per row."""
    if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.ndim != 4:
        raise ValueError(f"quantize_weight: expected a float32 [O, C, kh, kw] array, got "
                         f"{getattr(w, 'dtype', type(w).__name__)} {getattr(w, 'shape', '')}")
    flat = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)  # [O, C, kh, kw] -> [O, kh*kw*C]
    qp = fit_minmax(flat, 8, symmetric=True, granularity="channel", axis=0)
    codes = quantize(flat, qp)  # int8 [O, kh*kw*C]
    return QuantizedWeight(codes, np.asarray(qp.scale, np.float32).reshape(-1), tuple(w.shape), pack_int8(codes))


def quantize_activation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image symmetric int8 codes of x [B, C, H, W] and scales [B] (float32)."""
    absmax = np.abs(x).reshape(x.shape[0], -1).max(axis=1)  # [B]
    scale = (np.maximum(absmax, ACT_SCALE_FLOOR) / np.float32(QMAX)).astype(np.float32)  # [B]
    q = np.clip(np.rint(x / scale[:, None, None, None]), -QMAX, QMAX).astype(np.int8)  # [B, C, H, W]
    return q, scale


def im2col_codes(q: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple) -> tuple:
    """Rows of int8 codes under every window: [B, C, H, W] -> ([B*Ho*Wo, kh*kw*C], (Ho, Wo)); padding reads 0.

    The codes are first made channels-last (NHWC), so every window row is copied as kh*kw runs of C
    contiguous bytes rather than gathered byte by byte.
    """
    B, C, H, W = q.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    Ho = out_size(H, kh, sh, padding[0], dh)
    Wo = out_size(W, kw, sw, padding[1], dw)
    nhwc = np.zeros((B, H + 2 * padding[0], W + 2 * padding[1], C), np.int8)  # [B, Hp, Wp, C]
    nhwc[:, padding[0]:padding[0] + H, padding[1]:padding[1] + W] = q.transpose(0, 2, 3, 1)
    sb, sy, sx, sc = nhwc.strides
    win = np.lib.stride_tricks.as_strided(nhwc, shape=(B, Ho, Wo, kh, kw, C),
                                          strides=(sb, sy * sh, sx * sw, sy * dh, sx * dw, sc), writeable=False)
    return win.reshape(B * Ho * Wo, kh * kw * C), (Ho, Wo)  # [M, K] (copy)


def _pairs(stride, padding, dilation) -> tuple:
    """(stride, padding, dilation) as (h, w) pairs."""
    as_pair = lambda v: (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))  # noqa: E731
    return as_pair(stride), as_pair(padding), as_pair(dilation)


def conv2d_int8(x: np.ndarray, qw: QuantizedWeight, bias: np.ndarray | None, stride=1, padding=0,
                dilation=1) -> np.ndarray:
    """int8 convolution of float32 x [B, C, H, W] -> float32 [B, O, Ho, Wo] through gemm_int8_dequant."""
    stride, padding, dilation = _pairs(stride, padding, dilation)
    O, C, kh, kw = qw.shape
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"conv2d_int8: x has shape {x.shape}, expected [B, {C}, H, W]")
    q, s = quantize_activation(np.asarray(x, np.float32))
    rows, (Ho, Wo) = im2col_codes(q, (kh, kw), stride, padding, dilation)  # [M, K]
    a_scale = np.repeat(s, Ho * Wo)  # [M]
    b = None if bias is None else np.asarray(bias, np.float32)
    packed = qw.packed if qw.packed is not None else pack_int8(qw.codes)
    y = dequant_epilogue(gemm_packed(rows, packed), a_scale, qw.scale, b)  # [M, K] x [O, K] -> [M, O]
    return y.reshape(x.shape[0], Ho, Wo, O).transpose(0, 3, 1, 2)  # -> [B, O, Ho, Wo]


def conv2d_int8_reference(x: np.ndarray, qw: QuantizedWeight, bias: np.ndarray | None, stride=1, padding=0,
                          dilation=1) -> np.ndarray:
    """Plain NumPy twin of `conv2d_int8`: the same codes, an int64 matrix product, the float64 epilogue."""
    stride, padding, dilation = _pairs(stride, padding, dilation)
    O = qw.shape[0]
    q, s = quantize_activation(np.asarray(x, np.float32))
    rows, (Ho, Wo) = im2col_codes(q, qw.shape[2:], stride, padding, dilation)  # [M, K]
    acc = rows.astype(np.int64) @ qw.codes.astype(np.int64).T  # [M, O]
    y = acc * np.repeat(s, Ho * Wo).astype(np.float64)[:, None] * qw.scale.astype(np.float64)[None, :]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)[None, :]
    return y.astype(np.float32).reshape(x.shape[0], Ho, Wo, O).transpose(0, 3, 1, 2)  # [B, O, Ho, Wo]


def quantize_spotter(params: dict, cfg=None) -> dict:
    """A copy of float params with every 4-D conv weight replaced by its `QuantizedWeight` (biases stay float32)."""
    out = {}
    for name, arr in params.items():
        a = np.asarray(arr)
        out[name] = quantize_weight(a) if name.endswith(".weight") and a.ndim == 4 else a
    return out


def weight_bytes(params: dict) -> int:
    """Storage of the parameters: int8 codes + float32 scales for quantized weights, float32 otherwise."""
    total = 0
    for v in params.values():
        total += v.codes.nbytes + v.scale.nbytes if isinstance(v, QuantizedWeight) else np.asarray(v).nbytes
    return int(total)
