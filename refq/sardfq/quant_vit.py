"""The quantized ViT of SARDFQ's second stage, as a `LayerOps` subclass of refq.models.vit.

Quantizers (the I&S-ViT placement, docs/sardfq.md, S5):
* weights of every linear layer (patch embedding, qkv, proj, fc1, fc2, head): per-output-channel
  asymmetric uniform, b_w bits;
* activations at the input of every linear layer and the q, k, v operands of the two attention
  matmuls: per-tensor asymmetric uniform, b_a bits;
* post-softmax attention (operand A of A V): the plain log2 quantizer, a_hat = 2^-clip(round(-log2 a), 0, 2^b_a - 1);
* LayerNorm, softmax, GELU, residual adds stay in floating point.
The image entering the patch embedding gets its own per-tensor quantizer of `input_bits` (default 8):
I&S-ViT leaves it in float, but Fashion-MNIST and ImageNet pixels are 8-bit data, so an 8-bit code
loses (almost) nothing and lets the integer path run *every* linear layer on the integer kernels (docs/sardfq.md, S8).
input_bits=None keeps the image in float (that layer then runs in float in the integer path too).

Ranges (`init_quantizers`): percentile-MSE search (refq.quant.fit_mse, I&S candidate lists), activations
first in ONE forward of the calibration images with activation quantization on and weight quantization
off, each quantizer fitted on its input as it arrives (so it sees the already-quantized activations
before it), then the weights from the parameters.

Integer path (`ops.integer = True`, inference only). A linear layer becomes an int8 x int8 (or int8 x
packed int4 for b_w <= 4) GEMM on refq.kernels. Activations are per-tensor *asymmetric* (zero point z_x)
and weights per-channel asymmetric (z_w[n]), so the integer accumulator is expanded with row sums:

    acc[m, n] = sum_k (qx[m,k] - z_x)(qw[n,k] - z_w[n])
              = (qx qw^T)[m, n] - z_w[n] sum_k qx[m,k] - z_x sum_k qw[n,k] + K z_x z_w[n]          (exact, int64)
    y[m, n]   = s_x s_w[n] acc[m, n] + bias[n]                                                (float epilogue)

This is the exact integer value of the fake-quant product, so the two paths differ only by float32
rounding of the simulation's matmul. `integer_accumulate_ref` is the plain int64 definition it is tested
against. The attention matmuls (q k^T, A V) use the fake-quant values in both paths.
For speed, the linear layer caches each weight's codes and row sums (weights are fixed at inference)
and applies the row-sum corrections and the float epilogue in one Numba pass (`zero_point_dequant`),
which is tested bit-equal to `integer_accumulate` followed by `dequant_epilogue`.

References: SARDFQ, arXiv:2412.16553 (quantization stage); I&S-ViT, arXiv:2311.10126 (quantizer placement,
percentile-MSE init); Jacob et al., CVPR 2018, eq. (7)-(8) (zero-point expansion of an integer matmul);
Lin et al., "FQ-ViT", IJCAI 2022 (log2 attention quantizer); docs/sardfq.md, S5.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from refq.autograd import Tensor, no_grad
from refq.autograd import functional as F
from refq.kernels import gemm_int4, gemm_int8
from refq.kernels.int8_gemm import THREADS_MIN_OUTPUTS
from refq.kernels.threads import run_chunks
from refq.models import vit
from refq.quant import (ACTIVATION_PERCENTILES, WEIGHT_PERCENTILES, QParams, fake_quant, fit_mse, log2_fake_quant,
                        quantize)
from refq.quant.fake_f32 import quantize_rows_f32
from refq.quant.int4 import pack_int4

PATCH_INPUT = "patch_embed.proj.in"


class QuantOps(vit.LayerOps):
    """Fake-quantized (and optionally integer) linear layers and attention matmuls; holds the quantizer ranges."""

    def __init__(self, wbits: int, abits: int, input_bits: int | None = 8):
        for name, bits in (("wbits", wbits), ("abits", abits), ("input_bits", input_bits)):
            if bits is not None and not (isinstance(bits, int) and 2 <= bits <= 8):
                raise ValueError(f"QuantOps: {name}={bits!r}, expected an int in 2..8")
        self.wbits, self.abits, self.input_bits = wbits, abits, input_bits
        self.act: dict[str, QParams] = {}  # "<layer>.in", "<block>.attn.qk.q", ... -> per-tensor params
        self.weights: dict[str, QParams] = {}  # "<layer>" -> per-channel params
        self.quant_act = True
        self.quant_weight = True
        self.calibrating = False  # fit missing activation quantizers on the fly
        self.integer = False  # run linear layers on the integer kernels (inference only)
        self._codes: dict[str, tuple] = {}  # layer -> (weight array, int8 codes [N, K], packed or None, row sums [N])

    # ---- quantizers -------------------------------------------------------------
    def act_q(self, key: str, x):
        """Per-tensor asymmetric fake quantization of the activation `key` (fitted here while calibrating)."""
        bits = self.input_bits if key == PATCH_INPUT else self.abits
        if not self.quant_act or bits is None:
            return x
        if key not in self.act:
            if not self.calibrating:
                raise ValueError(f"QuantOps: activation quantizer {key!r} is not initialised; run init_quantizers")
            self.act[key] = fit_mse(x.data, bits, symmetric=False, granularity="tensor",
                                    percentiles=ACTIVATION_PERCENTILES)
        return fake_quant(x, self.act[key])

    def weight_q(self, name: str, w):
        """Per-channel asymmetric fake quantization of the weight of layer `name` (STE for training)."""
        if not self.quant_weight:
            return w
        if name not in self.weights:
            raise ValueError(f"QuantOps: weight quantizer {name!r} is not initialised; run init_quantizers")
        return fake_quant(w, self.weights[name])

    # ---- LayerOps -----------------------------------------------------------------
    def linear(self, name, x, w, b):
        if self.integer and self.quant_act and self.quant_weight and name + ".in" in self.act:
            return self._integer_linear(name, x, w, b)
        return F.linear(self.act_q(name + ".in", x), self.weight_q(name, w), b)  # [..., I] -> [..., O]

    def qk(self, name, q, k):
        q, k = self.act_q(name + ".q", q), self.act_q(name + ".k", k)  # [B, H, N, Dh] each
        return F.matmul(q, F.transpose(k, (0, 1, 3, 2)))  # -> [B, H, N, N]

    def av(self, name, a, v):
        a = log2_fake_quant(a, self.abits) if self.quant_act else a  # [B, H, N, N] powers of two
        return F.matmul(a, self.act_q(name + ".v", v))  # -> [B, H, N, Dh]

    def _integer_linear(self, name, x, w, b):
        """The linear layer on integer codes: exact int accumulator, then the float epilogue."""
        xa = x.data if isinstance(x, Tensor) else np.asarray(x)
        wa = w.data if isinstance(w, Tensor) else np.asarray(w)
        ba = None if b is None else np.asarray(b.data if isinstance(b, Tensor) else b, np.float32)
        ap, wp = self.act[name + ".in"], self.weights[name]
        x2 = np.ascontiguousarray(xa.reshape(-1, xa.shape[-1]), dtype=np.float32)  # [..., K] -> [M, K]
        qx, row_x, bad = quantize_rows_f32(x2, ap.scale.item(), ap.zero.item(), ap.qmin, ap.qmax)  # [M, K], [M]
        if bad:  # non-finite input: the plain quantizer raises its error
            qx = quantize(x2, ap)
            row_x = qx.sum(axis=1, dtype=np.int64)
        qw, packed, row_w = self._weight_codes(name, wa, wp)  # int8 [N, K], packed int4 or None, int64 [N]
        raw = gemm_int4(qx, packed, qx.shape[1]) if packed is not None else gemm_int8(qx, qw)  # [M, N] int32
        y = zero_point_dequant(raw, row_x, int(ap.zero), wp.zero, row_w, qx.shape[1],
                               float(ap.scale), wp.scale, ba)  # [M, N] float32
        return Tensor(y.reshape(xa.shape[:-1] + (wa.shape[0],)))  # -> [..., N]

    def _weight_codes(self, name, wa, wp):
        """Codes, packed codes (b_w <= 4) and row sums of a layer's weight, computed once per weight array."""
        cached = self._codes.get(name)
        if cached is None or cached[0] is not wa:
            qw = quantize(np.ascontiguousarray(wa, np.float32), wp)  # int8 [N, K]
            packed = pack_int4(qw) if self.wbits <= 4 else None
            cached = self._codes[name] = (wa, qw, packed, qw.sum(axis=1, dtype=np.int64))
        return cached[1:]


def integer_accumulate(qx: np.ndarray, zx: int, qw: np.ndarray, zw: np.ndarray, packed: bool = False) -> np.ndarray:
    """int32 [M, N] sum_k (qx - zx)(qw - zw[n]) from one kernel GEMM plus row-sum corrections."""
    if qx.dtype != np.int8 or qw.dtype != np.int8:
        raise ValueError(f"integer_accumulate: codes have dtypes {qx.dtype}, {qw.dtype}, expected int8")
    K = qx.shape[1]
    raw = gemm_int4(qx, pack_int4(qw), K) if packed else gemm_int8(qx, qw)  # [M, N] int32, sum qx qw
    zw = zw.astype(np.int64)  # [N]
    row_x = qx.sum(axis=1, dtype=np.int64)  # [M]
    row_w = qw.sum(axis=1, dtype=np.int64)  # [N]
    acc = raw.astype(np.int64) - row_x[:, None] * zw[None, :] - zx * row_w[None, :] + K * zx * zw[None, :]  # [M, N]
    assert np.abs(acc).max(initial=0) < 2 ** 31, "integer_accumulate: accumulator exceeds int32"
    return acc.astype(np.int32)


@njit(cache=True, nogil=True)
def _zero_point_dequant(raw, row_x, zw, col, sx, sw, bias, has_bias, out, m0, m1):
    """out[m, n] = float32(float64(raw - row_x[m] zw[n] + col[n]) sx sw[n] (+ bias[n])) for rows m0..m1.

    The bracket is computed in int32: int32 arithmetic wraps modulo 2^32, so the bracket is exact whenever
    its true value fits in int32 (the wrapper checks K for that), and int32 -> float64 conversion vectorises
    where int64 would not.
    """
    for m in range(m0, m1):
        r = row_x[m]
        for n in range(raw.shape[1]):
            acc = np.int32(np.int32(raw[m, n] - np.int32(r * zw[n])) + col[n])
            y = np.float64(acc) * sx * np.float64(sw[n])
            if has_bias:
                y = y + np.float64(bias[n])
            out[m, n] = np.float32(y)


def zero_point_dequant(raw: np.ndarray, row_x: np.ndarray, zx: int, zw: np.ndarray, row_w: np.ndarray, k: int,
                       sx: float, sw: np.ndarray, bias=None) -> np.ndarray:
    """float32 [M, N] = s_x s_w[n] (raw[m, n] - row_x[m] z_w[n] - z_x row_w[n] + K z_x z_w[n]) + bias[n].

    raw: int32 [M, N] = sum_k qx qw (the kernel GEMM); row_x [M], row_w [N]: row sums of the codes; k = K;
    the scales are float32, as in the epilogue.
    The bracket is `integer_accumulate` (exact) and the rest `dequant_epilogue` (float64, rounded once to
    float32), fused into one pass over [M, N]. The bracket equals sum_k (qx - z_x)(qw - z_w[n]), at most
    255 * 255 * K in size, so K <= 33025 keeps it in int32 (ValueError beyond).
    """
    if 255 * 255 * k >= 2 ** 31:
        raise ValueError(f"zero_point_dequant: K={k} can overflow the int32 bracket (K <= 33025)")
    out = np.empty(raw.shape, np.float32)  # [M, N]
    zw = np.asarray(zw, np.int64).reshape(-1)  # [N]
    sw = np.asarray(sw, np.float32).reshape(-1)  # [N]
    col = (k * np.int64(zx) * zw - np.int64(zx) * np.asarray(row_w, np.int64)).astype(np.int32)  # [N], wraps
    has_bias = bias is not None
    run_chunks(_zero_point_dequant, raw.shape[0], raw, np.asarray(row_x, np.int64).astype(np.int32),
               zw.astype(np.int32), col, np.float64(np.float32(sx)), sw,
               np.asarray(bias, np.float32) if has_bias else sw, has_bias, out,
               threads=None if raw.size >= THREADS_MIN_OUTPUTS else 1)
    return out


def integer_accumulate_ref(qx: np.ndarray, zx: int, qw: np.ndarray, zw: np.ndarray) -> np.ndarray:
    """Plain int64 definition sum_k (qx - zx)(qw - zw[n]), as int32 [M, N]."""
    centred_x = qx.astype(np.int64) - zx  # [M, K]
    centred_w = qw.astype(np.int64) - zw.astype(np.int64)[:, None]  # [N, K]
    return (centred_x @ centred_w.T).astype(np.int32)  # [M, N]


def linear_weights(params: dict, cfg: vit.ViTConfig) -> dict[str, np.ndarray]:
    """Every linear layer's 2-D weight [out, in], keyed by the layer name the model passes to LayerOps."""
    out = {"patch_embed.proj": params["patch_embed.proj.weight"].reshape(cfg.embed_dim, -1)}  # [D, C*p*p]
    for i in range(cfg.depth):
        for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            out[f"blocks.{i}.{layer}"] = params[f"blocks.{i}.{layer}.weight"]
    out["head"] = params["head.weight"]
    if cfg.distilled:
        out["head_dist"] = params["head_dist.weight"]
    return out


def init_quantizers(params: dict, cfg: vit.ViTConfig, ops: QuantOps, calib_x: np.ndarray) -> QuantOps:
    """Fit every quantizer: activations in one calibration forward (weights unquantized), then the weights."""
    ops.act.clear()
    ops.weights.clear()
    ops.quant_act, ops.quant_weight, ops.calibrating, ops.integer = True, False, True, False
    with no_grad():
        vit.forward(params, cfg, Tensor(np.asarray(calib_x, np.float32)), ops=ops)
    for name, w in linear_weights(params, cfg).items():
        ops.weights[name] = fit_mse(np.asarray(w, np.float32), ops.wbits, symmetric=False, granularity="channel",
                                    axis=0, percentiles=WEIGHT_PERCENTILES)
    ops.quant_weight, ops.calibrating = True, False
    return ops


def quantizer_summary(ops: QuantOps) -> list[dict]:
    """One row per quantizer: key, bits, represented range [lo, hi] (per-channel: the widest)."""
    rows = []
    for kind, table in (("act", ops.act), ("weight", ops.weights)):
        for key, p in table.items():
            lo = p.scale * (p.qmin - p.zero.astype(np.float64))
            hi = p.scale * (p.qmax - p.zero.astype(np.float64))
            rows.append({"kind": kind, "key": key, "bits": p.bits, "lo": float(np.min(lo)), "hi": float(np.max(hi))})
    return rows
