"""GPTQ: quantize W one input column at a time and push each column's rounding error onto the columns not yet
quantized, so that the output error ||(W - Q) X||_F stays small (Frantar et al., ICLR 2023). Used as a method on its own
and as the base quantizer Q_W under ASER / LoRC / L2QER (settings.base = "gptq").

Setup, for W [O, I] and the calibration Gram H = X^T X [I, I] (float64 throughout):
  * dead inputs (H_jj = 0): H_jj <- 1 and W[:, j] <- 0;
  * damping: H <- H + damp * mean(diag H) I (damp = 0.01);
  * act-order (optional): columns in order of decreasing H_jj;
  * grid: per-row symmetric scales s_i = max_j |W_ij| / (2^(b-1) - 1) fixed up front from the full W.

`gptq_quantize_naive` is the paper's column loop with the explicit inverse (Frantar et al., Eqs. 2-3, the
OBS update restricted to the unquantized set F):
    q        = quant(w_j)
    W[:, F] -= ((w_j - q) / [H_F^-1]_jj) [H_F^-1]_{j, F}                   Eq. (2): compensate the error
    H_F^-1  <- H_F^-1 - [H_F^-1]_{:, j} [H_F^-1]_{j, :} / [H_F^-1]_jj       Eq. (3): drop j from F

`gptq_quantize` is the same computation in GPTQ's fast form (Sec. 3.3 "Cholesky reformulation" and
"lazy batch updates"): the rows [H_F^-1]_{j, F} / sqrt([H_F^-1]_jj) of the successively reduced inverses
are exactly the rows of U, the upper Cholesky factor of H^-1, so Eq. (3) is never run; and the updates are
applied inside blocks of `block` columns, the rest of W receiving one matrix product per block:
    W[:, i2:] -= Err_block @ U[i1:i2, i2:],   Err[:, j] = (w_j - q_j) / U_jj

References: Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", ICLR 2023, Sec. 3 and Algorithm 1; Hassibi & Stork, "Optimal Brain Surgeon", NIPS 1992
(the update of Eq. 2).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve, cholesky

from refq.aser.qlinear import QuantizedLinear
from refq.aser.rtn import check_stats, check_weight, quantize_weight
from refq.aser.settings import QuantSettings
from refq.aser.types import LayerStats


def _prepare(w: np.ndarray, h: np.ndarray, bits: int, damp: float, act_order: bool, fn: str):
    """(W float64 with dead columns zeroed, damped H, per-row scales [O], column order [I])."""
    w = check_weight(w, fn)
    if not isinstance(h, np.ndarray) or h.shape != (w.shape[1], w.shape[1]) or not np.isfinite(h).all():
        raise ValueError(f"{fn}: H has shape {getattr(h, 'shape', None)}, expected a finite ({w.shape[1]}, "
                         f"{w.shape[1]}) Gram for W {w.shape}")
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"{fn}: bits={bits!r}, expected an int in 2..8")
    if not damp >= 0.0:
        raise ValueError(f"{fn}: damp={damp!r}, expected >= 0")
    qmax = (1 << (bits - 1)) - 1
    scale = np.maximum(np.abs(w).max(axis=1), 0.0) / qmax  # [O], from the full W (up front)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # all-zero row -> scale 1, codes 0
    h = h.astype(np.float64).copy()
    dead = np.diag(h) == 0  # [I]
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * np.mean(np.diag(h)) * np.eye(len(h))
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(len(h))
    return w, h, scale, order


def _quant_column(col: np.ndarray, scale: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [O], dequantized float64 [O]) of one column on the fixed per-row grid."""
    q = np.clip(np.rint(col / scale), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)  # [O]
    return q.astype(np.int8), q * scale.astype(np.float64)


def gptq_quantize_naive(w: np.ndarray, h: np.ndarray, bits: int, damp: float = 0.01,
                        act_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [O, I], scales float32 [O]) by the column loop of Eqs. (2)-(3) with an explicit H^-1."""
    w, h, scale, order = _prepare(w, h, bits, damp, act_order, "gptq_quantize_naive")
    codes = np.zeros(w.shape, np.int8)
    hinv = np.linalg.inv(h)  # [I, I] = H_F^-1 with F = all columns
    for pos, j in enumerate(order):
        rest = order[pos + 1:]  # F \ {j}: the columns still to quantize
        codes[:, j], deq = _quant_column(w[:, j], scale, bits)
        err = (w[:, j] - deq) / hinv[j, j]  # [O]
        w[:, rest] -= np.outer(err, hinv[j, rest])  # Eq. (2): [O] x [|F|-1]
        hinv = hinv - np.outer(hinv[:, j], hinv[j, :]) / hinv[j, j]  # Eq. (3): row/col j become 0
    return codes, scale


def gptq_quantize(w: np.ndarray, h: np.ndarray, bits: int, damp: float = 0.01, act_order: bool = False,
                  block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [O, I], scales float32 [O]): GPTQ with the Cholesky form of H^-1 and lazy block updates."""
    w, h, scale, order = _prepare(w, h, bits, damp, act_order, "gptq_quantize")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"gptq_quantize: block={block!r}, expected a positive int")
    w = w[:, order]  # [O, I] columns in processing order
    h = h[np.ix_(order, order)]
    hinv = cho_solve(cho_factor(h, lower=True), np.eye(len(h)))  # [I, I] = H^-1 via chol(H)
    u = cholesky(hinv, lower=False)  # [I, I] upper: U^T U = H^-1; row j = [H_F^-1]_{j,F} / sqrt([H_F^-1]_jj)
    codes = np.zeros(w.shape, np.int8)
    n = w.shape[1]
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        err_block = np.zeros((w.shape[0], i2 - i1))  # [O, B]
        for i in range(i1, i2):
            codes[:, i], deq = _quant_column(w[:, i], scale, bits)
            err = (w[:, i] - deq) / u[i, i]  # [O]
            w[:, i + 1:i2] -= np.outer(err, u[i, i + 1:i2])  # Eq. (2) inside the block
            err_block[:, i - i1] = err
        w[:, i2:] -= err_block @ u[i1:i2, i2:]  # lazy update of the later blocks: [O, B] @ [B, I - i2]
    inverse = np.argsort(order)
    return codes[:, inverse], scale


def gptq(w: np.ndarray, stats: LayerStats, settings: QuantSettings, group_colmax=None) -> QuantizedLinear:
    """GPTQ weights on the calibration Gram, per-token activations, no low-rank branch."""
    w = check_weight(w, "gptq")
    check_stats(stats, w.shape[1], "gptq")
    codes, scale = gptq_quantize(w, stats.gram, settings.wbits, settings.damp, settings.act_order,
                                 settings.gptq_block)
    return QuantizedLinear("gptq", codes, scale, settings.wbits, settings.abits)


def quantize_base(w: np.ndarray, gram: np.ndarray, settings: QuantSettings) -> tuple[np.ndarray, np.ndarray]:
    """Q_W under a low-rank branch: (codes, scales) of RTN, or of GPTQ on the Gram of the layer's inputs."""
    if settings.base == "gptq":
        return gptq_quantize(w, gram, settings.wbits, settings.damp, settings.act_order, settings.gptq_block)
    return quantize_weight(w, settings.wbits)
