"""The quantized ViT of SARDFQ's second stage, as a `refq.models.ops.ModelOps` subclass.

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

Integer path (`ops.integer = True`, inference only). Every linear layer runs on the shared integer
floor, refq.quant.qlinear: a `QLinear` with the per-channel asymmetric weight codes (z_w[n], packed once
for the GEMM kernel, int4 for b_w <= 4) and a `Static` per-tensor asymmetric activation quantizer (z_x).
The floor expands sum_k (q_x - z_x)(q_w - z_w[n]) exactly around one integer GEMM and applies the float
epilogue, so the two paths differ only by float32 rounding of the simulation's matmul. The attention
matmuls (q k^T, A V) use the fake-quant values in both paths. Layers are cached per weight array.

References: SARDFQ, arXiv:2412.16553 (quantization stage); I&S-ViT, arXiv:2311.10126 (quantizer placement,
percentile-MSE init); Jacob et al., CVPR 2018, eq. (7)-(8) (zero-point expansion of an integer matmul);
Lin et al., "FQ-ViT", IJCAI 2022 (log2 attention quantizer); docs/sardfq.md, S5.
"""
from __future__ import annotations

import numpy as np

from refq.autograd import Tensor, no_grad
from refq.autograd import functional as F
from refq.models import vit
from refq.models.ops import ModelOps
from refq.quant import (ACTIVATION_PERCENTILES, WEIGHT_PERCENTILES, QParams, fake_quant, fit_mse, log2_fake_quant,
                        qlinear, quantize)

PATCH_INPUT = "patch_embed.proj.in"


class QuantOps(ModelOps):
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
        self._codes: dict[str, tuple] = {}  # layer -> (weight array, bias array, its refq.quant.qlinear.QLinear)

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

    # ---- ModelOps hooks-------------------------------------------------------------
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
        """The linear layer on the shared integer floor (refq.quant.qlinear): exact int sums, float epilogue."""
        xa = x.data if isinstance(x, Tensor) else np.asarray(x)
        wa = w.data if isinstance(w, Tensor) else np.asarray(w)
        ba = None if b is None else np.asarray(b.data if isinstance(b, Tensor) else b, np.float32)
        layer = self._int_layer(name, wa, ba)
        x2 = np.ascontiguousarray(xa.reshape(-1, xa.shape[-1]), dtype=np.float32)  # [..., K] -> [M, K]
        y = qlinear.forward(layer, x2)  # [M, N] float32
        return Tensor(y.reshape(xa.shape[:-1] + (wa.shape[0],)))  # -> [..., N]

    def _int_layer(self, name, wa, ba) -> qlinear.QLinear:
        """The layer's QLinear (codes packed once for the kernel), rebuilt only for a new weight or bias array."""
        cached = self._codes.get(name)
        if cached is None or not (_same_array(cached[0], wa) and _same_array(cached[1], ba)):
            ap, wp = self.act[name + ".in"], self.weights[name]
            act = qlinear.Static(float(ap.scale), int(ap.zero), ap.bits)
            layer = qlinear.QLinear(quantize(np.ascontiguousarray(wa, np.float32), wp), wp.scale.reshape(-1),
                                    self.wbits, act, zero=wp.zero.reshape(-1), bias=ba)
            cached = self._codes[name] = (wa, ba, layer)
        return cached[2]


def _same_array(a, b) -> bool:
    """True for the same array, or a view of the same memory with the same layout (the patch embedding's
    weight is reshaped on every forward); the cache holds `a`, so its memory cannot have been reused."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def linear_weights(params: dict, cfg: vit.ViTConfig) -> dict[str, np.ndarray]:
    """Every linear layer's 2-D weight [out, in], keyed by the layer name the model passes to its ops."""
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
