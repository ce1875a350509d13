"""The quantized convolution: int8 codes unfolded by im2col (channels last) onto the shared quantized linear.

For a convolution y = W * x + b with W [O, C, kh, kw] (Jacob et al. 2018, Sec. 2):
* weights: per-output-channel symmetric int8, W ~ s_w[o] Q_w[o, :] with s_w = max|W[o]| / 127
  (`refq.quant.fit_minmax`, granularity "channel"), one row per output channel in (kh, kw, C) order;
  held as a `refq.quant.qlinear.QLinear`, so the codes are packed once for the GEMM kernel;
* activations: dynamic per-image symmetric int8 of the layer input, x ~ s_x[b] Q_x[b] with
  s_x = max|x[b]| / 127, quantized once *before* im2col (so the int8 codes, not floats, are unfolded);
* im2col of the codes: one row per output position, A [B Ho Wo, kh kw C] int8 (channels last); then
      Y[m, o] = (sum_k A[m, k] Q_w[o, k]) s_x[b(m)] s_w[o] + b[o]
  on the floor's integer GEMM and epilogue (`qlinear.forward_codes`).
`conv2d_reference` is the plain twin: the same codes through `qlinear.forward_codes_reference` (int64
sums, float64 epilogue); the two agree bit for bit.

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, Sec. 2.2-2.4; Nagel et al., "A White Paper on Neural Network Quantization",
arXiv:2106.08295, Sec. 2.3 (per-channel weights); Chellapilla et al., IWFHR 2006 (im2col).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refq.autograd.ops_conv import out_size
from refq.quant import qlinear
from refq.quant.ranges import fit_minmax
from refq.quant.uniform import quantize

QMAX = 127
ACT_SCALE_FLOOR = np.float32(1e-8)


@dataclass(frozen=True, eq=False)
class QConv:
    """A per-output-channel int8 conv weight [O, C, kh, kw] as a QLinear over (kh, kw, C) rows."""

    layer: qlinear.QLinear
    shape: tuple  # (O, C, kh, kw) of the float weight

    codes = property(lambda self: self.layer.codes)  # int8 [O, kh*kw*C]
    scale = property(lambda self: self.layer.scale)  # float32 [O]

    @property
    def nbytes(self) -> int:
        """Storage of the quantized weight: int8 codes + float32 scales."""
        return int(self.codes.nbytes + self.scale.nbytes)


def quantize_conv_weight(w: np.ndarray) -> QConv:
    """Symmetric per-output-channel int8 codes of a conv weight [O, C, kh, kw], laid out (kh, kw, C) per row."""
    if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.ndim != 4:
        raise ValueError(f"quantize_conv_weight: expected a float32 [O, C, kh, kw] array, got "
                         f"{getattr(w, 'dtype', type(w).__name__)} {getattr(w, 'shape', '')}")
    flat = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)  # [O, C, kh, kw] -> [O, kh*kw*C]
    qp = fit_minmax(flat, 8, symmetric=True, granularity="channel", axis=0)
    layer = qlinear.QLinear(quantize(flat, qp), np.asarray(qp.scale, np.float32).reshape(-1), 8, act=None)
    return QConv(layer, tuple(w.shape))


def quantize_per_image(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    def as_pair(v):
        return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))
    return as_pair(stride), as_pair(padding), as_pair(dilation)


def _unfold(x: np.ndarray, qc: QConv, stride, padding, dilation):
    """(im2col codes [M, K], per-row scales [M], (Ho, Wo)) of float32 x [B, C, H, W] for the conv qc."""
    O, C, kh, kw = qc.shape
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"conv2d: x has shape {getattr(x, 'shape', None)}, expected [B, {C}, H, W]")
    q, s = quantize_per_image(np.asarray(x, np.float32))
    rows, (Ho, Wo) = im2col_codes(q, (kh, kw), stride, padding, dilation)  # [M, K]
    return rows, np.repeat(s, Ho * Wo), (Ho, Wo)  # scales [M]


def conv2d(x: np.ndarray, qc: QConv, bias: np.ndarray | None, stride=1, padding=0, dilation=1) -> np.ndarray:
    """int8 convolution of float32 x [B, C, H, W] -> float32 [B, O, Ho, Wo] on the floor's integer GEMM."""
    stride, padding, dilation = _pairs(stride, padding, dilation)
    rows, a_scale, (Ho, Wo) = _unfold(x, qc, stride, padding, dilation)
    b = None if bias is None else np.asarray(bias, np.float32)
    y = qlinear.forward_codes(qc.layer, rows, a_scale, bias=b)  # [M, K] x [O, K] -> [M, O]
    return y.reshape(x.shape[0], Ho, Wo, qc.shape[0]).transpose(0, 3, 1, 2)  # -> [B, O, Ho, Wo]


def conv2d_reference(x: np.ndarray, qc: QConv, bias: np.ndarray | None, stride=1, padding=0,
                     dilation=1) -> np.ndarray:
    """Plain NumPy twin of `conv2d`: the same codes, an int64 matrix product, the float64 epilogue."""
    stride, padding, dilation = _pairs(stride, padding, dilation)
    rows, a_scale, (Ho, Wo) = _unfold(x, qc, stride, padding, dilation)
    b = None if bias is None else np.asarray(bias, np.float32)
    y = qlinear.forward_codes_reference(qc.layer, rows, a_scale, bias=b)  # [M, O]
    return y.reshape(x.shape[0], Ho, Wo, qc.shape[0]).transpose(0, 3, 1, 2)  # [B, O, Ho, Wo]
