"""Hypothesis strategies shared by the quantizer tests: float32 arrays, bit widths and scale layouts."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refq.quant.ranges import fit_minmax, fit_mse, fit_percentile

BITS = st.integers(2, 8)
ELEMENTS = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
PROBABILITIES = st.floats(0.0, 1.0, allow_nan=False, width=32)


def fit_p99(x, bits, **layout):
    """fit_percentile at pct = 0.99 (a range that clips)."""
    return fit_percentile(x, bits, 0.99, **layout)


FITTERS = (fit_minmax, fit_p99, fit_mse)


def float_arrays(min_dims: int = 1, max_dims: int = 3, max_side: int = 5, elements=ELEMENTS):
    """float32 arrays of 1..3 small dims with elements in [-1e3, 1e3]."""
    shapes = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side)
    return hnp.arrays(np.float32, shapes, elements=elements)


@st.composite
def arrays_with_layout(draw, elements=ELEMENTS):
    """(x, layout) where layout = dict(granularity, axis, group_size) is valid for x."""
    x = draw(float_arrays(elements=elements))
    granularity = draw(st.sampled_from(("tensor", "channel", "token", "group")))
    if granularity in ("tensor", "token"):
        return x, dict(granularity=granularity, axis=None, group_size=None)
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    if granularity == "channel":
        return x, dict(granularity=granularity, axis=axis, group_size=None)
    n = x.shape[axis]
    group_size = draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    return x, dict(granularity=granularity, axis=axis, group_size=group_size)
