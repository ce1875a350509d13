"""Activation smoothing and outlier extraction (ASER's Activation Smoothing).

Per linear layer, from the FP calibration statistics of its input x [N, I] and its weight W [O, I]:

    a_j = max_t |x_tj|,   w_j = max_i |W_ij|               (both clamped to >= 1e-5)          step 1
    m_j = max(a_j^alpha / w_j^(1-alpha), 1e-5)             SmoothQuant's migration factor      step 2
    X_s = X / m,   W_s = W diag(m)                          W_s X_s = W X: function-preserving
    O   = top-f channels by a_j * w_j                       "large in both weight and activation" step 3
    W_n = W_s with the columns in O set to 0,  W_o = W_s - W_n                                  step 4

Identity behind step 3: after smoothing, max_i |W_s[i, j]| = (a_j w_j)^alpha and max_t |X_s[t, j]| =
(a_j w_j)^(1-alpha), so ranking by a_j w_j, by the smoothed weight's column max or by the smoothed
activation's max gives the same set O. Extracting O stops those columns from inflating the per-row weight
scales of Q_W(W_n); W_o is not quantized and joins the quantization error E = W_s - Q_W(W_n) = W_o +
(W_n - Q_W(W_n)) that the whitened low-rank branch reconstructs (refq.aser.aser).

`shared` smoothing: linears fed by the same normalisation (q/k/v; w1/w3) can share one m, computed with
w_j = the column max over all of them, and then m folds into the norm's gain (as SmoothQuant's LLaMA recipe does);
`weight_column_absmax` takes several weights for that.

References: Xiao et al., "SmoothQuant", ICML 2023, Eq. 4 (s_j = max|X_j|^alpha / max|W_j|^(1-alpha));
Zhao et al., ASER, AAAI 2025 (outlier extraction; fewer than 1% of channels dominate the error, Fig. 4);
docs/aser.md, A4 (the SmoothQuant form of m, the a_j * w_j score, f).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLAMP = 1e-5


def weight_column_absmax(*weights: np.ndarray) -> np.ndarray:
    """w_j = max over the rows of all given weights [O_k, I] of |W_ij|, float64 [I]."""
    if not weights or len({w.shape[1] for w in weights}) != 1:
        raise ValueError(f"weight_column_absmax: weights {[w.shape for w in weights]} must share the input width")
    return np.max([np.abs(w.astype(np.float64)).max(axis=0) for w in weights], axis=0)  # [I]


def smoothing_factors(act_absmax: np.ndarray, w_colmax: np.ndarray, alpha: float) -> np.ndarray:
    """m_j = max(a_j^alpha / w_j^(1-alpha), 1e-5) with a, w clamped to >= 1e-5, float64 [I]."""
    if act_absmax.shape != w_colmax.shape or act_absmax.ndim != 1:
        raise ValueError(f"smoothing_factors: act_absmax {act_absmax.shape} and w_colmax {w_colmax.shape} "
                         "must be vectors of the same length")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing_factors: alpha={alpha!r}, expected a value in [0, 1]")
    a = np.maximum(act_absmax.astype(np.float64), CLAMP)  # [I]
    w = np.maximum(w_colmax.astype(np.float64), CLAMP)  # [I]
    return np.maximum(a ** alpha / w ** (1.0 - alpha), CLAMP)  # [I]


def select_outliers(act_absmax: np.ndarray, w_colmax: np.ndarray, f: int) -> np.ndarray:
    """The f channels with the largest a_j * w_j (ties: lower index first), sorted, int64 [f]."""
    if isinstance(f, bool) or not isinstance(f, (int, np.integer)) or not 0 <= f <= act_absmax.shape[0]:
        raise ValueError(f"select_outliers: f={f!r}, expected an int in 0..{act_absmax.shape[0]}")
    score = act_absmax.astype(np.float64) * w_colmax.astype(np.float64)  # [I]
    return np.sort(np.argsort(-score, kind="stable")[:f]).astype(np.int64)


@dataclass(frozen=True, eq=False)
class SmoothSplit:
    """The smoothed weight and its split: W_s = W_n + W_o (float64 [O, I]), m [I], outlier channels O [f]."""

    m: np.ndarray
    outliers: np.ndarray
    w_s: np.ndarray
    w_n: np.ndarray

    @property
    def w_o(self) -> np.ndarray:
        """The extracted outlier columns W_o = W_s - W_n (float64 [O, I])."""
        return self.w_s - self.w_n  # [O, I], nonzero only in the columns O


def smooth_weight(w: np.ndarray, m: np.ndarray) -> np.ndarray:
    """W_s = W diag(m): column j scaled by m_j (float64 [O, I])."""
    return w.astype(np.float64) * m[None, :]  # [O, I] * [1, I]


def smooth_inputs(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """X_s = X diag(m)^-1 for token rows x [N, I] (dtype of x)."""
    return x / m.astype(x.dtype)[None, :]  # [N, I] / [1, I]


def smooth_gram(h: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Gram of the smoothed inputs: X_s^T X_s = M^-1 H M^-1, float64 [I, I]."""
    return h / np.outer(m, m)  # [I, I] / [I, I]


def smooth_and_extract(w: np.ndarray, act_absmax: np.ndarray, alpha: float, f: int,
                       w_colmax: np.ndarray | None = None) -> SmoothSplit:
    """Steps 1-4 above for one layer; w_colmax overrides W's own column max (shared smoothing)."""
    w = w.astype(np.float64)
    own = weight_column_absmax(w)  # [I]
    m = smoothing_factors(act_absmax, own if w_colmax is None else w_colmax, alpha)  # [I]
    outliers = select_outliers(act_absmax, own, f)  # [f], always by this layer's own weight
    w_s = smooth_weight(w, m)  # [O, I]
    w_n = w_s.copy()
    w_n[:, outliers] = 0.0  # extracted: handled by the float low-rank branch, never quantized
    return SmoothSplit(m, outliers, w_s, w_n)
