"""Range fitting (refq.quant.ranges): layouts agree with per-tensor fits on each block; MSE search vs min/max."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.quant.params import QParams
from refq.quant.ranges import fit_minmax, fit_mse, fit_percentile
from refq.quant.uniform import fake_quantize, quantize
from tests.quant.strategies import BITS, FITTERS, arrays_with_layout, float_arrays


def _sse(x, p):
    """Sum of squared reconstruction errors, float64."""
    return float(np.sum((fake_quantize(x, p).astype(np.float64) - x) ** 2))


@given(x=float_arrays(), bits=BITS, symmetric=st.booleans(), fit=st.sampled_from(FITTERS), data=st.data())
def test_per_channel_equals_per_tensor_applied_channel_by_channel(x, bits, symmetric, fit, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    pc = fit(x, bits, symmetric=symmetric, granularity="channel", axis=axis)
    q = quantize(x, pc)
    for c in range(x.shape[axis]):
        xc = np.asarray(np.take(x, c, axis=axis))  # [...] (0-d for 1-d x)
        pt = fit(xc, bits, symmetric=symmetric)
        assert np.take(pc.scale, c, axis=axis).item() == pt.scale.item()
        assert np.take(pc.zero, c, axis=axis).item() == pt.zero.item()
        np.testing.assert_array_equal(np.take(q, c, axis=axis), quantize(xc, pt))


@given(x=float_arrays(), bits=BITS, symmetric=st.booleans(), fit=st.sampled_from(FITTERS), data=st.data())
def test_per_group_equals_per_tensor_applied_group_by_group(x, bits, symmetric, fit, data):
    axis = data.draw(st.integers(0, x.ndim - 1))
    n = x.shape[axis]
    g = data.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    pg = fit(x, bits, symmetric=symmetric, granularity="group", axis=axis, group_size=g)
    xt = np.moveaxis(x, axis, -1)  # [..., n]
    scale_t = np.moveaxis(pg.scale, axis, -1)  # [..., n/g]
    for idx in np.ndindex(xt.shape[:-1]):
        for j in range(n // g):
            pt = fit(np.ascontiguousarray(xt[idx][j * g:(j + 1) * g]), bits, symmetric=symmetric)
            assert scale_t[idx][j] == pt.scale.item()


@given(x=float_arrays(), bits=BITS, symmetric=st.booleans(), fit=st.sampled_from(FITTERS))
def test_group_of_the_whole_last_axis_is_per_token(x, bits, symmetric, fit):
    pg = fit(x, bits, symmetric=symmetric, granularity="group", axis=-1, group_size=x.shape[-1])
    pt = fit(x, bits, symmetric=symmetric, granularity="token")
    np.testing.assert_array_equal(pg.scale, pt.scale)
    np.testing.assert_array_equal(pg.zero, pt.zero)
    np.testing.assert_array_equal(quantize(x, pg), quantize(x, pt))


@given(x=float_arrays(min_dims=2, max_dims=2), bits=BITS, symmetric=st.booleans(), axis=st.sampled_from([0, 1]))
def test_group_of_the_whole_axis_is_per_channel_on_the_other_axis(x, bits, symmetric, axis):
    pg = fit_minmax(x, bits, symmetric=symmetric, granularity="group", axis=axis, group_size=x.shape[axis])
    pc = fit_minmax(x, bits, symmetric=symmetric, granularity="channel", axis=1 - axis)
    np.testing.assert_array_equal(pg.scale, pc.scale)
    np.testing.assert_array_equal(quantize(x, pg), quantize(x, pc))


@given(x=float_arrays(), bits=BITS, symmetric=st.booleans(), data=st.data())
def test_per_channel_minmax_error_within_per_tensor_half_step(x, bits, symmetric, data):
    """Every per-channel error is at most half the per-tensor step, the per-tensor worst case."""
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    pt = fit_minmax(x, bits, symmetric=symmetric)
    pc = fit_minmax(x, bits, symmetric=symmetric, granularity="channel", axis=axis)
    err_c = np.abs(fake_quantize(x, pc).astype(np.float64) - x)
    assert (err_c <= float(pt.scale) * (0.5 + 1e-4) + 1e-6 * np.abs(x)).all()
    nonzero = np.any(x != 0, axis=tuple(i for i in range(x.ndim) if i != axis % x.ndim), keepdims=True)
    assert (pc.scale <= pt.scale)[np.broadcast_to(nonzero, pc.scale.shape)].all()


def test_per_channel_mse_beats_per_tensor_when_channel_ranges_differ(rng):
    w = rng.normal(size=(8, 64)) * np.logspace(-2, 1, 8)[:, None]  # [C, K], channel scales 0.01..10
    w = w.astype(np.float32)
    for symmetric in (True, False):
        pt = fit_minmax(w, 4, symmetric=symmetric)
        pc = fit_minmax(w, 4, symmetric=symmetric, granularity="channel", axis=0)
        assert _sse(w, pc) < 0.5 * _sse(w, pt)


def test_per_channel_mse_can_exceed_per_tensor_on_a_crafted_input():
    """Finer steps are not better for every input: here the per-tensor grid hits every value exactly."""
    w = np.array([[4.5, 0.0], [3.0, 1.5]], np.float32)  # 3 bits: per-tensor step 1.5; row 1 step 1.0
    pt = fit_minmax(w, 3)
    pc = fit_minmax(w, 3, granularity="channel", axis=0)
    assert _sse(w, pt) == 0.0
    assert _sse(w, pc) == 0.25  # 1.5 / 1.0 rounds half-to-even to 2


@given(data=arrays_with_layout(), bits=BITS, symmetric=st.booleans())
def test_mse_search_never_worse_than_minmax(data, bits, symmetric):
    x, layout = data
    sse_mse = _sse(x, fit_mse(x, bits, symmetric=symmetric, **layout))
    sse_minmax = _sse(x, fit_minmax(x, bits, symmetric=symmetric, **layout))
    assert sse_mse <= sse_minmax * (1 + 1e-9) + 1e-30


@given(data=arrays_with_layout(), bits=BITS, symmetric=st.booleans(), pct=st.sampled_from([0.9, 0.99, 0.999]))
def test_mse_search_never_worse_than_any_of_its_candidates(data, bits, symmetric, pct):
    x, layout = data
    sse_mse = _sse(x, fit_mse(x, bits, symmetric=symmetric, percentiles=(pct,), **layout))
    sse_pct = _sse(x, fit_percentile(x, bits, pct, symmetric=symmetric, **layout))
    assert sse_mse <= sse_pct * (1 + 1e-9) + 1e-30


@given(data=arrays_with_layout(), bits=BITS, symmetric=st.booleans())
def test_percentile_one_is_minmax(data, bits, symmetric):
    x, layout = data
    a = fit_percentile(x, bits, 1.0, symmetric=symmetric, **layout)
    b = fit_minmax(x, bits, symmetric=symmetric, **layout)
    np.testing.assert_array_equal(a.scale, b.scale)
    np.testing.assert_array_equal(a.zero, b.zero)


def test_percentile_clips_an_outlier_and_mse_prefers_it(rng):
    x = rng.normal(size=4096).astype(np.float32)
    x[0] = 12.0  # a moderate outlier: clipping it costs less than a 4x coarser grid for everyone else
    p_max = fit_minmax(x, 4)
    p_pct = fit_percentile(x, 4, 0.999)
    assert p_pct.scale < 0.3 * p_max.scale
    p_mse = fit_mse(x, 4)
    assert _sse(x, p_mse) < 0.5 * _sse(x, p_max)


def test_fitted_params_have_the_documented_layout():
    x = np.ones((2, 3, 8), np.float32)
    assert fit_minmax(x, 8).scale.shape == ()
    assert fit_minmax(x, 8, granularity="channel", axis=-1).axis == 2
    assert fit_minmax(x, 8, granularity="token").scale.shape == (2, 3, 1)
    p = fit_mse(x, 4, symmetric=False, granularity="group", axis=2, group_size=4)
    assert isinstance(p, QParams) and p.scale.shape == (2, 3, 2) and p.zero.dtype == np.int32
    assert (p.granularity, p.axis, p.group_size, p.symmetric, p.bits) == ("group", 2, 4, False, 4)


@pytest.mark.parametrize("fit", FITTERS)
def test_bad_inputs_raise_value_error_naming_the_value(fit):
    x = np.ones((4, 6), np.float32)
    cases = [
        (dict(x=x, bits=9), "bits=9"),
        (dict(x=x, bits=1), "bits=1"),
        (dict(x=x.astype(np.int32), bits=4), "int32"),
        (dict(x=np.array([1.0, np.inf], np.float32), bits=4), "inf"),
        (dict(x=np.zeros((0, 3), np.float32), bits=4), "(0, 3)"),
        (dict(x=x, bits=4, granularity="channel", axis=2), "axis=2"),
        (dict(x=x, bits=4, granularity="channel"), "axis=None"),
        (dict(x=x, bits=4, granularity="tensor", axis=0), "axis=0"),
        (dict(x=x, bits=4, granularity="group", axis=1, group_size=4), "group_size=4"),
        (dict(x=x, bits=4, granularity="group", axis=1, group_size=0), "group_size=0"),
        (dict(x=x, bits=4, granularity="rows"), "'rows'"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(ValueError, match=re.escape(needle)):
            fit(**kwargs)


def test_bad_percentiles_raise_value_error_naming_them():
    x = np.ones(8, np.float32)
    with pytest.raises(ValueError, match=re.escape("pct=0.3")):
        fit_percentile(x, 4, 0.3)
    with pytest.raises(ValueError, match=re.escape("pct=1.5")):
        fit_percentile(x, 4, 1.5)
    with pytest.raises(ValueError, match=re.escape("percentiles entry=99.9")):
        fit_mse(x, 4, percentiles=(99.9,))
    with pytest.raises(ValueError, match=re.escape("percentiles=()")):
        fit_mse(x, 4, percentiles=())
