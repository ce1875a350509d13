"""Quantizers: fitted ranges (`ranges`), pure uniform quantize/dequantize (`uniform`), log2 quantizers
(`log2`) and fake-quantization autograd ops (`fake`). The code convention is documented in `params`.

Fit first, then apply:  params = fit_minmax(w, 4, granularity="channel", axis=0)
                        q = quantize(w, params)          # int8 codes
                        w_hat = dequantize(q, params)    # float32
"""
from refq.quant.fake import fake_quant, log2_fake_quant, lsq_fake_quant, lsq_init_scale
from refq.quant.log2 import (Log2ShiftParams, fit_log2_shifted, log2_dequantize, log2_fake_quantize,
                             log2_quantize, log2_shifted_dequantize, log2_shifted_quantize)
from refq.quant.params import QParams, qmax, qmin
from refq.quant.ranges import ACTIVATION_PERCENTILES, WEIGHT_PERCENTILES, fit_minmax, fit_mse, fit_percentile
from refq.quant.uniform import dequantize, fake_quantize, quantize

__all__ = [
    "ACTIVATION_PERCENTILES", "WEIGHT_PERCENTILES", "Log2ShiftParams", "QParams",
    "dequantize", "fake_quant", "fake_quantize", "fit_log2_shifted", "fit_minmax", "fit_mse", "fit_percentile",
    "log2_dequantize", "log2_fake_quant", "log2_fake_quantize", "log2_quantize", "log2_shifted_dequantize",
    "log2_shifted_quantize", "lsq_fake_quant", "lsq_init_scale", "qmax", "qmin", "quantize",
]
