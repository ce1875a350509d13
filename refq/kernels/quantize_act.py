"""Fused per-token dynamic symmetric quantization of float32 activations, the A side of the int GEMMs.

For each row (token) t of X [T, D], in float32 arithmetic:

    s_t     = max(max_j |X[t, j]|, 1e-5) / qmax                 qmax = 2^(b-1) - 1 (127 for b = 8)
    Q[t, j] = clip(round(X[t, j] / s_t), -qmax, qmax)            int8 codes, round half to even

so that X ~ s_t Q[t, :]; `gemm_int8_dequant(Q, W_q, s, w_scale)` then computes the quantized linear layer.
The Numba kernel makes one pass per row for the absmax and one for the codes, rows in parallel (serially
below PARALLEL_MIN_ELEMENTS, where starting the threads costs more than the work); the NumPy
twin `quantize_per_token_ref` does the same float32 operations, so the two agree exactly.

References: aser.md §2.4 (per-token dynamic symmetric absmax quantizer q_a_tok, b in {8, 6}, scale floor
1e-5); Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models", ICML 2023, Sec. 2 (per-token activation quantization).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

SCALE_FLOOR = np.float32(1e-5)


def _check(x, bits, fn: str) -> tuple[np.ndarray, int]:
    """Validate float32 X [T, D] (finite) and bits in 2..8; return X C-contiguous and qmax."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{fn}: x has dtype {kind}, expected a float32 numpy array")
    if x.ndim != 2:
        raise ValueError(f"{fn}: x has shape {x.shape}, expected a 2-D [T, D] array")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"{fn}: bits={bits!r}, expected an int in 2..8")
    finite = np.isfinite(x)
    if not finite.all():
        raise ValueError(f"{fn}: x has {int((~finite).sum())} non-finite values (first: {x[~finite][0]})")
    return np.ascontiguousarray(x), (1 << (int(bits) - 1)) - 1


def quantize_per_token_ref(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin: (codes int8 [T, D], scales float32 [T]) with X ~ scales[:, None] * codes."""
    x, qmax = _check(x, bits, "quantize_per_token_ref")
    absmax = np.abs(x).max(axis=1, initial=np.float32(0))  # [T, D] -> [T]
    scale = np.maximum(absmax, SCALE_FLOOR) / np.float32(qmax)  # [T] float32
    q = np.clip(np.rint(x / scale[:, None]), -qmax, qmax)  # [T, D] float32, integer-valued
    return q.astype(np.int8), scale.astype(np.float32)


@njit(cache=True)
def _quantize_row(x, t, fq, q, scale):
    """Row t: absmax, scale and rounding (the float32 operations of the twin)."""
    absmax = np.float32(0.0)
    for j in range(x.shape[1]):
        absmax = max(absmax, abs(x[t, j]))
    s = max(absmax, SCALE_FLOOR) / fq
    scale[t] = s
    for j in range(x.shape[1]):
        r = np.rint(x[t, j] / s)
        q[t, j] = np.int8(min(max(r, -fq), fq))


@njit(cache=True, parallel=True)
def _quantize_parallel(x, qmax, q, scale):
    fq = np.float32(qmax)
    for t in prange(x.shape[0]):
        _quantize_row(x, t, fq, q, scale)


@njit(cache=True)
def _quantize_serial(x, qmax, q, scale):
    fq = np.float32(qmax)
    for t in range(x.shape[0]):
        _quantize_row(x, t, fq, q, scale)


PARALLEL_MIN_ELEMENTS = 1 << 18  # below this, waking the thread pool costs more than the work


def quantize_per_token(x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-token symmetric codes: float32 X [T, D] -> (int8 codes [T, D], float32 scales [T])."""
    x, qmax = _check(x, bits, "quantize_per_token")
    q = np.empty(x.shape, np.int8)  # [T, D]
    scale = np.empty(x.shape[0], np.float32)  # [T]
    kernel = _quantize_parallel if x.size >= PARALLEL_MIN_ELEMENTS else _quantize_serial
    kernel(x, qmax, q, scale)
    return q, scale
