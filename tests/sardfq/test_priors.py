"""APA prior sampler: probability maps on the patch grid, seeded."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.sardfq.priors import gmm_prior, sample_priors


@given(st.integers(1, 14), st.integers(1, 6), st.integers(0, 2 ** 32 - 1))
def test_gmm_prior_is_a_probability_map(grid, k_max, seed):
    p = gmm_prior(grid, k_max, np.random.default_rng(seed))
    assert p.shape == (grid, grid) and p.dtype == np.float32
    assert (p >= 0).all() and np.isfinite(p).all()
    assert p.sum() == pytest.approx(1.0, abs=1e-5)


def test_sample_priors_shape_and_normalisation(rng):
    p = sample_priors(batch=3, n_blocks=2, heads=4, grid=7, k_max=5, rng=rng)
    assert p.shape == (3, 2, 4, 49) and p.dtype == np.float32
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_sample_priors_is_seeded():
    a = sample_priors(2, 3, 2, 7, 5, np.random.default_rng(42))
    b = sample_priors(2, 3, 2, 7, 5, np.random.default_rng(42))
    c = sample_priors(2, 3, 2, 7, 5, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_priors_differ_across_heads_and_images(rng):
    p = sample_priors(2, 1, 3, 7, 5, rng)
    assert not np.allclose(p[0, 0, 0], p[0, 0, 1])  # a distinct GMM per head
    assert not np.allclose(p[0, 0, 0], p[1, 0, 0])


def test_single_narrow_component_peaks_at_its_centre():
    # k_max = 1 and sigma fixed at 0.5: the peak is the grid cell nearest to the sampled centre mu
    rng = np.random.default_rng(7)
    p = gmm_prior(14, 1, rng, sigma_min=0.5, sigma_frac=0.0)
    rng = np.random.default_rng(7)
    rng.integers(1, 2)  # replay the draws of gmm_prior: K, then mu
    mu = rng.uniform(0.0, 13, size=(1, 2))[0]
    assert np.unravel_index(p.argmax(), p.shape) == tuple(np.round(mu).astype(int))


def test_more_components_spread_the_mass():
    # averaged over many draws, priors with up to 5 components are flatter (lower max) than single blobs
    rng = np.random.default_rng(0)
    one = np.mean([gmm_prior(14, 1, rng).max() for _ in range(200)])
    five = np.mean([gmm_prior(14, 5, rng).max() for _ in range(200)])
    assert five < one


def test_gmm_prior_rejects_bad_arguments(rng):
    with pytest.raises(ValueError, match="k_max=0"):
        gmm_prior(7, 0, rng)
