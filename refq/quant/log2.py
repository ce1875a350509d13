"""log2 quantizers for post-softmax attention probabilities a in [0, 1].

Plain log2 quantizer (FQ-ViT / RepQ-ViT; the default for SARDFQ, docs/sardfq.md, S5):

    q     = clip(round(-log2 a), 0, 2^b - 1)       codes, uint8 (non-negative shift amounts; 255 needs uint8)
    a_hat = 2^-q                                    float32, a power of two in [2^-(2^b-1), 1]

There is no zero level: a = 0 (and any a below about 2^-(2^b - 1/2)) maps to the smallest level
2^-(2^b - 1), so every output is a power of two and multiplying by a_hat is a right shift by q bits.
One exception comes from float32 itself: 2^-q underflows to 0.0 for q > 149, which only 8-bit codes
reach. The quantizer is monotone: a <= b implies a_hat <= b_hat. `round` is round-half-to-even in the
log domain.

Shifted log2 quantizer of I&S-ViT ("shift-uniform-log2"), per tensor:

    y = log2(a + eta),   delta = (ymax - ymin) / (2^b - 1)
    k = clip(round((y - ymin) / delta), 0, 2^b - 1)            codes, uint8
    a_hat = 2^round(k delta + ymin) - eta                        float32

`fit_log2_shifted` picks eta (with ymin, ymax = min y, max y) from a candidate list by the smallest
MSE. The I&S code uses 2^b - 1 levels at initialisation but 2^b in its forward; refq uses 2^b - 1 in
both, so codes fit in b bits. a_hat may be slightly negative at a = 0 when 2^round(log2 eta) < eta.

References: docs/sardfq.md, S5; Lin et al., "FQ-ViT", IJCAI 2022 (log2 quantization of attention maps);
Li et al., "RepQ-ViT", ICCV 2023; Zhong et al., "I&S-ViT", arXiv:2311.10126 (shift-uniform-log2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refq.quant.params import validate_bits, validate_float_array

SHIFT_ETAS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.2, 0.5, 1.0)


def validate_probabilities(a, fn: str) -> np.ndarray:
    """Return `a` unchanged, or raise ValueError unless it is a finite float array with values in [0, 1]."""
    validate_float_array(a, "a", fn)
    if a.size and (a.min() < 0 or a.max() > 1):
        raise ValueError(f"{fn}: a has values in [{a.min()}, {a.max()}], expected post-softmax values in [0, 1]")
    return a


def neg_log2(a: np.ndarray) -> np.ndarray:
    """Unrounded, unclipped float64 -log2(a) (inf at a = 0), shared by the quantizer and its STE mask."""
    with np.errstate(divide="ignore"):
        return -np.log2(a.astype(np.float64))  # [...] float64, >= 0


def log2_quantize(a: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes clip(round(-log2 a), 0, 2^b - 1) of probabilities a in [0, 1]."""
    fn = "log2_quantize"
    bits = validate_bits(bits, fn)
    validate_probabilities(a, fn)
    q = np.clip(np.round(neg_log2(a)), 0, (1 << bits) - 1)  # [...] float64, inf -> 2^b - 1
    return q.astype(np.uint8)


def log2_dequantize(q: np.ndarray, bits: int) -> np.ndarray:
    """float32 powers of two 2^-q of uint8 codes q in [0, 2^b - 1]."""
    fn = "log2_dequantize"
    bits = validate_bits(bits, fn)
    _check_codes(q, bits, fn)
    return np.ldexp(np.float32(1.0), -q.astype(np.int32)).astype(np.float32)


def log2_fake_quantize(a: np.ndarray, bits: int) -> np.ndarray:
    """log2_dequantize(log2_quantize(a)): the nearest power of two (in the log domain) of a."""
    return log2_dequantize(log2_quantize(a, bits), bits)


@dataclass(frozen=True)
class Log2ShiftParams:
    """Per-tensor parameters of the shifted log2 quantizer: shift eta and log-range [ymin, ymax]."""

    eta: float
    ymin: float
    ymax: float
    bits: int

    def __post_init__(self):
        validate_bits(self.bits, "Log2ShiftParams")
        if not (np.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"Log2ShiftParams: eta={self.eta!r}, expected a finite value > 0")
        if not (np.isfinite(self.ymin) and np.isfinite(self.ymax) and self.ymin <= self.ymax):
            raise ValueError(f"Log2ShiftParams: ymin={self.ymin!r}, ymax={self.ymax!r}, expected finite ymin <= ymax")

    @property
    def delta(self) -> float:
        """Step in the log domain; 1 for a constant tensor (ymin == ymax)."""
        width = self.ymax - self.ymin
        return width / ((1 << self.bits) - 1) if width > 0 else 1.0


def fit_log2_shifted(a: np.ndarray, bits: int, etas: tuple = SHIFT_ETAS) -> Log2ShiftParams:
    """The Log2ShiftParams among `etas` whose reconstruction of a has the smallest MSE."""
    fn = "fit_log2_shifted"
    bits = validate_bits(bits, fn)
    validate_probabilities(a, fn)
    if a.size == 0:
        raise ValueError(f"{fn}: a has shape {a.shape} with no elements; there is no range to fit")
    if not isinstance(etas, (tuple, list)) or len(etas) == 0 or not all(np.isfinite(e) and e > 0 for e in etas):
        raise ValueError(f"{fn}: etas={etas!r}, expected a non-empty tuple of positive values")
    exact = a.astype(np.float64)  # [...]
    best, best_mse = None, np.inf
    for eta in etas:
        y = np.log2(exact + eta)  # [...]
        params = Log2ShiftParams(float(eta), float(y.min()), float(y.max()), bits)
        a_hat = log2_shifted_dequantize(log2_shifted_quantize(a, params), params)  # [...] float32
        mse = float(np.mean((a_hat - exact) ** 2))
        if mse < best_mse:
            best, best_mse = params, mse
    return best


def log2_shifted_quantize(a: np.ndarray, params: Log2ShiftParams) -> np.ndarray:
    """uint8 codes k = clip(round((log2(a + eta) - ymin) / delta), 0, 2^b - 1)."""
    fn = "log2_shifted_quantize"
    _check_shift_params(params, fn)
    validate_probabilities(a, fn)
    y = np.log2(a.astype(np.float64) + params.eta)  # [...]
    k = np.clip(np.round((y - params.ymin) / params.delta), 0, (1 << params.bits) - 1)  # [...]
    return k.astype(np.uint8)


def log2_shifted_dequantize(k: np.ndarray, params: Log2ShiftParams) -> np.ndarray:
    """float32 a_hat = 2^round(k delta + ymin) - eta of uint8 codes k."""
    fn = "log2_shifted_dequantize"
    _check_shift_params(params, fn)
    _check_codes(k, params.bits, fn)
    exponent = np.round(k.astype(np.float64) * params.delta + params.ymin)  # [...] integer-valued
    return (np.exp2(exponent) - params.eta).astype(np.float32)


def _check_codes(q, bits: int, fn: str) -> None:
    if not isinstance(q, np.ndarray) or q.dtype != np.uint8:
        kind = q.dtype if isinstance(q, np.ndarray) else type(q).__name__
        raise ValueError(f"{fn}: q has dtype {kind}, expected a uint8 numpy array")
    if q.size and q.max() > (1 << bits) - 1:
        raise ValueError(f"{fn}: codes up to {q.max()} exceed 2^bits - 1 = {(1 << bits) - 1} for bits={bits}")


def _check_shift_params(params, fn: str) -> None:
    if not isinstance(params, Log2ShiftParams):
        raise ValueError(f"{fn}: params is a {type(params).__name__}, expected Log2ShiftParams")
