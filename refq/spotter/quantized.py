"""int8 inference of the spotter: every convolution on the shared quantized convolution (refq.quant.qconv).

`quantize_spotter(params)` returns an `Int8ConvOps`: the model's conv hook (refq.models.ops) with a
per-output-channel int8 `QConv` for every 4-D conv weight, packed once for the GEMM kernel. Passing it
as `ops=` to the model functions (backbone, det_head, recognizer, or decode.spot_batch and the
evaluation that call them) runs every convolution on the integer kernels, with per-image int8
activations; everything else (ReLU, pooling, sigmoid, resizing, text pooling, the LSTM, CTC decoding)
stays float32 and the float parameters stay as they are.

References: Jacob et al., CVPR 2018, Sec. 2.2-2.4 (int8 convolutions with int32 accumulation);
Nagel et al., arXiv:2106.08295, Sec. 2.3 (per-channel weights, per-tensor activations).
"""
from __future__ import annotations

import numpy as np

from refq.autograd import Tensor
from refq.models.ops import ModelOps
from refq.quant.qconv import QConv, conv2d, quantize_conv_weight


class Int8ConvOps(ModelOps):
    """Conv hook that runs the quantized convolutions (inference only: no graph through the integer kernels)."""

    def __init__(self, convs: dict[str, QConv]):
        self.convs = convs

    def conv(self, name, x, w, b, stride=1, padding=0, dilation=1):
        qc = self.convs.get(name)
        if qc is None:
            return super().conv(name, x, w, b, stride, padding, dilation)
        xa = x.data if isinstance(x, Tensor) else np.asarray(x)
        ba = None if b is None else np.asarray(b.data if isinstance(b, Tensor) else b, np.float32)
        return Tensor(conv2d(xa, qc, ba, stride=stride, padding=padding, dilation=dilation))  # [B, O, Ho, Wo]


def quantize_spotter(params: dict, cfg=None) -> Int8ConvOps:
    """The int8 conv hook for a float spotter: a QConv for every 4-D conv weight `<name>.weight`."""
    convs = {}
    for key, arr in params.items():
        a = np.asarray(arr)
        if key.endswith(".weight") and a.ndim == 4:
            convs[key[: -len(".weight")]] = quantize_conv_weight(a)
    return Int8ConvOps(convs)


def weight_bytes(params: dict, ops: ModelOps | None = None) -> int:
    """Storage of the parameters: int8 codes + float32 scales for the convs `ops` quantizes, float32 otherwise."""
    convs = getattr(ops, "convs", {})
    total = 0
    for key, v in params.items():
        layer = key[: -len(".weight")] if key.endswith(".weight") else None
        total += convs[layer].nbytes if layer in convs else np.asarray(v).nbytes
    return int(total)
