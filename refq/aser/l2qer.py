"""L2QER (LQER with activation-induced scales): the SVD of the error scaled per input channel by mean|x|
(Zhang et al., "LQER", ICML 2024, Sec. 3.2).

    s_j = max(mean_t |x_tj|, 1e-4),   s <- s / sqrt(min(s) max(s))              LQER's scale vector
    U diag(sigma) V^T = svd(E diag(s)),  E = W - Q_W(W)
    L_A = U_r diag(sigma_r),  L_B = V_r^T diag(s)^-1                             L = U_r Sigma_r V_r^T S^-1
    y = Q_A(x) @ Q_W(W).T + (x @ L_B.T) @ L_A.T + b

This is ASER's error reconstruction with the Cholesky factor S of X^T X replaced by the diagonal diag(s):
it weights channels by their typical magnitude but ignores their correlations, so its truncation is
optimal only when the inputs are uncorrelated with mean|x| proportional to rms(x). LQER averages mean_t|x|
per batch and keeps the max over batches; the one-pass statistics here average over all tokens.

References: Zhang et al., "LQER: Low-Rank Quantization Error Reconstruction for LLMs", ICML 2024, Sec. 3.2
(L2QER).
"""
from __future__ import annotations

import numpy as np

from refq.aser.gptq import quantize_base
from refq.aser.qlinear import QuantizedLinear
from refq.aser.rtn import check_stats, check_weight, dequantize_weight
from refq.aser.settings import QuantSettings
from refq.aser.types import LayerStats
from refq.aser.whiten_svd import choose_rank

SCALE_FLOOR = 1e-4


def l2qer_scales(mean_abs: np.ndarray) -> np.ndarray:
    """LQER's s: mean|x| floored at 1e-4, divided by sqrt(min(s) max(s)), float64 [I]."""
    s = np.maximum(mean_abs.astype(np.float64), SCALE_FLOOR)  # [I]
    return s / np.sqrt(s.min() * s.max())


def l2qer(w: np.ndarray, stats: LayerStats, settings: QuantSettings, group_colmax=None) -> QuantizedLinear:
    """Base quantizer + truncated SVD of the error scaled by the activations' mean magnitude."""
    w = check_weight(w, "l2qer")
    check_stats(stats, w.shape[1], "l2qer")
    codes, scale = quantize_base(w, stats.gram, settings)
    e = w - dequantize_weight(codes, scale)  # [O, I]
    s = l2qer_scales(stats.mean_abs)  # [I]
    u, sigma, vt = np.linalg.svd(e * s[None, :], full_matrices=False)  # E diag(s) = U diag(sigma) V^T
    r = choose_rank(sigma, r_max=settings.rank_cap(*w.shape), **settings.rank_rule())
    if r == 0:
        return QuantizedLinear("l2qer", codes, scale, settings.wbits, settings.abits)
    la = (u[:, :r] * sigma[:r]).astype(np.float32)  # [O, r] = U_r Sigma_r
    lb = (vt[:r] / s[None, :]).astype(np.float32)  # [r, I] = V_r^T diag(s)^-1
    return QuantizedLinear("l2qer", codes, scale, settings.wbits, settings.abits, la=la, lb=lb,
                           lr_input_quantized=settings.lr_input_quantized)
