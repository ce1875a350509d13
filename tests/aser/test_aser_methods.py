"""The method registry (refq.aser.methods): record validity, the closed forms of LoRC / L2QER / ASER-ER, ASER's
output-error optimality against the baselines at equal rank, and input validation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.aser.l2qer import l2qer_scales
from refq.aser.methods import METHODS, quantize_linear
from refq.aser.qlinear import QuantizedLinear
from refq.aser.rtn import dequantize_weight, quantize_weight
from refq.aser.settings import QuantSettings, default_outliers
from refq.aser.types import LayerStats
from refq.aser.whiten_svd import reconstruct
from tests.aser.strategies import correlated_inputs, layers


@pytest.fixture
def layer_data(rng):
    x = correlated_inputs(rng, 200, 20, outliers=2)
    return rng.standard_normal((12, 20)), LayerStats.from_inputs(x), x


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_returns_a_valid_record(layer_data, method):
    w, stats, x = layer_data
    layer = quantize_linear(method, w, stats, QuantSettings(wbits=4, abits=8, rank=3 if method in
                                                              ("lorc", "l2qer", "aser") else None))
    assert isinstance(layer, QuantizedLinear) and layer.method == method
    assert layer.w_codes.shape == w.shape and layer.w_codes.dtype == np.int8
    assert layer.rank == (3 if method in ("lorc", "l2qer", "aser") else 0)
    assert layer.lowrank_params() == layer.rank * (20 + 12)
    assert np.isfinite(layer.effective_weight()).all()


def test_lorc_and_l2qer_are_the_stated_truncated_svds(layer_data):
    w, stats, _ = layer_data
    e = w - dequantize_weight(*quantize_weight(w, 4))
    u, s, vt = np.linalg.svd(e, full_matrices=False)
    lorc = quantize_linear("lorc", w, stats, QuantSettings(rank=3))
    np.testing.assert_allclose(lorc.la.astype(np.float64) @ lorc.lb, (u[:, :3] * s[:3]) @ vt[:3], atol=1e-5)
    d = l2qer_scales(stats.mean_abs)
    u, s, vt = np.linalg.svd(e * d, full_matrices=False)
    l2 = quantize_linear("l2qer", w, stats, QuantSettings(rank=3))
    np.testing.assert_allclose(l2.la.astype(np.float64) @ l2.lb, (u[:, :3] * s[:3]) @ vt[:3] / d, atol=1e-4)
    assert np.sqrt(d.min() * d.max()) == pytest.approx(1.0)


def test_aser_without_smoothing_is_error_reconstruction_only(layer_data):
    w, stats, _ = layer_data
    layer = quantize_linear("aser", w, stats, QuantSettings(rank=4, smooth=False))
    codes, scale = quantize_weight(w, 4)
    np.testing.assert_array_equal(layer.w_codes, codes)
    assert layer.smooth is None and layer.outliers.size == 0
    ref = reconstruct(w - dequantize_weight(codes, scale), stats.gram, rank=4).matrix()
    np.testing.assert_allclose(layer.la.astype(np.float64) @ layer.lb, ref, atol=1e-5)


@given(problem=layers(min_dim=4), r=st.integers(1, 4), bits=st.sampled_from([2, 3, 4]))
def test_aser_er_beats_lorc_and_l2qer_at_equal_rank(problem, r, bits):
    w, x = problem
    stats = LayerStats.from_inputs(x)
    s = QuantSettings(wbits=bits, abits=None, rank=r, smooth=False)
    err = {m: np.linalg.norm(x @ (w - quantize_linear(m, w, stats, s).effective_weight()).T)
           for m in ("aser", "lorc", "l2qer", "rtn")}
    tol = 1e-5 * np.linalg.norm(x @ w.T)
    assert err["aser"] <= min(err["lorc"], err["l2qer"], err["rtn"]) + tol, err


@pytest.mark.parametrize("method", ["lorc", "l2qer", "aser"])
def test_full_rank_reconstructs_the_float_layer(layer_data, method):
    w, stats, _ = layer_data
    layer = quantize_linear(method, w, stats, QuantSettings(wbits=3, abits=None, rank=12))
    np.testing.assert_allclose(layer.effective_weight(), w, atol=1e-5 * np.abs(w).max())


def test_energy_rule_and_rank_cap(layer_data):
    w, stats, _ = layer_data
    full = quantize_linear("aser", w, stats, QuantSettings(energy=1.0))
    assert full.rank == 6  # capped at half of min(12, 20)
    assert quantize_linear("aser", w, stats, QuantSettings(energy=1.0, r_max=9)).rank == 9
    assert 1 <= quantize_linear("aser", w, stats, QuantSettings(energy=0.3)).rank < 6


def test_smoothquant_shares_a_given_column_max(layer_data):
    w, stats, _ = layer_data
    colmax = np.abs(w).max(0) * 3.0
    own = quantize_linear("smoothquant", w, stats, QuantSettings())
    shared = quantize_linear("smoothquant", w, stats, QuantSettings(), group_colmax=colmax)
    np.testing.assert_allclose(shared.smooth, own.smooth / np.sqrt(3.0), rtol=1e-5)  # alpha 0.5: w^-(1/2)
    assert quantize_linear("smoothquant", w, stats, QuantSettings(smooth=False)).smooth is None


def test_default_outliers_scale_with_width():
    assert [default_outliers(d) for d in (16, 64, 172, 384, 1536)] == [1, 1, 2, 4, 15]


@pytest.mark.parametrize("kwargs, match", [
    ({"wbits": 1}, "wbits=1"), ({"abits": 16}, "abits=16"), ({"rank": 2, "energy": 0.5}, "not both"),
    ({"rank": -2}, "rank=-2"), ({"energy": 0.0}, "energy=0.0"), ({"alpha": 2.0}, "alpha=2.0"),
    ({"base": "awq"}, "base='awq'"), ({"outliers": -1}, "outliers=-1"), ({"smooth_scope": "all"}, "smooth_scope"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantSettings(**kwargs)


def test_bad_method_inputs_raise(layer_data):
    w, stats, _ = layer_data
    with pytest.raises(ValueError, match="method='awq'"):
        quantize_linear("awq", w, stats, QuantSettings())
    with pytest.raises(ValueError, match="stats cover 20 channels"):
        quantize_linear("aser", w[:, :10], stats, QuantSettings(rank=1))
    with pytest.raises(ValueError, match="non-finite"):
        quantize_linear("rtn", np.full((2, 20), np.inf), stats, QuantSettings())
    with pytest.raises(ValueError, match="expected QuantSettings"):
        quantize_linear("rtn", w, stats, {"wbits": 4})
    with pytest.raises(ValueError, match="expected LayerStats"):
        quantize_linear("lorc", w, None, QuantSettings())
