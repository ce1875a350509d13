"""ASER = activation smoothing (AS) followed by whitening-SVD error reconstruction (ER), for one linear layer
(ASER's two components, Activation Smoothing then Error Reconstruction):

    stats -> m -> smooth (W_s = W diag(m), X_s = X / m) -> choose O -> split W_s = W_n + W_o
          -> Q_W(W_n) -> E = W_s - Q_W(W_n) -> S_s = chol(X_s^T X_s) -> SVD(E S_s) -> L_A, L_B

    y = Q_A(x / m) @ Q_W(W_n).T + (x / m) @ L_B.T @ L_A.T + b

* AS (settings.smooth): smoothing factors and the f outlier channels of refq.aser.smoothing. The Gram of
  the smoothed inputs is M^-1 H M^-1 (`smooth_gram`), whose Cholesky factor is M^-1 chol(H).
* ER: refq.aser.whiten_svd.reconstruct on E and that Gram; E holds the quantization error of W_n *and* the
  extracted columns W_o (never quantized), so with r >= f the branch can carry the outliers exactly.
* ER-only (smooth=False): m = 1, O = {} and E = W - Q_W(W). With a fixed rank r at most r channels are
  extracted (settings.n_outliers), so AS-only (rank 0) is smoothing without extraction.
* settings.whitening = "diag" replaces the Gram by its diagonal (S = diag(sqrt(H_jj))), the ablation
  between L2QER's diagonal scaling and the full Cholesky whitening (LQER, Zhang et al., ICML 2024, Sec. 3.2).
* settings.base = "gptq" quantizes W_n with GPTQ on the smoothed Gram restricted to the kept channels, so
  that the extracted columns stay exactly zero (GPTQ would otherwise push error into them) (Frantar et al., ICLR 2023).

References: Zhao et al., "ASER: Activation Smoothing and Error Reconstruction for Large Language Model
Quantization", AAAI 2025 (Error Reconstruction, Activation Smoothing); docs/aser.md, A3-A5.
"""
from __future__ import annotations

import numpy as np

from refq.aser.gptq import quantize_base
from refq.aser.qlinear import QuantizedLinear
from refq.aser.rtn import check_stats, check_weight, dequantize_weight
from refq.aser.settings import QuantSettings
from refq.aser.smoothing import SmoothSplit, smooth_and_extract, smooth_gram
from refq.aser.types import LayerStats
from refq.aser.whiten_svd import reconstruct


def aser_split(w: np.ndarray, stats: LayerStats, settings: QuantSettings,
               group_colmax: np.ndarray | None = None) -> SmoothSplit:
    """AS: the smoothed weight split into W_n (quantized) and W_o (outlier columns); identity if smooth=False."""
    if not settings.smooth:
        ones = np.ones(w.shape[1])
        return SmoothSplit(ones, np.zeros(0, np.int64), w, w)
    return smooth_and_extract(w, stats.absmax, settings.alpha, settings.n_outliers(w.shape[1]), group_colmax)


def quantize_kept(w_n: np.ndarray, gram_s: np.ndarray, outliers: np.ndarray, settings: QuantSettings):
    """Q_W(W_n): (codes int8 [O, I], scales [O]); the outlier columns get code 0 whatever the base quantizer."""
    keep = np.setdiff1d(np.arange(w_n.shape[1]), outliers)  # [I - f]
    codes = np.zeros(w_n.shape, np.int8)
    kept_codes, scale = quantize_base(w_n[:, keep], gram_s[np.ix_(keep, keep)], settings)
    codes[:, keep] = kept_codes
    return codes, scale


def aser(w: np.ndarray, stats: LayerStats, settings: QuantSettings,
         group_colmax: np.ndarray | None = None) -> QuantizedLinear:
    """AS then ER for one layer (group_colmax: shared smoothing over a norm-fed group)."""
    w = check_weight(w, "aser")
    check_stats(stats, w.shape[1], "aser")
    split = aser_split(w, stats, settings, group_colmax)
    gram_s = smooth_gram(stats.gram, split.m)  # [I, I] = M^-1 H M^-1
    codes, scale = quantize_kept(split.w_n, gram_s, split.outliers, settings)
    e = split.w_s - dequantize_weight(codes, scale)  # [O, I] = W_o + (W_n - Q_W(W_n))
    if settings.whitening == "diag":
        gram_s = np.diag(np.diag(gram_s))  # [I, I] diagonal whitening (ablation)
    lr = reconstruct(e, gram_s, r_max=settings.rank_cap(*w.shape), **settings.rank_rule())
    smooth = split.m.astype(np.float32) if settings.smooth else None
    la, lb = (lr.la.astype(np.float32), lr.lb.astype(np.float32)) if lr.rank else (None, None)
    return QuantizedLinear("aser", codes, scale, settings.wbits, settings.abits, smooth=smooth,
                           outliers=split.outliers, la=la, lb=lb, mask_outlier_acts=settings.mask_outlier_acts,
                           lr_input_quantized=settings.lr_input_quantized)
