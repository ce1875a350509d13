"""The quantized linear layer all three papers run on: integer codes, one integer GEMM, one float epilogue.

    y[m, n] = s_x[m] s_w[n] sum_k (q_x[m, k] - z_x)(q_w[n, k] - z_w[n]) + bias[n]   (+ x L_B^T L_A^T)

* weights: per-output-channel codes q_w [N, K] (int8; within the int4 range when wbits <= 4, and then
  packed two per byte), scales s_w [N] float32, zero points z_w [N] (None: symmetric, z_w = 0). They
  are packed once, when the layer is built, into the layout of the GEMM kernel this CPU runs
  (refq.kernels.dispatch.PackedWeights).
* activations, one of
    `PerToken(bits)`: dynamic symmetric absmax per row, z_x = 0, s_x[m] = max_k |x[m, k]| / (2^(b-1) - 1)
                      (refq.kernels.quantize_per_token; ASER's Q_A, SmoothQuant's per-token activations);
    `Static(scale, zero, bits)`: one per-tensor asymmetric quantizer fitted on calibration data
                      (SARDFQ / I&S-ViT's activation quantizers), s_x[m] = scale, z_x = zero;
  or codes the caller made itself (`forward_codes`, e.g. the spotter's per-image codes unfolded by im2col).
* an optional float low-rank branch L_A [N, r], L_B [r, K] (ASER's error reconstruction), applied to
  the float input or to its fake-quantized values (`lr_input_quantized`).

The zero points are expanded, exactly, around one kernel GEMM (Jacob et al. 2018, eq. 7-8):

    sum_k (q_x - z_x)(q_w - z_w) = (q_x q_w^T)[m, n] - z_w[n] rowsum(q_x)[m] - z_x rowsum(q_w)[n] + K z_x z_w[n]

`forward` is the fast path: codes in one pass, the packed GEMM, and the corrections fused with the
epilogue in one Numba pass (`zero_point_dequant`). `forward_reference` is the plain definition in
NumPy: int64 sums of the centred codes, the epilogue in float64, rounded once to float32. The two agree
bit for bit (tests/quant/test_qlinear.py).

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, Sec. 2.2-2.3, eq. (7)-(8); Xiao et al., "SmoothQuant", ICML 2023, Sec. 2 (per-token
activations); Nagel et al., arXiv:2106.08295, Sec. 2.2-2.3 (per-channel weights, per-tensor activations).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refq.kernels import PackedWeights, gemm_packed, pack_int4, pack_int8, quantize_per_token
from refq.kernels.epilogue import _zero_point_dequant, _zero_point_dequant_parallel
from refq.kernels.fake_quant import quantize_rows_f32
from refq.kernels.int8_gemm import THREADS_MIN_OUTPUTS
from refq.quant.int4 import pack_int4 as pack_nibbles
from refq.quant.params import QParams
from refq.quant.uniform import quantize

K_MAX_ZERO_POINTS = (2**31 - 1) // (255 * 255)  # 33025: largest K whose centred int32 sum cannot overflow


@dataclass(frozen=True)
class PerToken:
    """Dynamic symmetric per-row activation codes of `bits` bits."""

    bits: int = 8


@dataclass(frozen=True)
class Static:
    """A fitted per-tensor activation quantizer: x ~ scale (q - zero), q in [-2^(b-1), 2^(b-1) - 1]."""

    scale: float
    zero: int
    bits: int = 8


@dataclass(frozen=True, eq=False)
class QLinear:
    """One quantized linear layer [N, K]: weight codes, scales, zero points, activation quantizer, bias, low rank."""

    codes: np.ndarray  # int8 [N, K]
    scale: np.ndarray  # float32 [N]
    wbits: int
    act: PerToken | Static | None  # None: the caller passes codes (forward_codes)
    zero: np.ndarray | None = None  # int [N]; None = symmetric
    bias: np.ndarray | None = None  # float32 [N]
    la: np.ndarray | None = None  # float32 [N, r]
    lb: np.ndarray | None = None  # float32 [r, K]
    lr_input_quantized: bool = False
    packed: PackedWeights = field(init=False, repr=False)
    row_sums: np.ndarray = field(init=False, repr=False)  # int64 [N]: sum_k q_w[n, k]

    def __post_init__(self):
        fn = "QLinear"
        if not isinstance(self.codes, np.ndarray) or self.codes.dtype != np.int8 or self.codes.ndim != 2:
            raise ValueError(f"{fn}: codes must be a 2-D int8 array, got {getattr(self.codes, 'dtype', None)}")
        n, k = self.codes.shape
        if isinstance(self.wbits, bool) or not isinstance(self.wbits, int) or not 2 <= self.wbits <= 8:
            raise ValueError(f"{fn}: wbits={self.wbits!r}, expected an int in 2..8")
        lo, hi = -(1 << (self.wbits - 1)), (1 << (self.wbits - 1)) - 1
        if self.codes.size and (self.codes.min() < lo or self.codes.max() > hi):
            raise ValueError(f"{fn}: codes in [{self.codes.min()}, {self.codes.max()}] exceed wbits={self.wbits}")
        _check_f32(self.scale, (n,), "scale", fn, positive=True)
        if self.bias is not None:
            _check_f32(self.bias, (n,), "bias", fn)
        if self.zero is not None:
            zero = np.asarray(self.zero).reshape(-1)
            if zero.shape != (n,) or zero.size and (zero.min() < -128 or zero.max() > 127):
                raise ValueError(f"{fn}: zero must be {n} int8-range zero points, got shape {zero.shape}")
            object.__setattr__(self, "zero", zero.astype(np.int32))
        if (self.zero is not None or isinstance(self.act, Static)) and k > K_MAX_ZERO_POINTS:
            raise ValueError(f"{fn}: K={k} with zero points can overflow the int32 sum (K <= {K_MAX_ZERO_POINTS})")
        if not (self.act is None or isinstance(self.act, (PerToken, Static))):
            raise ValueError(f"{fn}: act is a {type(self.act).__name__}, expected PerToken, Static or None")
        if (self.la is None) != (self.lb is None):
            raise ValueError(f"{fn}: la and lb come together (got la {self.la is not None}, lb {self.lb is not None})")
        if self.la is not None:
            r = self.la.shape[1] if self.la.ndim == 2 else -1
            _check_f32(self.la, (n, r), "la", fn)
            _check_f32(self.lb, (r, k), "lb", fn)
        packed = pack_int4(pack_nibbles(self.codes), k) if self.wbits <= 4 else pack_int8(self.codes)
        object.__setattr__(self, "packed", packed)
        object.__setattr__(self, "row_sums", self.codes.sum(axis=1, dtype=np.int64))

    d_out = property(lambda self: self.codes.shape[0])
    d_in = property(lambda self: self.codes.shape[1])

    def w_hat(self) -> np.ndarray:
        """Dequantized weight s_w[n] (q_w[n, k] - z_w[n]), float32 [N, K]."""
        centred = self.codes.astype(np.float32) - (0 if self.zero is None else self.zero[:, None])  # [N, K]
        return centred * self.scale[:, None]


def _check_f32(x, shape: tuple, name: str, fn: str, positive: bool = False) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != shape:
        kind = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{fn}: {name} is {kind}, expected float32 {shape}")
    if positive and not (np.isfinite(x) & (x > 0)).all():
        raise ValueError(f"{fn}: {name} must be finite and > 0 (min {x.min()})")


def _check_x(layer: QLinear, x, fn: str) -> np.ndarray:
    if not isinstance(layer, QLinear):
        raise ValueError(f"{fn}: layer is a {type(layer).__name__}, expected QLinear")
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != layer.d_in:
        kind = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{fn}: x is {kind}, expected a 2-D [M, {layer.d_in}] float array")
    return np.ascontiguousarray(x, dtype=np.float32)


# ---- activation codes ----------------------------------------------------------------------------------

def quantize_input(layer: QLinear, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(codes int8 [M, K], scales float32 [M], zero point z_x) of x [M, K] under the layer's activation quantizer."""
    x = _check_x(layer, x, "quantize_input")
    act = layer.act
    if isinstance(act, PerToken):
        q, s = quantize_per_token(x, act.bits)  # [M, K] int8, [M]
        return q, s, 0
    if isinstance(act, Static):
        lo, hi = -(1 << (act.bits - 1)), (1 << (act.bits - 1)) - 1
        q, _, bad = quantize_rows_f32(x, act.scale, act.zero, lo, hi)  # [M, K] int8
        if bad:  # non-finite input: the plain quantizer raises the error that names it
            quantize(x, QParams(np.float32(act.scale), np.int32(act.zero), act.bits, symmetric=False))
        return q, np.full(x.shape[0], act.scale, np.float32), int(act.zero)
    raise ValueError("quantize_input: the layer has act=None; pass codes to forward_codes instead")


def fake_quant_input(layer: QLinear, x: np.ndarray) -> np.ndarray:
    """x_hat = s_x (q_x - z_x), float32 [M, K]: the values the integer GEMM multiplies."""
    q, s, z = quantize_input(layer, x)
    return (q.astype(np.float32) - np.float32(z)) * s[:, None]  # [M, K]


def lowrank_branch(layer: QLinear, x: np.ndarray) -> np.ndarray | None:
    """(x or x_hat) @ L_B^T @ L_A^T, float32 [M, N]; None without a branch."""
    if layer.la is None:
        return None
    lr_in = fake_quant_input(layer, x) if layer.lr_input_quantized else np.asarray(x, np.float32)  # [M, K]
    return (lr_in @ layer.lb.T) @ layer.la.T  # [M, K] -> [M, r] -> [M, N]


# ---- the fast path -------------------------------------------------------------------------------------

def zero_point_dequant(raw: np.ndarray, q_x: np.ndarray, z_x: int, layer: QLinear, s_x: np.ndarray,
                       bias: np.ndarray | None = None) -> np.ndarray:
    """float32 [M, N] = s_x[m] s_w[n] (raw - z_w[n] rowsum(q_x)[m] - z_x rowsum(q_w)[n] + K z_x z_w[n]) + bias[n].

    raw: int32 [M, N] = q_x q_w^T (the kernel GEMM). The bracket is the exact centred sum; the rest is
    the float64 epilogue rounded once to float32; both fused into one pass over [M, N]. `bias`
    (float32 [N]) is the layer's own unless given.
    """
    n, k = layer.codes.shape
    zw = np.zeros(n, np.int32) if layer.zero is None else layer.zero  # [N]
    row_x = q_x.sum(axis=1, dtype=np.int64).astype(np.int32) if layer.zero is not None else np.zeros(len(q_x), np.int32)
    col = (k * np.int64(z_x) * zw.astype(np.int64) - np.int64(z_x) * layer.row_sums).astype(np.int32)  # [N], wraps
    out = np.empty(raw.shape, np.float32)  # [M, N]
    bias = layer.bias if bias is None else bias
    has_bias = bias is not None
    args = (raw, row_x, zw, col, np.asarray(s_x, np.float32), layer.scale, bias if has_bias else layer.scale,
            has_bias, out)
    if raw.size >= THREADS_MIN_OUTPUTS:
        _zero_point_dequant_parallel(*args)
    else:
        _zero_point_dequant(*args, 0, raw.shape[0])
    return out


def forward_codes(layer: QLinear, q_x: np.ndarray, s_x: np.ndarray, z_x: int = 0, bias=None) -> np.ndarray:
    """y [M, N] float32 from activation codes q_x int8 [M, K], their scales s_x [M] and zero point z_x (no low rank);
    `bias` (float32 [N]) replaces the layer's own when given."""
    raw = gemm_packed(q_x, layer.packed)  # [M, K] x packed [N, K] -> [M, N] int32
    return zero_point_dequant(raw, q_x, z_x, layer, s_x, bias)


def forward(layer: QLinear, x: np.ndarray, lowrank_x: np.ndarray | None = None) -> np.ndarray:
    """The integer path: y [M, N] float32 of x [M, K]; the low-rank branch reads `lowrank_x` (default x)."""
    x = _check_x(layer, x, "forward")
    q, s, z = quantize_input(layer, x)  # [M, K] int8, [M], z_x
    y = forward_codes(layer, q, s, z)  # [M, N]
    branch = lowrank_branch(layer, x if lowrank_x is None else lowrank_x)
    return y if branch is None else y + branch


# ---- the plain definition ------------------------------------------------------------------------------

def forward_codes_reference(layer: QLinear, q_x: np.ndarray, s_x: np.ndarray, z_x: int = 0, bias=None) -> np.ndarray:
    """NumPy twin of forward_codes: int64 sum of the centred codes, float64 epilogue, one rounding to float32."""
    bias = layer.bias if bias is None else bias
    zw = 0 if layer.zero is None else layer.zero.astype(np.int64)[:, None]
    acc = (q_x.astype(np.int64) - z_x) @ (layer.codes.astype(np.int64) - zw).T  # [M, K] @ [K, N] -> [M, N]
    y = acc.astype(np.float64) * np.asarray(s_x, np.float64)[:, None] * layer.scale.astype(np.float64)[None, :]
    if bias is not None:
        y = y + bias.astype(np.float64)[None, :]
    return y.astype(np.float32)


def forward_reference(layer: QLinear, x: np.ndarray, lowrank_x: np.ndarray | None = None) -> np.ndarray:
    """NumPy twin of forward (same codes, plain integer sums)."""
    x = _check_x(layer, x, "forward_reference")
    q, s, z = quantize_input(layer, x)
    y = forward_codes_reference(layer, q, s, z)
    branch = lowrank_branch(layer, x if lowrank_x is None else lowrank_x)
    return y if branch is None else y + branch


def forward_sim(layer: QLinear, x: np.ndarray, lowrank_x: np.ndarray | None = None) -> np.ndarray:
    """Fake-quant simulation in float32: x_hat @ W_hat^T + bias (+ low rank); agrees with `forward` up to rounding."""
    x = _check_x(layer, x, "forward_sim")
    y = fake_quant_input(layer, x) @ layer.w_hat().T  # [M, K] @ [K, N] -> [M, N]
    if layer.bias is not None:
        y = y + layer.bias
    branch = lowrank_branch(layer, x if lowrank_x is None else lowrank_x)
    return y if branch is None else y + branch
