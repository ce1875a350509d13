"""Spec Sec. 6.7 checklist (items 1-9) on single samples, for both the reference and the Numba kernel."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.spotter.ctc import ctc_loss_and_grad, min_input_length
from refq.spotter.ctc_reference import (brute_force_labelings, brute_force_likelihood, ctc_alpha_beta,
                                        ctc_reference, log_softmax, lse)


def numba_single(logits: np.ndarray, labels, zero_infinity: bool = False):
    """Loss and gradient of one sample through the batched Numba kernel (N = 1)."""
    lab = np.asarray(labels, np.int32).reshape(1, -1)  # [1, L]
    loss, grad = ctc_loss_and_grad(logits[None], lab, [logits.shape[0]], [lab.shape[1]],
                                   reduction="none", zero_infinity=zero_infinity)
    return float(loss[0]), grad[0]


IMPLS = {"reference": ctc_reference, "numba": numba_single}
impl_names = pytest.mark.parametrize("impl", sorted(IMPLS))


@st.composite
def tiny_cases(draw, max_t: int = 5, max_k: int = 3, max_l: int = 3):
    """(logits [T, K] float64, labels) with T <= max_t, K <= max_k, L <= max_l."""
    T = draw(st.integers(1, max_t))
    K = draw(st.integers(2, max_k))
    labels = draw(st.lists(st.integers(1, K - 1), min_size=0, max_size=max_l))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([0.3, 1.0, 4.0]))
    return np.random.default_rng(seed).normal(scale=scale, size=(T, K)), labels


@impl_names
@given(case=tiny_cases())
def test_brute_force_equality(impl, case):
    logits, labels = case
    loss, _ = IMPLS[impl](logits, labels)
    np.testing.assert_allclose(math.exp(-loss), brute_force_likelihood(logits, labels), rtol=1e-10, atol=1e-12)


@impl_names
@given(case=tiny_cases(max_t=4))
def test_probabilities_of_all_labelings_sum_to_one(impl, case):
    logits, _ = case
    T, K = logits.shape
    total = 0.0
    for length in range(T + 1):
        for labels in itertools.product(range(1, K), repeat=length):
            total += math.exp(-IMPLS[impl](logits, labels)[0])
    assert abs(total - 1.0) < 1e-10
    assert abs(sum(brute_force_labelings(logits).values()) - 1.0) < 1e-10


@given(case=tiny_cases())
def test_alpha_beta_consistent_at_every_frame(case):
    logits, labels = case
    alpha, beta, logp = ctc_alpha_beta(logits, labels)
    per_frame = [lse(alpha[t] + beta[t]) for t in range(alpha.shape[0])]
    if logp == -math.inf:
        assert all(v == -math.inf for v in per_frame)
    else:
        np.testing.assert_allclose(per_frame, logp, rtol=0, atol=1e-9)


@impl_names
@given(case=tiny_cases(max_t=6, max_k=4, max_l=3))
def test_occupancy_is_a_distribution(impl, case):
    logits, labels = case
    loss, grad = IMPLS[impl](logits, labels)
    if math.isinf(loss):
        return
    gamma = np.exp(log_softmax(logits)) - grad  # [T, K]
    assert gamma.min() >= -1e-12
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)


@impl_names
@given(case=tiny_cases(max_t=6, max_k=4, max_l=3))
def test_gradient_matches_central_differences(impl, case):
    logits, labels = case
    loss, grad = IMPLS[impl](logits, labels)
    if math.isinf(loss):
        return
    eps = 1e-6
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        step = np.zeros_like(logits)
        step[idx] = eps
        numeric[idx] = (IMPLS[impl](logits + step, labels)[0] - IMPLS[impl](logits - step, labels)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


@impl_names
@given(case=tiny_cases(max_t=6, max_k=4), seed=st.integers(0, 2**32 - 1))
def test_shift_invariance(impl, case, seed):
    logits, labels = case
    shift = np.random.default_rng(seed).normal(scale=50.0, size=(logits.shape[0], 1))  # [T, 1]
    loss, grad = IMPLS[impl](logits, labels)
    shifted_loss, shifted_grad = IMPLS[impl](logits + shift, labels)
    if math.isinf(loss):
        assert math.isinf(shifted_loss)
        return
    np.testing.assert_allclose(shifted_loss, loss, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(shifted_grad, grad, atol=1e-9)


@impl_names
@given(case=tiny_cases(max_t=6, max_k=3, max_l=4))
def test_infinite_exactly_when_too_short(impl, case):
    logits, labels = case
    loss, grad = IMPLS[impl](logits, labels)
    assert math.isinf(loss) == (logits.shape[0] < min_input_length(labels))
    assert not np.isnan(grad).any() and not math.isnan(loss)


@impl_names
@pytest.mark.parametrize("T, labels, feasible", [(2, [1, 1], False), (3, [1, 1], True), (2, [1, 2], True),
                                                  (1, [1], True), (4, [2, 2, 2], False), (5, [2, 2, 2], True)])
def test_infeasible_examples(impl, T, labels, feasible, rng):
    logits = rng.normal(size=(T, 3))
    loss, grad = IMPLS[impl](logits, labels)
    assert math.isfinite(loss) == feasible
    assert not np.isnan(grad).any()
    if not feasible:
        assert loss == math.inf and not grad.any()


@pytest.mark.parametrize("T, labels", [(2, [1, 1]), (3, [2, 2, 2]), (1, [1, 2])])
def test_zero_infinity_gives_zero_loss_and_zero_grad(T, labels, rng):
    logits = rng.normal(size=(T, 3))
    loss, grad = numba_single(logits, labels, zero_infinity=True)
    assert loss == 0.0 and not grad.any()
    feasible_loss, _ = numba_single(rng.normal(size=(6, 3)), labels, zero_infinity=True)
    assert feasible_loss > 0.0


@impl_names
@given(K=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
def test_repeated_label_has_one_path(impl, K, seed):
    logits = np.random.default_rng(seed).normal(scale=2.0, size=(3, K))
    lp = log_softmax(logits)
    loss, _ = IMPLS[impl](logits, [1, 1])  # T = 3 leaves only the path a - a
    np.testing.assert_allclose(loss, -(lp[0, 1] + lp[1, 0] + lp[2, 1]), rtol=1e-12)


@impl_names
@given(case=tiny_cases(max_t=6, max_k=4, max_l=0))
def test_empty_target_is_all_blanks(impl, case):
    logits = case[0]
    loss, grad = IMPLS[impl](logits, [])
    # atol: a near-zero loss computed by two different log-sum-exp orderings differs by ~1 ulp of 1.0
    np.testing.assert_allclose(loss, -log_softmax(logits)[:, 0].sum(), rtol=1e-12, atol=1e-15)
    expected = np.exp(log_softmax(logits))
    expected[:, 0] -= 1.0
    np.testing.assert_allclose(grad, expected, atol=1e-12)


@pytest.mark.parametrize("impl, dtype", [("reference", np.float64), ("numba", np.float64), ("numba", np.float32)])
def test_peaked_logits_along_a_valid_path(impl, dtype):
    path = [0, 1, 1, 0, 2, 0, 2, 2]  # collapses to (1, 2, 2)
    logits = np.full((len(path), 3), -1e3)
    logits[np.arange(len(path)), path] = 1e3
    loss, grad = IMPLS[impl](logits.astype(dtype), [1, 2, 2])
    assert abs(loss) < 1e-6
    assert np.isfinite(grad).all() and np.abs(grad).max() < 1e-6


@impl_names
def test_underflowing_probabilities_stay_finite(impl):
    # Blank dominates by 1e3 nats, but the only alignment of "ab" in 2 frames is a, b: p = e^-2000.
    logits = np.array([[1e3, 0.0, 0.0], [1e3, 0.0, 0.0]])
    lp = log_softmax(logits)
    loss, grad = IMPLS[impl](logits, [1, 2])
    np.testing.assert_allclose(loss, -(lp[0, 1] + lp[1, 2]), rtol=1e-12)
    expected = np.exp(lp)
    expected[0, 1] -= 1.0
    expected[1, 2] -= 1.0
    np.testing.assert_allclose(grad, expected, atol=1e-12)
