"""The quantized linear layer every method produces, and its two forward passes.

    x_s = x / m                                                    smoothing (m = 1 when absent)
    y   = Q_A(x_s [outlier channels zeroed if masked]) @ Q_W(W_n).T      the integer GEMM
        + (x_s or Q_A(x_s)) @ L_B.T @ L_A.T                         the float low-rank branch
        + b                                                         ASER's forward, docs/aser.md A5

* Q_W: per-output-channel symmetric codes, W_hat[i, :] = w_scale[i] * w_codes[i, :] (int8 codes; at 4
  bits they lie in [-8, 7] and the integer path packs them two per byte along K).
* Q_A: per-token dynamic symmetric absmax, x_hat[t, :] = s_t * q[t, :], s_t = max_j |x[t, j]| / (2^(b-1) - 1)
  (refq.kernels.quantize_act); abits=None keeps activations in float (W-only quantization).

`forward_sim` is the fake-quantization simulation: float32 x_hat @ W_hat.T. `forward_int` is what an
integer engine runs, on the shared floor refq.quant.qlinear (this layer as a `QLinear` with per-token
activations, weights packed once): int8 activation codes x int8 (or packed int4) weight codes -> int32
on the Numba GEMMs, then the epilogue C * s_t * w_scale[i]; both add the same float low-rank branch and
agree up to float32 rounding of the dot products (the integer sums are exact, the float ones are not).

References: docs/aser.md, A2 (W per-channel, A per-token) and A5 (the float low-rank branch); ASER, AAAI
2025 (the LoRA-style branch beside the quantized product);
Jacob et al., CVPR 2018, Sec. 2.2 (integer matmul + rescale); Dettmers et al., "LLM.int8()", NeurIPS 2022
(outlier channels removed from the quantized product, mask_outlier_acts).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class QuantizedLinear:
    """One quantized linear layer [O, I]: weight codes and scales, smoothing, outliers, low-rank factors."""

    method: str
    w_codes: np.ndarray  # int8 [O, I]
    w_scale: np.ndarray  # float32 [O]
    wbits: int
    abits: int | None  # None: float activations
    smooth: np.ndarray | None = None  # float32 [I]: x_s = x / smooth
    outliers: np.ndarray = None  # int64 [f]: input channels extracted from W_n (zero columns of w_codes)
    la: np.ndarray | None = None  # float32 [O, r]
    lb: np.ndarray | None = None  # float32 [r, I], applied to x_s
    mask_outlier_acts: bool = False
    lr_input_quantized: bool = False
    _int: object = field(default=None, init=False, repr=False)  # its refq.quant.qlinear.QLinear (integer path)

    def __post_init__(self):
        fn = "QuantizedLinear"
        if not isinstance(self.w_codes, np.ndarray) or self.w_codes.dtype != np.int8 or self.w_codes.ndim != 2:
            raise ValueError(f"{fn}: w_codes must be a 2-D int8 array, got {getattr(self.w_codes, 'dtype', None)}")
        o, i = self.w_codes.shape
        lo, hi = -(1 << (self.wbits - 1)), (1 << (self.wbits - 1)) - 1
        if self.w_codes.size and (self.w_codes.min() < lo or self.w_codes.max() > hi):
            raise ValueError(f"{fn}: codes in [{self.w_codes.min()}, {self.w_codes.max()}] exceed wbits={self.wbits}")
        _check_vec(self.w_scale, (o,), "w_scale", fn)
        if self.smooth is not None:
            _check_vec(self.smooth, (i,), "smooth", fn)
        outliers = np.zeros(0, np.int64) if self.outliers is None else np.asarray(self.outliers, np.int64)
        if outliers.size and (outliers.min() < 0 or outliers.max() >= i or np.unique(outliers).size != outliers.size):
            raise ValueError(f"{fn}: outliers {outliers.tolist()} must be distinct channels in 0..{i - 1}")
        object.__setattr__(self, "outliers", outliers)
        if (self.la is None) != (self.lb is None):
            raise ValueError(f"{fn}: la and lb come together (got la {self.la is not None}, lb {self.lb is not None})")
        if self.la is not None:
            r = self.la.shape[1] if self.la.ndim == 2 else -1
            for name, x, shape in (("la", self.la, (o, r)), ("lb", self.lb, (r, i))):
                if x.dtype != np.float32 or x.shape != shape:
                    raise ValueError(f"{fn}: {name} is {x.dtype} {x.shape}, expected float32 {shape}")

    d_out = property(lambda self: self.w_codes.shape[0])
    d_in = property(lambda self: self.w_codes.shape[1])
    rank = property(lambda self: 0 if self.la is None else self.la.shape[1])

    def w_hat(self) -> np.ndarray:
        """Dequantized weight W_hat = w_scale[:, None] * w_codes, float32 [O, I] (acts on x_s)."""
        return self.w_codes.astype(np.float32) * self.w_scale[:, None]  # [O, I]

    def effective_weight(self) -> np.ndarray:
        """float64 [O, I] matrix the layer applies to x when activations are not quantized: (W_hat + L_A L_B) / m."""
        w = self.w_hat().astype(np.float64)  # [O, I]
        if self.la is not None:
            w = w + self.la.astype(np.float64) @ self.lb.astype(np.float64)  # [O, r] @ [r, I]
        return w if self.smooth is None else w / self.smooth.astype(np.float64)[None, :]

    def int_layer(self):
        """This layer on the shared integer floor (refq.quant.qlinear.QLinear, weights packed once), built on first use."""
        from refq.quant.qlinear import PerToken, QLinear

        if self._int is None:
            layer = QLinear(self.w_codes, self.w_scale, self.wbits, PerToken(self.abits), la=self.la, lb=self.lb,
                            lr_input_quantized=self.lr_input_quantized)
            object.__setattr__(self, "_int", layer)
        return self._int

    def lowrank_params(self) -> int:
        """Extra float parameters r (d_in + d_out) of the low-rank branch."""
        return self.rank * (self.d_in + self.d_out)


def _check_vec(x, shape: tuple, name: str, fn: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != shape:
        kind = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{fn}: {name} is {kind}, expected float32 {shape}")
    if not (np.isfinite(x) & (x > 0)).all():
        raise ValueError(f"{fn}: {name} must be finite and > 0 (min {x.min()})")


def _check_input(layer: QuantizedLinear, x, bias, fn: str) -> np.ndarray:
    if not isinstance(layer, QuantizedLinear):
        raise ValueError(f"{fn}: layer is a {type(layer).__name__}, expected QuantizedLinear")
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != layer.d_in:
        kind = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{fn}: x is {kind}, expected a 2-D [N, {layer.d_in}] float array")
    if bias is not None and (not isinstance(bias, np.ndarray) or bias.shape != (layer.d_out,)):
        raise ValueError(f"{fn}: bias has shape {getattr(bias, 'shape', None)}, expected ({layer.d_out},)")
    return x.astype(np.float32, copy=False)


def _branch_inputs(layer: QuantizedLinear, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x_s, input of the quantized GEMM): smoothed, and with the outlier channels zeroed if masked."""
    xs = x if layer.smooth is None else x / layer.smooth[None, :]  # [N, I]
    if layer.mask_outlier_acts and layer.outliers.size:
        xq = xs.copy()
        xq[:, layer.outliers] = 0.0  # legal: those columns of W_n are zero
        return xs, xq
    return xs, xs


def fake_quant_tokens(x: np.ndarray, bits: int | None) -> np.ndarray:
    """Q_A(x) = s_t * q[t, :] per token (float32 [N, I]); identity when bits is None."""
    from refq.kernels.quantize_act import quantize_per_token_ref

    if bits is None:
        return x
    q, s = quantize_per_token_ref(np.ascontiguousarray(x, dtype=np.float32), bits)  # [N, I] int8, [N]
    return q.astype(np.float32) * s[:, None]  # [N, I]


def lowrank_branch(layer: QuantizedLinear, xs: np.ndarray) -> np.ndarray:
    """(x_s or Q_A(x_s)) @ L_B.T @ L_A.T, float32 [N, O] (zeros without a branch)."""
    if layer.la is None:
        return np.zeros((xs.shape[0], layer.d_out), np.float32)
    lr_in = fake_quant_tokens(xs, layer.abits) if layer.lr_input_quantized else xs  # [N, I]
    return (lr_in @ layer.lb.T) @ layer.la.T  # [N, I] -> [N, r] -> [N, O]


def forward_sim(layer: QuantizedLinear, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Fake-quant simulation: Q_A(x_s) @ W_hat.T + low-rank branch (+ bias), float32 [N, O]."""
    x = _check_input(layer, x, bias, "forward_sim")
    xs, xq = _branch_inputs(layer, x)
    y = fake_quant_tokens(xq, layer.abits) @ layer.w_hat().T + lowrank_branch(layer, xs)  # [N, O]
    return y if bias is None else y + bias.astype(np.float32)


def forward_int(layer: QuantizedLinear, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Integer path on refq.quant.qlinear: per-token codes of x_s (outliers masked) x the weight codes, + low rank."""
    from refq.quant import qlinear

    x = _check_input(layer, x, bias, "forward_int")
    if layer.abits is None:
        raise ValueError("forward_int: abits=None (float activations) has no integer path; use forward_sim")
    xs, xq = _branch_inputs(layer, x)
    y = qlinear.forward(layer.int_layer(), np.ascontiguousarray(xq), lowrank_x=xs)  # [N, O] float32
    return y if bias is None else y + bias.astype(np.float32)
