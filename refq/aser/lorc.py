"""LoRC (ZeroQuant-V2): a rank-r correction of the weight quantization error by its plain SVD (Yao et al., 2023).

    E = W - Q_W(W),   U diag(sigma) V^T = svd(E)
    L_A = U_r diag(sqrt(sigma_r)),  L_B = diag(sqrt(sigma_r)) V_r^T      (the symmetric split of LoRC)
    y = Q_A(x) @ Q_W(W).T + (x @ L_B.T) @ L_A.T + b

The SVD ignores the activations: it minimises ||E - L||_F, not the output error ||(E - L) X||_F that ASER's
whitened SVD minimises. Factors stay in float (ZeroQuant-V2 optionally quantizes them to 8 bits).

References: Yao et al., "ZeroQuant-V2: Exploring Post-training Quantization in LLMs from Comprehensive Study
to Low Rank Compensation", arXiv:2303.08302, Sec. 5 (LoRC).
"""
from __future__ import annotations

import numpy as np

from refq.aser.gptq import quantize_base
from refq.aser.qlinear import QuantizedLinear
from refq.aser.rtn import check_stats, check_weight, dequantize_weight
from refq.aser.settings import QuantSettings
from refq.aser.types import LayerStats
from refq.aser.whiten_svd import choose_rank


def lorc(w: np.ndarray, stats: LayerStats, settings: QuantSettings, group_colmax=None) -> QuantizedLinear:
    """Base quantizer + plain truncated SVD of its error."""
    w = check_weight(w, "lorc")
    check_stats(stats, w.shape[1], "lorc")
    codes, scale = quantize_base(w, stats.gram, settings)
    e = w - dequantize_weight(codes, scale)  # [O, I] quantization error
    u, sigma, vt = np.linalg.svd(e, full_matrices=False)  # E = U diag(sigma) V^T
    r = choose_rank(sigma, r_max=settings.rank_cap(*w.shape), **settings.rank_rule())
    if r == 0:
        return QuantizedLinear("lorc", codes, scale, settings.wbits, settings.abits)
    root = np.sqrt(sigma[:r])  # [r]
    la = (u[:, :r] * root).astype(np.float32)  # [O, r] = U_r sqrt(Sigma_r)
    lb = (root[:, None] * vt[:r]).astype(np.float32)  # [r, I] = sqrt(Sigma_r) V_r^T
    return QuantizedLinear("lorc", codes, scale, settings.wbits, settings.abits, la=la, lb=lb,
                           lr_input_quantized=settings.lr_input_quantized)
