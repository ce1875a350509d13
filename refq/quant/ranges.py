"""Range fitting for the uniform quantizer: min/max, percentile, and percentile search minimising MSE.

Every fitter reshapes x into rows, one row per quantization block (the whole tensor, one channel, one
token, or one group; refq.quant.params lists the layouts), computes a range [lo, hi] per row and turns
it into (scale, zero):

    symmetric:   scale = max(|lo|, |hi|) / (2^(b-1) - 1),   zero = 0                    (docs/aser.md, A2)
    asymmetric:  scale = (hi - lo) / (2^b - 1),  zero = round(-lo / scale) - 2^(b-1)    (I&S-ViT)

lo <= 0 <= hi is enforced first (as in GPTQ's find_params), so the zero point is a valid code and 0.0
is exact. A block with no nonzero value gets scale 1 (any positive scale reconstructs zeros exactly);
other scales are floored at the smallest normal float32 so that they stay finite and positive.

* `fit_minmax`     lo, hi = min(x), max(x)                              (absmax for symmetric)
* `fit_percentile` lo, hi = quantile(x, 1 - pct), quantile(x, pct)      (quantile(|x|, pct) for symmetric)
* `fit_mse`        per block, the pct among `percentiles` whose quantizer has the smallest
                   mean((x - x_hat)^2); pct = 1.0 (min/max) is always a candidate, so its MSE never
                   exceeds fit_minmax's. I&S-ViT's candidate lists are WEIGHT_PERCENTILES and
                   ACTIVATION_PERCENTILES.

References: Zhong et al., "I&S-ViT", arXiv:2311.10126 (percentile-MSE initialisation, candidate percentiles;
docs/sardfq.md, S5); docs/aser.md, A2 (per-channel symmetric weights, per-token dynamic activations); Frantar et al., "GPTQ",
ICLR 2023 (min/max range with 0 enforced inside it).
"""
from __future__ import annotations

import numpy as np

from refq.quant.params import QParams, normalize_axis, qmax, qmin, scale_shape, validate_bits, validate_float_array
from refq.quant.uniform import dequantize_array, quantize_array

WEIGHT_PERCENTILES = (0.97, 0.98, 0.99, 0.995, 0.9995, 0.9997, 0.9999, 0.99995, 0.99999, 1.0)
ACTIVATION_PERCENTILES = (0.999, 0.9999, 0.99999, 1.0)
SCALE_FLOOR = np.float32(np.finfo(np.float32).tiny)


def fit_minmax(x: np.ndarray, bits: int, *, symmetric: bool = True, granularity: str = "tensor",
               axis: int | None = None, group_size: int | None = None) -> QParams:
    """QParams covering the full range of every block of x."""
    return _fit_one(x, bits, 1.0, symmetric, granularity, axis, group_size, "fit_minmax")


def fit_percentile(x: np.ndarray, bits: int, pct: float, *, symmetric: bool = True, granularity: str = "tensor",
                   axis: int | None = None, group_size: int | None = None) -> QParams:
    """QParams covering the central `pct` fraction (0.5 <= pct <= 1) of every block of x."""
    return _fit_one(x, bits, pct, symmetric, granularity, axis, group_size, "fit_percentile")


def fit_mse(x: np.ndarray, bits: int, *, symmetric: bool = True, granularity: str = "tensor",
            axis: int | None = None, group_size: int | None = None,
            percentiles: tuple = WEIGHT_PERCENTILES) -> QParams:
    """QParams whose per-block percentile (1.0 always included) minimises the reconstruction MSE."""
    fn = "fit_mse"
    bits, rows, layout = _prepare(x, bits, granularity, axis, group_size, fn)
    if not isinstance(percentiles, (tuple, list)) or len(percentiles) == 0:
        raise ValueError(f"{fn}: percentiles={percentiles!r}, expected a non-empty tuple of fractions")
    candidates = tuple(sorted({_check_pct(p, "percentiles entry", fn) for p in percentiles} | {1.0}))
    lo, hi = _row_ranges(rows, candidates, symmetric)  # [P, M] each
    exact = rows.astype(np.float64)  # [M, K]
    best_mse = np.full(rows.shape[0], np.inf)  # [M]
    best_scale = np.zeros(rows.shape[0], np.float32)  # [M]
    best_zero = np.zeros(rows.shape[0], np.int32)  # [M]
    for p in range(len(candidates)):
        scale, zero = _scale_zero(lo[p], hi[p], bits, symmetric)  # [M] each
        q = quantize_array(rows, scale[:, None], zero[:, None], bits)  # [M, K] int8
        x_hat = dequantize_array(q, scale[:, None], zero[:, None])  # [M, K] float32
        mse = np.mean((x_hat - exact) ** 2, axis=1)  # [M]
        better = mse < best_mse  # [M], strict: ties keep the smaller percentile
        best_mse = np.where(better, mse, best_mse)
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
    return _pack(best_scale, best_zero, bits, symmetric, layout)


def _fit_one(x, bits, pct, symmetric, granularity, axis, group_size, fn) -> QParams:
    """QParams from the quantile-`pct` range of every block (pct = 1.0 is min/max)."""
    bits, rows, layout = _prepare(x, bits, granularity, axis, group_size, fn)
    pct = _check_pct(pct, "pct", fn)
    lo, hi = _row_ranges(rows, (pct,), symmetric)  # [1, M] each
    scale, zero = _scale_zero(lo[0], hi[0], bits, symmetric)  # [M] each
    return _pack(scale, zero, bits, symmetric, layout)


def _prepare(x, bits, granularity, axis, group_size, fn):
    """Validate the inputs; return (bits, rows [M, K], layout) with one row per quantization block."""
    bits = validate_bits(bits, fn)
    validate_float_array(x, "x", fn)
    target = scale_shape(x.shape, granularity, axis, group_size, fn)
    a = None if axis is None else normalize_axis(axis, x.ndim, fn)
    if x.size == 0:
        raise ValueError(f"{fn}: x has shape {x.shape} with no elements; there is no range to fit")
    if granularity == "tensor":
        rows = x.reshape(1, -1)  # [S...] -> [1, K]
    elif granularity == "channel":
        rows = np.moveaxis(x, a, 0).reshape(x.shape[a], -1)  # [S...] -> [C, K]
    elif granularity == "token":
        rows = x.reshape(-1, x.shape[-1])  # [S..., D] -> [M, D]
    else:
        rows = np.moveaxis(x, a, -1).reshape(-1, group_size)  # [S..., n] -> [M, g]
    layout = (granularity, a, group_size, target, x.shape)
    return bits, rows, layout


def _pack(scale, zero, bits, symmetric, layout) -> QParams:
    """Reshape per-row scale/zero [M] into the layout's scale shape and build the QParams."""
    granularity, a, group_size, target, shape = layout
    if granularity == "group":
        moved = tuple(n for i, n in enumerate(shape) if i != a) + (shape[a] // group_size,)
        scale = np.moveaxis(scale.reshape(moved), -1, a)  # [M] -> [.., S[a]/g, ..]
        zero = np.moveaxis(zero.reshape(moved), -1, a)  # [M] -> [.., S[a]/g, ..]
    scale = scale.reshape(target).astype(np.float32)
    zero = zero.reshape(target).astype(np.int32)
    return QParams(scale, zero, bits, a, bool(symmetric), granularity, group_size)


def _check_pct(pct, name: str, fn: str) -> float:
    if isinstance(pct, bool) or not isinstance(pct, (int, float, np.floating)) or not 0.5 <= pct <= 1.0:
        raise ValueError(f"{fn}: {name}={pct!r}, expected a fraction in [0.5, 1.0] (e.g. 0.999)")
    return float(pct)


def _row_ranges(rows: np.ndarray, pcts: tuple, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-candidate, per-row range [lo, hi] in float64, with lo <= 0 <= hi: [P, M] each."""
    rows64 = rows.astype(np.float64)  # [M, K]
    if symmetric:
        amax = np.quantile(np.abs(rows64), pcts, axis=1)  # [P, M]
        return -amax, amax
    hi = np.quantile(rows64, pcts, axis=1)  # [P, M]
    lo = np.quantile(rows64, [1.0 - p for p in pcts], axis=1)  # [P, M]
    return np.minimum(lo, 0.0), np.maximum(hi, 0.0)


def _scale_zero(lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """float32 scales and int32 zero points of ranges [lo, hi] (lo <= 0 <= hi): [M] each."""
    if symmetric:
        scale = np.maximum(-lo, hi) / qmax(bits)  # [M]
    else:
        scale = (hi - lo) / ((1 << bits) - 1)  # [M]
    scale = np.where(hi - lo > 0, scale, 1.0).astype(np.float32)  # all-zero block -> scale 1
    scale = np.maximum(scale, SCALE_FLOOR)  # scales too small for float32 -> smallest normal float32
    if symmetric:
        return scale, np.zeros(scale.shape, np.int32)
    z_unsigned = np.clip(np.round(-lo / scale.astype(np.float64)), 0, (1 << bits) - 1)  # [M] in [0, 2^b-1]
    return scale, (z_unsigned + qmin(bits)).astype(np.int32)
