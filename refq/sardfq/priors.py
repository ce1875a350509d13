"""APA attention priors: random Gaussian-mixture heat-maps on the patch grid (SARDFQ, APA; docs/sardfq.md, S2).

SARDFQ aligns the class-token attention of the latter blocks with "randomly generated structured maps
from a Gaussian Mixture Model, a distinct GMM per head" (the paper). The paper states only K_APA = 5; the sampler
below is refq's choice (docs/sardfq.md, S2), one prior per image, APA block and head, drawn once before the
optimisation and kept fixed:

    K       ~ UniformInt{1, ..., K_APA}
    mu_k    ~ U([0, G - 1]^2)                  centre on the patch grid (continuous, patch units)
    sigma_k ~ U(sigma_min, sigma_frac * G)     isotropic std, patch units (0.5 and 0.25 G by default)
    pi_k    ~ U(0, 1), normalised to sum 1
    P(i, j) = sum_k pi_k exp(-((i - mu_k,row)^2 + (j - mu_k,col)^2) / (2 sigma_k^2))
    prior   = P / sum_ij P                     a probability map over the G^2 patches

Isotropic components are one of two equally faithful readings (a full covariance with a random rotation
would be the other); `sigma_min` and `sigma_frac` are parameters. Maps are flattened in row-major patch
order, the token order of the ViT (row 0 of the attention, patch columns).

References: Zhong et al., "Semantic Alignment and Reinforcement for Data-Free Quantization of Vision
Transformers" (SARDFQ), arXiv:2412.16553, Attention Priors Alignment; docs/sardfq.md, S2.
"""
from __future__ import annotations

import numpy as np


def gmm_prior(grid: int, k_max: int, rng: np.random.Generator, sigma_min: float = 0.5,
              sigma_frac: float = 0.25) -> np.ndarray:
    """One prior map: float32 [grid, grid], non-negative, summing to 1."""
    if grid < 1 or k_max < 1:
        raise ValueError(f"gmm_prior: grid={grid} and k_max={k_max} must be >= 1")
    sigma_max = max(sigma_frac * grid, sigma_min)
    k = int(rng.integers(1, k_max + 1))
    mu = rng.uniform(0.0, grid - 1, size=(k, 2))  # [K, 2] (row, col)
    sigma = rng.uniform(sigma_min, sigma_max, size=k)  # [K]
    pi = rng.uniform(0.0, 1.0, size=k)  # [K]
    pi = pi / pi.sum()
    rows = np.arange(grid, dtype=np.float64)
    d2 = (rows[None, :, None] - mu[:, 0, None, None]) ** 2 + (rows[None, None, :] - mu[:, 1, None, None]) ** 2  # [K, G, G]
    p = np.sum(pi[:, None, None] * np.exp(-d2 / (2.0 * sigma[:, None, None] ** 2)), axis=0)  # [K, G, G] -> [G, G]
    return (p / p.sum()).astype(np.float32)


def sample_priors(batch: int, n_blocks: int, heads: int, grid: int, k_max: int, rng: np.random.Generator,
                  sigma_min: float = 0.5, sigma_frac: float = 0.25) -> np.ndarray:
    """Priors for every image, APA block and head: float32 [B, nL, H, G*G], each row sums to 1."""
    if batch < 1 or n_blocks < 0 or heads < 1:
        raise ValueError(f"sample_priors: batch={batch}, n_blocks={n_blocks}, heads={heads} must be positive")
    out = np.empty((batch, n_blocks, heads, grid * grid), np.float32)  # [B, nL, H, G*G]
    for b in range(batch):
        for l in range(n_blocks):
            for h in range(heads):
                out[b, l, h] = gmm_prior(grid, k_max, rng, sigma_min, sigma_frac).reshape(-1)
    return out
