"""Hypothesis strategies for the ASER tests: small random layers with correlated, outlier-heavy inputs."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


def correlated_inputs(rng: np.random.Generator, n: int, d_in: int, outliers: int = 1) -> np.ndarray:
    """float64 [N, I] rows with correlated channels and a few channels 20x larger (LLM-like outliers)."""
    mix = rng.standard_normal((d_in, d_in)) / np.sqrt(d_in)  # [I, I] channel correlations
    x = rng.standard_normal((n, d_in)) @ (np.eye(d_in) + mix)  # [N, I]
    x[:, rng.choice(d_in, size=outliers, replace=False)] *= 20.0
    return x


@st.composite
def layers(draw, min_dim: int = 2, max_dim: int = 12):
    """(W [O, I], X [N, I]) float64 with N >= I (full-rank Gram) and O, I in [min_dim, max_dim]."""
    d_out = draw(st.integers(min_dim, max_dim))
    d_in = draw(st.integers(min_dim, max_dim))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = correlated_inputs(rng, d_in + draw(st.integers(1, 20)), d_in)
    return rng.standard_normal((d_out, d_in)), x
