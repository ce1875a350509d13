"""RTN: round-to-nearest per-output-channel symmetric weights, per-token activations (docs/aser.md, A2).

    s_i       = max_j |W[i, j]| / (2^(b-1) - 1)                    one scale per output channel (row)
    Q(W)[i,j] = s_i * clip(round(W[i, j] / s_i), -2^(b-1), 2^(b-1) - 1)
    y         = Q_A(x) @ Q(W).T + b                                 Q_A per token (refq.aser.qlinear)

The range fitting and rounding are refq.quant's (`fit_minmax` + `quantize`); an all-zero row gets scale 1
and codes 0, so zeroed (extracted) columns stay exactly 0. `quantize_weight` is the Q_W every other method
builds on (smoothed W for SmoothQuant, W_n for ASER, the base under LoRC / L2QER).

References: docs/aser.md, A2 (quantizers); SmoothQuant's per-channel absmax weight quantizer
(Xiao et al., ICML 2023, Sec. 5.1 "per-channel" / "per-token" settings).
"""
from __future__ import annotations

import numpy as np

from refq.aser.qlinear import QuantizedLinear
from refq.aser.settings import QuantSettings
from refq.aser.types import LayerStats
from refq.quant.ranges import fit_minmax
from refq.quant.uniform import quantize


def check_weight(w, fn: str) -> np.ndarray:
    """W as a float64 [O, I] array; ValueError naming a bad type, shape or non-finite values."""
    if not isinstance(w, np.ndarray) or w.ndim != 2 or not np.issubdtype(w.dtype, np.floating) or 0 in w.shape:
        kind = f"{w.dtype} {w.shape}" if isinstance(w, np.ndarray) else type(w).__name__
        raise ValueError(f"{fn}: W is {kind}, expected a non-empty 2-D float array [O, I]")
    if not np.isfinite(w).all():
        raise ValueError(f"{fn}: W has {int((~np.isfinite(w)).sum())} non-finite values")
    return w.astype(np.float64)


def check_stats(stats, d_in: int, fn: str) -> LayerStats:
    """The calibration statistics of this layer's input; ValueError if missing or of the wrong width."""
    if not isinstance(stats, LayerStats):
        raise ValueError(f"{fn}: stats is a {type(stats).__name__}, expected LayerStats")
    if stats.d_in != d_in or stats.count == 0:
        raise ValueError(f"{fn}: stats cover {stats.d_in} channels over {stats.count} tokens; the layer has "
                         f"{d_in} inputs and needs at least one calibration token")
    return stats


def quantize_weight(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [O, I], scales float32 [O]) of per-output-channel symmetric absmax RTN."""
    params = fit_minmax(w, bits, symmetric=True, granularity="channel", axis=0)  # scale [O, 1]
    return quantize(w, params), params.scale.reshape(-1).astype(np.float32)


def dequantize_weight(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float64 [O, I] reconstruction scale[:, None] * codes."""
    return codes.astype(np.float64) * scale.astype(np.float64)[:, None]


def rtn(w: np.ndarray, stats: LayerStats, settings: QuantSettings, group_colmax=None) -> QuantizedLinear:
    """Plain RTN weights, per-token activations, nothing else (stats unused beyond validation)."""
    w = check_weight(w, "rtn")
    check_stats(stats, w.shape[1], "rtn")
    codes, scale = quantize_weight(w, settings.wbits)
    return QuantizedLinear("rtn", codes, scale, settings.wbits, settings.abits)
