"""Hypothesis strategies for the kernel tests: GEMM shapes and integer code matrices that hit the extremes."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

DIMS = st.integers(1, 70)  # covers 1, primes and non-multiples of the 4 x 2 tile and of the panel size
MODES = st.sampled_from(["uniform", "extremes", "min", "mixed"])


def codes(rng: np.random.Generator, shape: tuple, lo: int, hi: int, mode: str) -> np.ndarray:
    """int8 codes in [lo, hi]: uniform, only the two extremes, all lo (largest |products|), or uniform with extremes."""
    if mode == "uniform":
        return rng.integers(lo, hi + 1, size=shape, dtype=np.int8)
    if mode == "extremes":
        return np.where(rng.random(shape) < 0.5, lo, hi).astype(np.int8)
    if mode == "min":
        return np.full(shape, lo, np.int8)
    x = rng.integers(lo, hi + 1, size=shape, dtype=np.int8)
    pick = rng.random(shape)
    x[pick < 0.2] = lo
    x[pick > 0.8] = hi
    return x


@st.composite
def gemm_problems(draw, b_lo: int = -128, b_hi: int = 127):
    """(a [M, K] int8 in [-128, 127], b [N, K] int8 in [b_lo, b_hi]) with M, N, K in 1..70."""
    m, n, k = draw(DIMS), draw(DIMS), draw(DIMS)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = codes(rng, (m, k), -128, 127, draw(MODES))
    b = codes(rng, (n, k), b_lo, b_hi, draw(MODES))
    return a, b


@st.composite
def scales(draw, size: int):
    """Positive float32 scales [size] spanning a few orders of magnitude."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (10.0 ** rng.uniform(-6, 1, size)).astype(np.float32)
