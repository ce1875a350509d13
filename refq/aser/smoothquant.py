"""SmoothQuant baseline: migrate activation outliers into the weights, then plain RTN (Xiao et al., ICML 2023).

    s_j = max(a_j^alpha / w_j^(1-alpha), 1e-5),   a_j = max_t |x_tj|,  w_j = max_i |W_ij|   (refq.aser.smoothing)
    y   = Q_A(x / s) @ Q_W(W diag(s)).T + b

Scope (settings.smooth_scope, resolved by refq.aser.apply): "shared", the reference recipe, computes w_j
over every linear fed by the same norm (q/k/v; w1/w3) so that 1/s folds into the norm's gain, and leaves the
layers without a preceding norm (wo, w2) unsmoothed (settings.smooth = False there); "layer" smooths every
linear with its own s, applied online. No outlier extraction, no low-rank branch.

References: Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models", ICML 2023, Eq. 4 and Sec. 4.
"""
from __future__ import annotations

import numpy as np

from refq.aser.qlinear import QuantizedLinear
from refq.aser.rtn import check_stats, check_weight, quantize_weight
from refq.aser.settings import QuantSettings
from refq.aser.smoothing import smooth_weight, smoothing_factors, weight_column_absmax
from refq.aser.types import LayerStats


def smoothquant(w: np.ndarray, stats: LayerStats, settings: QuantSettings,
                group_colmax: np.ndarray | None = None) -> QuantizedLinear:
    """Smoothing factors from absmax statistics (group_colmax: shared w_j), then RTN of W diag(s)."""
    w = check_weight(w, "smoothquant")
    check_stats(stats, w.shape[1], "smoothquant")
    if not settings.smooth:
        codes, scale = quantize_weight(w, settings.wbits)
        return QuantizedLinear("smoothquant", codes, scale, settings.wbits, settings.abits)
    colmax = weight_column_absmax(w) if group_colmax is None else group_colmax  # [I]
    m = smoothing_factors(stats.absmax, colmax, settings.alpha)  # [I]
    codes, scale = quantize_weight(smooth_weight(w, m), settings.wbits)
    return QuantizedLinear("smoothquant", codes, scale, settings.wbits, settings.abits, smooth=m.astype(np.float32))
