"""Activation smoothing and outlier extraction (refq.aser.smoothing, refq.aser.aser): function preservation,
the outlier-ranking identity, exactly-zero extracted columns, and outliers recovered by the low-rank branch."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.aser.aser import aser
from refq.aser.settings import QuantSettings
from refq.aser.smoothing import (select_outliers, smooth_and_extract, smooth_gram, smooth_inputs, smooth_weight,
                                 smoothing_factors, weight_column_absmax)
from refq.aser.types import LayerStats
from refq.aser.whiten_svd import reconstruct
from tests.aser.strategies import correlated_inputs, layers


@given(problem=layers(), alpha=st.sampled_from([0.0, 0.5, 0.85, 1.0]))
def test_smoothing_is_function_preserving_before_quantization(problem, alpha):
    w, x = problem
    m = smoothing_factors(np.abs(x).max(0), weight_column_absmax(w), alpha)
    np.testing.assert_allclose(smooth_inputs(x, m) @ smooth_weight(w, m).T, x @ w.T, rtol=1e-9,
                               atol=1e-9 * np.abs(x @ w.T).max())
    xs = smooth_inputs(x, m)
    np.testing.assert_allclose(smooth_gram(x.T @ x, m), xs.T @ xs, rtol=1e-9, atol=1e-12 * np.abs(x.T @ x).max())


@given(problem=layers(min_dim=3), alpha=st.sampled_from([0.25, 0.5, 0.75]))
def test_every_outlier_criterion_picks_the_same_channels(problem, alpha):
    w, x = problem
    a, wc = np.abs(x).max(0), weight_column_absmax(w)
    m = smoothing_factors(a, wc, alpha)
    np.testing.assert_allclose(np.abs(smooth_weight(w, m)).max(0), (a * wc) ** alpha, rtol=1e-9)
    np.testing.assert_allclose(np.abs(smooth_inputs(x, m)).max(0), (a * wc) ** (1 - alpha), rtol=1e-9)
    f = 2
    by_product = select_outliers(a, wc, f)
    by_weight = np.sort(np.argsort(-np.abs(smooth_weight(w, m)).max(0), kind="stable")[:f])
    assert set(by_product) == set(by_weight)


def test_outlier_selection_finds_planted_channels(rng):
    x = rng.standard_normal((200, 16))
    x[:, [3, 11]] *= 50.0
    w = rng.standard_normal((8, 16))
    np.testing.assert_array_equal(select_outliers(np.abs(x).max(0), weight_column_absmax(w), 2), [3, 11])
    assert select_outliers(np.abs(x).max(0), weight_column_absmax(w), 0).size == 0


@pytest.mark.parametrize("base", ["rtn", "gptq"])
@pytest.mark.parametrize("wbits", [3, 4, 8])
def test_extracted_columns_are_exactly_zero_in_the_quantized_weight(rng, base, wbits):
    x = correlated_inputs(rng, 300, 24, outliers=3)
    w = rng.standard_normal((10, 24))
    layer = aser(w, LayerStats.from_inputs(x), QuantSettings(wbits=wbits, rank=3, outliers=3, base=base))
    assert layer.outliers.size == 3
    assert not layer.w_codes[:, layer.outliers].any()
    assert (layer.w_hat()[:, layer.outliers] == 0.0).all()


@given(problem=layers(min_dim=4), f=st.integers(1, 3))
def test_outlier_columns_are_recovered_by_a_rank_f_branch(problem, f):
    w, x = problem
    split = smooth_and_extract(w, np.abs(x).max(0), 0.5, f)
    assert np.array_equal(np.flatnonzero(np.abs(split.w_o).sum(0)), split.outliers)
    xs = smooth_inputs(x, split.m)
    lr = reconstruct(split.w_o, xs.T @ xs, rank=f)  # full-precision error = the extracted columns alone
    scale = np.abs(split.w_o).max()
    np.testing.assert_allclose(lr.matrix(), split.w_o, atol=1e-7 * scale)
    np.testing.assert_allclose(xs @ (split.w_n + lr.matrix()).T, x @ w.T, atol=1e-7 * np.abs(x @ w.T).max())


def test_a_fixed_rank_caps_the_outlier_count(rng):
    x = correlated_inputs(rng, 100, 24, outliers=3)
    stats, w = LayerStats.from_inputs(x), rng.standard_normal((10, 24))
    assert aser(w, stats, QuantSettings(rank=2, outliers=3)).outliers.size == 2
    as_only = aser(w, stats, QuantSettings(rank=0, outliers=3))
    assert as_only.outliers.size == 0 and as_only.rank == 0 and as_only.smooth is not None
    assert aser(w, stats, QuantSettings(energy=0.5, outliers=3)).outliers.size == 3


def test_full_rank_aser_with_float_activations_is_exact(rng):
    x = correlated_inputs(rng, 100, 12, outliers=2)
    w = rng.standard_normal((9, 12))
    layer = aser(w, LayerStats.from_inputs(x), QuantSettings(wbits=4, abits=None, rank=9, outliers=2))
    np.testing.assert_allclose(layer.effective_weight(), w, atol=1e-5 * np.abs(w).max())


def test_bad_smoothing_inputs_raise(rng):
    with pytest.raises(ValueError, match="alpha=1.5"):
        smoothing_factors(np.ones(3), np.ones(3), 1.5)
    with pytest.raises(ValueError, match="same length"):
        smoothing_factors(np.ones(3), np.ones(4), 0.5)
    with pytest.raises(ValueError, match="f=5"):
        select_outliers(np.ones(4), np.ones(4), 5)
    with pytest.raises(ValueError, match="share the input width"):
        weight_column_absmax(np.ones((2, 3)), np.ones((2, 4)))
