"""Synthesis losses of SARDFQ and of the PSAQ-ViT baseline, each a small function on refq Tensors.

* `apa_loss`   Attention Priors Alignment (SARDFQ, APA):
                 L_APA = sum_{l in S} sum_h (l / L) mean_{b, i} (A_{b,l,h}[0, patches]_i - prior_{b,l,h,i})^2
               with l 1-indexed, S the APA block set of `apa_blocks` and A the post-softmax attention
               (row 0 = class-token query, columns = patch keys, not renormalised: docs/sardfq.md, S2).
* `soft_labels`, `soft_cross_entropy`   Soft-Label learning (SARDFQ, SL; docs/sardfq.md, S4): T = softmax(Z), Z[c] ~ U(5, 10) for
               the target classes c, 0 elsewhere; L_SL = -mean_rows sum_c T(c) log softmax(logits)(c).
* `tv_loss`    PSAQ-ViT's total variation (docs/sardfq.md, S1): TV(x) = ||d1||_F + ||d2||_F + ||d3||_F + ||d4||_F over the
               whole batch (horizontal, vertical, anti-diagonal, diagonal neighbour differences), and the
               loss |TV(x) - v| with a random target v (`psaq_tv_target`), or plain TV(x) (target=None).
* `pse_loss`   PSAQ-ViT's patch-similarity entropy (PSAQ-ViT, Sec. 3), for the PSAQ baseline only: per block, the
               cosine similarities S of the head-averaged attention outputs of the patch tokens, a
               Gaussian KDE (bandwidth h) of S[b] on a 10-point grid spanning [min S, max S] (constants),
               the differential entropy H_b = trapz(-(pdf + 1e-4) log(pdf + 1e-4)); L_PSE = -sum_blocks mean_b H_b.

References: SARDFQ, arXiv:2412.16553 (APA, SL, total loss L_G = alpha1 L_APA + L_SL + 0.05 L_TV);
Li et al., "Patch Similarity Aware Data-Free Quantization for Vision Transformers" (PSAQ-ViT), ECCV 2022,
Sec. 3 (patch similarity, KDE entropy); Mahendran & Vedaldi, "Understanding Deep Image Representations by
Inverting Them", CVPR 2015 (total variation prior); docs/sardfq.md, S1, S2, S4.
"""
from __future__ import annotations

import functools
import math
import operator

import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F

APA_MODES = ("latter_half", "literal", "all")
# PSAQ-ViT's TV target v ~ U(2500, 3000) is for one batch of 32 x 3 x 224 x 224 images; refq rescales it by
# sqrt(#elements / PSAQ_ELEMENTS) (a Frobenius norm grows as the square root of the element count) (docs/sardfq.md, S7).
PSAQ_TV_RANGE = (2500.0, 3000.0)
PSAQ_ELEMENTS = 32 * 3 * 224 * 224


def _sum_terms(terms: list) -> Tensor:
    """t_0 + t_1 + ... in that order (a non-empty list of Tensors)."""
    return functools.reduce(operator.add, terms)


def apa_blocks(depth: int, mode: str = "latter_half") -> list[int]:
    """0-indexed APA blocks: 'latter_half' l = L/2+1..L (docs/sardfq.md, S2), 'literal' l = L/2..L (as written), 'all'."""
    if mode not in APA_MODES:
        raise ValueError(f"apa_blocks: mode={mode!r}, expected one of {APA_MODES}")
    if depth < 1:
        raise ValueError(f"apa_blocks: depth={depth} must be >= 1")
    first = {"latter_half": depth // 2 + 1, "literal": max(depth // 2, 1), "all": 1}[mode]  # 1-indexed
    return list(range(first - 1, depth))


def apa_loss(attns: list, priors: np.ndarray, blocks: list[int], depth: int, patch_start: int = 1,
             depth_weight: bool = True) -> Tensor:
    """Depth-weighted MSE between class-token attention to the patches and the priors [B, nL, H, P]."""
    if priors.ndim != 4 or priors.shape[1] != len(blocks):
        raise ValueError(f"apa_loss: priors have shape {priors.shape}, expected [B, {len(blocks)}, H, P]")
    terms = []
    for j, l in enumerate(blocks):
        a_cls = attns[l][:, :, 0, patch_start:]  # A^c_{l,h}: [B, H, N, N] -> [B, H, P]
        if a_cls.shape != priors[:, j].shape:
            raise ValueError(f"apa_loss: block {l} attention row has shape {a_cls.shape}, priors {priors[:, j].shape}")
        d = a_cls - priors[:, j]  # [B, H, P]
        l_lh = (d * d).mean(axis=(0, 2))  # L_{l,h} = MSE(A^c_{l,h}, prior_{l,h}): [B, H, P] -> [H]
        w_l = (l + 1) / depth if depth_weight else 1.0  # depth weight l / L (l 1-indexed)
        terms.append(l_lh.sum() * w_l)  # w_l sum_h L_{l,h}
    return _sum_terms(terms) if terms else Tensor(np.float32(0.0))  # L_APA = sum_l w_l sum_h L_{l,h}


def soft_labels(num_classes: int, targets: list, rng: np.random.Generator,
                eps: tuple = (5.0, 10.0)) -> np.ndarray:
    """Soft targets [R, C] float32: softmax(Z) with Z[c] ~ U(eps) for c in targets[r], else 0."""
    if not eps[0] <= eps[1]:
        raise ValueError(f"soft_labels: eps={eps} must satisfy eps1 <= eps2")
    z = np.zeros((len(targets), num_classes))  # [R, C]
    for r, classes in enumerate(targets):
        classes = np.asarray(classes, dtype=np.intp)
        if classes.size == 0 or classes.min() < 0 or classes.max() >= num_classes:
            raise ValueError(f"soft_labels: row {r} has targets {classes.tolist()}, expected ids in [0, {num_classes})")
        z[r, classes] = rng.uniform(eps[0], eps[1], size=classes.size)
    e = np.exp(z - z.max(axis=1, keepdims=True))  # [R, C]
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def soft_cross_entropy(logits, targets: np.ndarray, reduction: str = "mean") -> Tensor:
    """-sum_c T(c) log softmax(logits)(c) per row of logits [R, C]; 'mean' or 'sum' over rows."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"soft_cross_entropy: reduction={reduction!r}, expected 'mean' or 'sum'")
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(f"soft_cross_entropy: targets {targets.shape} do not match logits {logits.shape}")
    log_p = F.log_softmax(logits, axis=-1)  # [R, C]
    per_row = -(log_p * targets).sum(axis=-1)  # L_SL = -sum_c T(c) log softmax(f(x))(c): [R, C] -> [R]
    return per_row.mean() if reduction == "mean" else per_row.sum()


def total_variation(x) -> Tensor:
    """PSAQ TV: the sum of the Frobenius norms (over the whole batch) of the 4 neighbour differences."""
    if x.ndim != 4:
        raise ValueError(f"total_variation: x has shape {x.shape}, expected [B, C, H, W]")
    a = x[..., :-1, :-1]  # x(i, j)       [B, C, H-1, W-1]
    right = x[..., :-1, 1:]  # x(i, j+1)
    down = x[..., 1:, :-1]  # x(i+1, j)
    diag = x[..., 1:, 1:]  # x(i+1, j+1)
    d1, d2, d3, d4 = a - right, a - down, down - right, a - diag  # horizontal, vertical, anti-diagonal, diagonal
    return _sum_terms([F.sqrt((d * d).sum()) for d in (d1, d2, d3, d4)])  # TV = sum_k ||d_k||_F


def tv_loss(x, target: float | None = None) -> Tensor:
    """|TV(x) - target| (PSAQ form) or, with target=None, plain TV(x)."""
    tv = total_variation(x)
    return tv if target is None else F.abs(tv - float(target))  # L_TV = |TV(x) - v|


def psaq_tv_target(shape: tuple, rng: np.random.Generator, tv_range: tuple = PSAQ_TV_RANGE) -> float:
    """PSAQ's v ~ U(2500, 3000), rescaled from 32x3x224x224 to a batch of `shape` by sqrt(#elements ratio)."""
    return float(rng.uniform(*tv_range) * math.sqrt(math.prod(shape) / PSAQ_ELEMENTS))


def kde_entropy(samples, lo: float, hi: float, bandwidth: float = 0.01, points: int = 10) -> Tensor:
    """Row mean of trapz(-(pdf + 1e-4) log(pdf + 1e-4)), pdf a Gaussian KDE of samples [B, K] on linspace(lo, hi)."""
    if points < 2 or not bandwidth > 0:
        raise ValueError(f"kde_entropy: points={points} must be >= 2 and bandwidth={bandwidth} > 0")
    grid = np.linspace(lo, hi, points).astype(samples.dtype)  # [G] constants
    d = samples.reshape(samples.shape[0], 1, -1) - grid[None, :, None]  # [B, 1, K] - [1, G, 1] -> [B, G, K]
    kernel = F.exp(d * d * (-0.5 / bandwidth ** 2))  # exp(-(x - s)^2 / (2 h^2)): [B, G, K]
    pdf = kernel.mean(axis=-1) * (1.0 / math.sqrt(2.0 * math.pi * bandwidth ** 2))  # [B, G, K] -> [B, G]
    p = pdf + 1e-4  # [B, G]
    f = -(p * F.log(p))  # [B, G] integrand -p log p
    dx = (hi - lo) / (points - 1)
    trapz = (f[:, 1:] + f[:, :-1]) * (0.5 * dx)  # [B, G-1] trapezoids
    return trapz.sum(axis=1).mean()  # mean_b H_b


def patch_similarity(out, patch_start: int = 1) -> Tensor:
    """Cosine similarities [B, P, P] of the head-averaged attention outputs [B, H, N, Dh] of the patch tokens."""
    p = out.mean(axis=1)[:, patch_start:]  # [B, H, N, Dh] -> [B, P, Dh]
    norm = F.sqrt((p * p).sum(axis=-1, keepdims=True) + 1e-12)  # [B, P, 1]
    u = p / norm  # [B, P, Dh] unit rows
    return u @ u.transpose(0, 2, 1)  # [B, P, Dh] x [B, Dh, P] -> [B, P, P]


def pse_loss(av_outputs: list, patch_start: int = 1, bandwidth: float = 0.01, points: int = 10) -> Tensor:
    """L_PSE = -sum over blocks of the KDE entropy of the patch-similarity entries (grid from the batch min/max)."""
    if not av_outputs:
        raise ValueError("pse_loss: got no attention outputs")
    terms = []
    for out in av_outputs:
        s = patch_similarity(out, patch_start)  # [B, P, P]
        lo, hi = float(s.data.min()), float(s.data.max())
        if hi - lo < 1e-6:  # a constant similarity map: widen the grid so the KDE stays defined
            lo, hi = lo - 1e-3, hi + 1e-3
        terms.append(-kde_entropy(s.reshape(s.shape[0], -1), lo, hi, bandwidth, points))  # -H of this block
    return _sum_terms(terms)  # L_PSE = -sum_blocks H
