"""Whitening-SVD error reconstruction (refq.aser.whiten_svd): optimality, rank monotonicity, naive twin, fallback."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.aser.whiten_svd import (choose_rank, cholesky_with_fallback, effective_rank, output_error, reconstruct,
                                  reconstruct_naive)
from tests.aser.strategies import layers


def out_err(e, lr_matrix, x):
    return np.linalg.norm((e - lr_matrix) @ x.T)  # ||(E - L) X||_F with X = x.T


@given(problem=layers(), r=st.integers(0, 12), seed=st.integers(0, 2**32 - 1))
def test_whitened_truncation_is_optimal_and_equals_the_tail(problem, r, seed):
    e, x = problem
    h = x.T @ x
    lr = reconstruct(e, h, rank=r)
    err = out_err(e, lr.matrix(), x)
    assert err == pytest.approx(lr.tail_error(), rel=1e-6, abs=1e-8 * np.linalg.norm(e @ x.T))
    rng = np.random.default_rng(seed)
    r_eff = lr.rank
    u, s, vt = np.linalg.svd(e, full_matrices=False)
    plain = (u[:, :r_eff] * s[:r_eff]) @ vt[:r_eff]  # LoRC's rank-r correction
    random_lr = rng.standard_normal((e.shape[0], r_eff)) @ rng.standard_normal((r_eff, e.shape[1]))
    slack = 1e-9 * np.linalg.norm(e @ x.T)
    assert err <= out_err(e, plain, x) + slack
    assert err <= out_err(e, random_lr, x) + slack
    assert err <= out_err(e, np.zeros_like(e), x) + slack


@given(problem=layers())
def test_output_error_is_non_increasing_in_rank(problem):
    e, x = problem
    h = x.T @ x
    errs = [out_err(e, reconstruct(e, h, rank=r).matrix(), x) for r in range(min(e.shape) + 1)]
    scale = np.linalg.norm(e @ x.T)
    assert all(b <= a + 1e-9 * scale for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] <= 1e-7 * scale  # full rank: exact


@given(problem=layers(), r=st.integers(0, 12))
def test_reconstruct_equals_the_naive_explicit_inverse(problem, r):
    e, x = problem
    h = x.T @ x
    fast, naive = reconstruct(e, h, rank=r), reconstruct_naive(e, h, rank=r)
    np.testing.assert_allclose(fast.sigma, naive.sigma, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.matrix(), naive.matrix(), rtol=1e-6, atol=1e-8 * np.abs(e).max())


def test_output_error_from_gram_matches_the_inputs(rng):
    e, x = rng.standard_normal((5, 7)), rng.standard_normal((30, 7))
    l = rng.standard_normal((5, 7))
    assert output_error(e, l, x.T @ x) == pytest.approx(out_err(e, l, x), rel=1e-10)


def test_cholesky_fallback_on_a_singular_gram(rng):
    x = rng.standard_normal((3, 6))  # 3 tokens, 6 channels: H has rank 3
    x[:, 2] = 0.0  # and a dead channel
    h = x.T @ x
    s, shift = cholesky_with_fallback(h)
    assert shift > 0
    np.testing.assert_allclose(s @ s.T, h + shift * np.eye(6), atol=1e-9)
    s_pd, shift_pd = cholesky_with_fallback(h + np.eye(6))
    assert shift_pd == 0.0 and np.allclose(np.triu(s_pd, 1), 0.0)
    lr = reconstruct(rng.standard_normal((4, 6)), h, rank=3)  # still finite and a valid correction
    assert np.isfinite(lr.matrix()).all() and lr.shift > 0


def test_energy_rank_rule():
    sigma = np.array([4.0, 3.0, 2.0, 1.0])
    assert choose_rank(sigma, energy=0.4) == 1  # 4/10
    assert choose_rank(sigma, energy=0.41) == 2
    assert choose_rank(sigma, energy=0.7) == 2  # 7/10 exactly
    assert choose_rank(sigma, energy=1.0) == 4
    assert choose_rank(sigma, energy=1.0, r_max=2) == 2
    assert choose_rank(sigma, energy=0.5, squared=True) == 1  # 16/30
    assert choose_rank(sigma, rank=9) == 4
    assert choose_rank(np.zeros(3), energy=0.9) == 0


def test_effective_rank_bounds():
    assert effective_rank(np.ones(5)) == pytest.approx(5.0)
    assert effective_rank(np.array([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(np.zeros(4)) == 0.0
    assert 1.0 < effective_rank(np.array([3.0, 1.0, 0.1])) < 3.0
    assert effective_rank(np.array([3.0, 1.0]), squared=True) < effective_rank(np.array([3.0, 1.0]))


@pytest.mark.parametrize("kwargs, match", [
    ({"rank": -1}, "rank=-1"), ({"rank": 1, "energy": 0.5}, "exactly one"), ({}, "exactly one"),
    ({"energy": 1.5}, "energy=1.5"), ({"rank": 1.5}, "rank=1.5"),
])
def test_bad_rank_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        choose_rank(np.ones(3), **kwargs)


def test_bad_matrices_raise(rng):
    e, h = rng.standard_normal((3, 4)), np.eye(4)
    with pytest.raises(ValueError, match="H has shape"):
        reconstruct(e, np.eye(3), rank=1)
    with pytest.raises(ValueError, match="not symmetric"):
        reconstruct(e, h + np.triu(np.ones((4, 4)), 1), rank=1)
    with pytest.raises(ValueError, match="non-finite"):
        reconstruct(np.full((3, 4), np.nan), h, rank=1)
    with pytest.raises(ValueError, match="2-D float"):
        reconstruct_naive(e.astype(np.int64), h, rank=1)
