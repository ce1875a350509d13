"""The hook protocol every refq model calls for the layers that quantization may replace.

A model's forward takes an `ops` object and asks it for each such layer by name, with the float
weights from the model's parameter dict:

    ops.linear(name, x, w, b=None)                 x [..., I], w [O, I]            -> [..., O]
    ops.qk(name, q, k)                             q, k [B, H, N, Dh]              -> scores [B, H, N, N]
    ops.av(name, a, v)                             a [B, H, N, N], v [B, H, N, Dh] -> [B, H, N, Dh]
    ops.conv(name, x, w, b, stride, padding, dilation)   x [B, C, H, W], w [O, C, kh, kw] -> [B, O, Ho, Wo]

`ModelOps` is the full-precision implementation (`FLOAT_OPS`). Quantized models subclass it and
override what they quantize: SARDFQ's `QuantOps` (linear, qk, av of the ViT), ASER's `QuantizedOps`
(linear of LLaMA and BERT), the spotter's `Int8ConvOps` (conv). Recording hooks for calibration
subclass it the same way. The ViT calls linear, qk and av; LLaMA and BERT call linear; the spotter
calls conv. Names are the checkpoint's own ("blocks.3.attn.qkv", "layers.2.wq", "backbone.conv1").

References: Dosovitskiy et al., ICLR 2021, Sec. 3.1 (ViT layers); Touvron et al., "LLaMA", 2023, Sec. 2.2;
Devlin et al., "BERT", NAACL 2019, Sec. 3.
"""
from __future__ import annotations

from refq.autograd import functional as F


class ModelOps:
    """Full-precision layers; quantized and recording hooks subclass this and override some of them."""

    def linear(self, name: str, x, w, b=None):
        return F.linear(x, w, b)  # [..., I] x [O, I] -> [..., O]

    def qk(self, name: str, q, k):
        return F.matmul(q, F.transpose(k, (0, 1, 3, 2)))  # [B, H, N, Dh] x [B, H, Dh, N] -> [B, H, N, N]

    def av(self, name: str, a, v):
        return F.matmul(a, v)  # [B, H, N, N] x [B, H, N, Dh] -> [B, H, N, Dh]

    def conv(self, name: str, x, w, b, stride=1, padding=0, dilation=1):
        return F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)  # [B, C, H, W] -> [B, O, Ho, Wo]


FLOAT_OPS = ModelOps()
