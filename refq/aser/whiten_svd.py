"""ASER error reconstruction (ER): the rank-r correction L_A L_B of a weight error E that minimises the
*output* error ||(E - L_A L_B) X||_F over the calibration inputs X, by the SVD of the whitened error E S.

Notation: W, E are [O, I] (rows = outputs); the calibration inputs are rows Xr [N, I]; the
Gram ("Hessian") is H = Xr^T Xr [I, I], summed over tokens, never normalised (the truncation is scale
invariant). All of it runs in float64.

    S = chol(H), S S^T = H (lower)                                    docs/aser.md, A3
    U diag(sigma) V^T = svd(E S)                                      ASER, Error Reconstruction
    L_A = U_r diag(sigma_r),   L_B = V_r^T S^-1                       the paper's split
    ||(E - L_A L_B) X||_F = sqrt(sum_{i>r} sigma_i^2)                 why it is optimal (below)

Why: ||(E - L) X||_F^2 = tr((E - L) H (E - L)^T) = ||(E - L) S||_F^2, and L S ranges over all rank-r
matrices as L does (S is invertible), so by Eckart-Young the best L S is the truncated SVD of E S.

`reconstruct_naive` writes L_B with the explicit inverse S^-1, exactly as the equation reads; `reconstruct`
gets the same L_B by a triangular solve (S^T Z = V_r, L_B = Z^T), which is cheaper and better conditioned.
Both share `cholesky_with_fallback`: if H is not numerically positive definite (a dead input channel, fewer
tokens than channels), H is shifted by (-lambda_min + 1e-6) I as SVD-LLM does, the shift growing tenfold
until the factorisation succeeds; the shift is reported.

Rank rules (docs/aser.md, A6): a fixed rank r, or the smallest k whose share of the whitened spectrum reaches `energy`
(sum of sigma, or of sigma^2 with squared=True), clipped to [0, r_max]. `effective_rank` is Roy & Vetterli's
exp(entropy of sigma / sum(sigma)) used by the analysis plots (Eq. 3 of the paper).

References: Zhao et al., ASER, AAAI 2025 (L_A = U_r Sigma_r, L_B = V_r^T S^-1); Wang et al., "SVD-LLM:
Truncation-aware Singular Value Decomposition for LLM Compression", ICLR 2025 (Cholesky whitening and its
eigenvalue-shift fallback); Eckart & Young, Psychometrika 1936; Roy & Vetterli, "The effective rank",
EUSIPCO 2007.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, cholesky, solve_triangular

SHIFT_EPS = 1e-6  # SVD-LLM's margin above -lambda_min
MAX_SHIFT_TRIES = 8


@dataclass(frozen=True, eq=False)
class LowRank:
    """A rank-r correction L = la @ lb of an [O, I] error, with the spectrum it was cut from (float64)."""

    la: np.ndarray  # [O, r]
    lb: np.ndarray  # [r, I]
    sigma: np.ndarray  # [min(O, I)] singular values of the (whitened) error, descending
    shift: float  # diagonal shift Cholesky needed (0.0 when H was positive definite)

    @property
    def rank(self) -> int:
        """r, the number of columns of la."""
        return self.la.shape[1]

    def matrix(self) -> np.ndarray:
        """The [O, I] correction la @ lb."""
        return self.la @ self.lb  # [O, r] @ [r, I] -> [O, I]

    def tail_error(self) -> float:
        """sqrt(sum_{i>r} sigma_i^2): the output error left after this correction (exact for the whitened SVD)."""
        return float(np.sqrt(np.sum(self.sigma[self.rank:] ** 2)))


def check_error_and_gram(e, h, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """E [O, I] and H [I, I] as float64; ValueError naming a bad shape, dtype or non-finite / asymmetric H."""
    for name, x in (("E", e), ("H", h)):
        if not isinstance(x, np.ndarray) or x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
            kind = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{fn}: {name} is {kind}, expected a 2-D float array")
        if not np.isfinite(x).all():
            raise ValueError(f"{fn}: {name} has {int((~np.isfinite(x)).sum())} non-finite values")
    if h.shape != (e.shape[1], e.shape[1]):
        raise ValueError(f"{fn}: H has shape {h.shape}, expected ({e.shape[1]}, {e.shape[1]}) for E {e.shape}")
    h64 = h.astype(np.float64)
    scale = max(float(np.abs(h64).max()), 1e-300)
    if np.abs(h64 - h64.T).max() > 1e-8 * scale:
        raise ValueError(f"{fn}: H is not symmetric (max |H - H^T| = {np.abs(h64 - h64.T).max():.3g})")
    return e.astype(np.float64), h64


def cholesky_with_fallback(h: np.ndarray) -> tuple[np.ndarray, float]:
    """(S lower [I, I] float64 with S S^T = H + shift I, shift); shift = 0 when H is positive definite."""
    h = np.asarray(h, dtype=np.float64)
    try:
        return cholesky(h, lower=True), 0.0
    except LinAlgError:
        pass
    lam_min = float(np.linalg.eigvalsh(h)[0])
    eps = SHIFT_EPS
    for _ in range(MAX_SHIFT_TRIES):  # SVD-LLM: H + (-lambda_min + 1e-6) I; grow the margin if rounding bites
        shift = max(-lam_min, 0.0) + eps
        try:
            return cholesky(h + shift * np.eye(len(h)), lower=True), shift
        except LinAlgError:
            eps *= 10.0
    raise AssertionError(f"cholesky_with_fallback: H still indefinite after shifting by {shift:.3g}")


def choose_rank(sigma: np.ndarray, rank: int | None = None, energy: float | None = None,
                r_max: int | None = None, squared: bool = False) -> int:
    """Fixed `rank`, or the smallest k with sum(sigma[:k]) / sum(sigma) >= energy (sigma^2 if squared), <= r_max."""
    n = sigma.shape[0]
    r_max = n if r_max is None else min(int(r_max), n)
    if (rank is None) == (energy is None):
        raise ValueError(f"choose_rank: give exactly one of rank={rank!r} and energy={energy!r}")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
            raise ValueError(f"choose_rank: rank={rank!r}, expected a non-negative int")
        return min(int(rank), r_max)
    if not isinstance(energy, (int, float, np.floating)) or not 0.0 < energy <= 1.0:
        raise ValueError(f"choose_rank: energy={energy!r}, expected a fraction in (0, 1]")
    mass = sigma ** 2 if squared else sigma  # [n]
    total = float(mass.sum())
    if total <= 0.0:
        return 0
    share = np.cumsum(mass) / total  # [n], non-decreasing to 1
    k = int(np.searchsorted(share, energy - 1e-12)) + 1  # first k with share[k-1] >= energy
    return min(k, r_max)


def effective_rank(sigma: np.ndarray, squared: bool = False) -> float:
    """exp(-sum p_i log p_i) with p = sigma / sum(sigma) (sigma^2 if squared); 0 for an all-zero spectrum."""
    mass = np.asarray(sigma, dtype=np.float64) ** (2 if squared else 1)
    total = mass.sum()
    if total <= 0.0:
        return 0.0
    p = mass[mass > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def output_error(e: np.ndarray, correction: np.ndarray, h: np.ndarray) -> float:
    """||(E - L) X||_F computed from the Gram: sqrt(tr((E - L) H (E - L)^T))."""
    d = (e - correction).astype(np.float64)  # [O, I]
    return float(np.sqrt(max(np.einsum("oi,ij,oj->", d, h.astype(np.float64), d), 0.0)))


def reconstruct_naive(e: np.ndarray, h: np.ndarray, rank: int) -> LowRank:
    """The literal equations: S = chol(H), U Sigma V^T = svd(E S), L_A = U_r Sigma_r, L_B = V_r^T inv(S)."""
    e, h = check_error_and_gram(e, h, "reconstruct_naive")
    s, shift = cholesky_with_fallback(h)  # [I, I], S S^T = H
    u, sigma, vt = np.linalg.svd(e @ s, full_matrices=False)  # E S = U diag(sigma) V^T
    r = choose_rank(sigma, rank=rank)
    la = u[:, :r] * sigma[:r]  # [O, r] = U_r Sigma_r
    lb = vt[:r] @ np.linalg.inv(s)  # [r, I] = V_r^T S^-1 (explicit inverse, as written)
    return LowRank(la, lb, sigma, shift)


def reconstruct(e: np.ndarray, h: np.ndarray, rank: int | None = None, energy: float | None = None,
                r_max: int | None = None, squared: bool = False) -> LowRank:
    """The whitened rank-r correction of E for inputs with Gram H (fixed rank, or energy threshold)."""
    e, h = check_error_and_gram(e, h, "reconstruct")
    s, shift = cholesky_with_fallback(h)  # [I, I] lower, S S^T = H (+ shift I)
    u, sigma, vt = np.linalg.svd(e @ s, full_matrices=False)  # [O, I] @ [I, I]: E S = U diag(sigma) V^T
    r = choose_rank(sigma, rank, energy, r_max, squared)
    la = u[:, :r] * sigma[:r]  # [O, r] = U_r Sigma_r
    z = solve_triangular(s, vt[:r].T, lower=True, trans="T")  # [I, r]: S^T Z = V_r, Z = S^-T V_r
    return LowRank(la, z.T, sigma, shift)  # L_B = Z^T = V_r^T S^-1
