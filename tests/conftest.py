"""Shared test fixtures: a seeded Generator and the hypothesis profile (deadline=None: Numba compiles)."""
from __future__ import annotations

import os
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "refq",
    max_examples=int(os.environ.get("REFQ_HYPOTHESIS_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("refq")

@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
