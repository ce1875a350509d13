"""Batched Numba CTC: agreement with the reference, lengths and padding, reductions, validation, autograd."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.spotter.ctc import ctc_log_likelihoods, ctc_loss, ctc_loss_and_grad, min_input_length
from refq.spotter.ctc_reference import ctc_reference, log_softmax
from tests.gradcheck import check_grad


@st.composite
def batches(draw, max_n: int = 4, max_t: int = 8, max_k: int = 5, max_l: int = 4):
    """(logits [N, T, K] float64, padded labels [N, Lmax] int32, input_lengths, label_lengths).

    Padding beyond label_lengths holds junk values (the kernel must ignore them); some targets
    may be infeasible for their input length.
    """
    N = draw(st.integers(1, max_n))
    T = draw(st.integers(1, max_t))
    K = draw(st.integers(2, max_k))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = rng.normal(scale=draw(st.sampled_from([0.5, 2.0, 6.0])), size=(N, T, K))  # [N, T, K]
    label_lengths = rng.integers(0, max_l + 1, size=N).astype(np.int32)  # [N]
    input_lengths = rng.integers(0 if draw(st.booleans()) else 1, T + 1, size=N).astype(np.int32)  # [N]
    labels = rng.integers(-3, K + 3, size=(N, max_l)).astype(np.int32)  # [N, Lmax], junk padding
    for i in range(N):
        labels[i, : label_lengths[i]] = rng.integers(1, K, size=label_lengths[i])
    return logits, labels, input_lengths, label_lengths


def reference_batch(logits, labels, input_lengths, label_lengths):
    """Per-sample reference losses [N] and gradients [N, T, K] (zero on padded frames)."""
    losses, grads = np.zeros(len(logits)), np.zeros_like(logits)
    for i, (T_i, L_i) in enumerate(zip(input_lengths, label_lengths)):
        if T_i == 0:
            losses[i] = 0.0 if L_i == 0 else math.inf
            continue
        losses[i], grads[i, :T_i] = ctc_reference(logits[i, :T_i], labels[i, :L_i])
    return losses, grads


@given(batch=batches())
def test_numba_batch_equals_reference_on_unpadded_slices(batch):
    logits, labels, input_lengths, label_lengths = batch
    loss, grad = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="none")
    ref_loss, ref_grad = reference_batch(*batch)
    np.testing.assert_array_equal(np.isinf(loss), np.isinf(ref_loss))
    finite = np.isfinite(ref_loss)
    np.testing.assert_allclose(loss[finite], ref_loss[finite], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-10)
    for i, T_i in enumerate(input_lengths):
        assert not grad[i, T_i:].any(), f"sample {i}: padded frames t >= {T_i} got gradient"


@given(batch=batches(max_n=9, max_t=12, max_k=7))
def test_parallel_kernel_is_bit_identical_to_serial(batch):
    serial = ctc_loss_and_grad(*batch, reduction="mean", parallel=False)
    threaded = ctc_loss_and_grad(*batch, reduction="mean", parallel=True)
    np.testing.assert_array_equal(serial[0], threaded[0])
    np.testing.assert_array_equal(serial[1], threaded[1])


@given(batch=batches())
def test_concatenated_labels_equal_padded_labels(batch):
    logits, labels, input_lengths, label_lengths = batch
    flat = np.concatenate([labels[i, :L] for i, L in enumerate(label_lengths)]).astype(np.int32)
    padded = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="none")
    concat = ctc_loss_and_grad(logits, flat, input_lengths, label_lengths, reduction="none")
    np.testing.assert_array_equal(padded[0], concat[0])
    np.testing.assert_array_equal(padded[1], concat[1])


@given(batch=batches())
def test_reductions_match_manual_formulas(batch):
    logits, labels, input_lengths, label_lengths = batch
    N = len(logits)
    loss, grad = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="none")
    total, grad_sum = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="sum")
    mean, grad_mean = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="mean")
    weights = 1.0 / (N * np.maximum(label_lengths, 1))  # [N]
    assert total.shape == () and mean.shape == () and loss.shape == (N,)
    np.testing.assert_allclose(total, loss.sum(), rtol=1e-12)
    np.testing.assert_allclose(mean, (loss * weights).sum(), rtol=1e-12)
    np.testing.assert_array_equal(grad_sum, grad)
    np.testing.assert_allclose(grad_mean, grad * weights[:, None, None], rtol=1e-12, atol=1e-300)


@given(batch=batches())
def test_zero_infinity_only_touches_infeasible_samples(batch):
    logits, labels, input_lengths, label_lengths = batch
    loss, grad = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="none")
    zloss, zgrad = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="none",
                                     zero_infinity=True)
    infeasible = np.array([T_i < min_input_length(labels[i, :L_i])
                           for i, (T_i, L_i) in enumerate(zip(input_lengths, label_lengths))])
    np.testing.assert_array_equal(np.isinf(loss), infeasible)
    assert np.isfinite(zloss).all() and not np.isnan(zgrad).any()
    assert not zloss[infeasible].any() and not zgrad[infeasible].any()
    np.testing.assert_array_equal(zloss[~infeasible], loss[~infeasible])
    np.testing.assert_array_equal(zgrad, grad)


@given(batch=batches())
def test_log_prob_inputs_give_minus_gamma(batch):
    logits, labels, input_lengths, label_lengths = batch
    lp = np.stack([log_softmax(x) for x in logits])  # [N, T, K]
    loss, grad = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="none")
    lp_loss, lp_grad = ctc_loss_and_grad(lp, labels, input_lengths, label_lengths, reduction="none",
                                         log_probs=True)
    np.testing.assert_allclose(lp_loss, loss, rtol=1e-10, atol=1e-12)
    valid = np.arange(logits.shape[1])[None, :, None] < input_lengths[:, None, None]  # [N, T, 1]
    valid &= np.isfinite(loss)[:, None, None]  # infeasible samples get zero gradient in both modes
    np.testing.assert_allclose(lp_grad, np.where(valid, grad - np.exp(lp), 0.0), atol=1e-12)


@given(batch=batches(max_t=12, max_k=8))
def test_float32_inputs_close_to_float64(batch):
    logits, labels, input_lengths, label_lengths = batch
    loss64, grad64 = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction="mean",
                                       zero_infinity=True)
    loss32, grad32 = ctc_loss_and_grad(logits.astype(np.float32), labels, input_lengths, label_lengths,
                                       reduction="mean", zero_infinity=True)
    assert loss32.dtype == np.float32 and grad32.dtype == np.float32
    np.testing.assert_allclose(loss32, loss64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad32, grad64, atol=1e-5)


@given(T=st.integers(1, 8), K=st.integers(2, 5), seed=st.integers(0, 2**32 - 1))
def test_log_likelihoods_of_many_targets(T, K, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(T, K))
    targets = [rng.integers(1, K, size=rng.integers(0, 5)) for _ in range(4)]
    scores = ctc_log_likelihoods(log_softmax(logits), np.concatenate(targets), [len(w) for w in targets])
    expected = [-ctc_reference(logits, w)[0] for w in targets]
    np.testing.assert_allclose(scores, expected, rtol=1e-10, atol=1e-12)


@given(labels=st.lists(st.integers(1, 3), max_size=6))
def test_min_input_length_is_the_feasibility_threshold(labels):
    T = min_input_length(labels)
    rng = np.random.default_rng(len(labels))
    if T >= 1:
        assert math.isfinite(ctc_reference(rng.normal(size=(T, 4)), labels)[0])
    if T >= 2:
        assert math.isinf(ctc_reference(rng.normal(size=(T - 1, 4)), labels)[0])


GOOD = dict(x=np.zeros((2, 5, 4)), labels=np.array([[1, 2], [3, 0]], np.int32), input_lengths=[5, 4],
            label_lengths=[2, 1])


@pytest.mark.parametrize("change, message", [
    (dict(labels=np.array([[1, 0], [3, 0]], np.int32)), "sample 0 contain 0"),
    (dict(labels=np.array([[1, 4], [3, 0]], np.int32)), "sample 0 contain 4"),
    (dict(labels=np.array([[1.0, 2.0], [3.0, 0.0]])), "labels has dtype float64"),
    (dict(input_lengths=[6, 4]), "input_lengths\\[0\\] = 6 > T = 5"),
    (dict(input_lengths=[5, -1]), "input_lengths\\[1\\] = -1 is negative"),
    (dict(label_lengths=[2, -1]), "label_lengths\\[1\\] = -1 is negative"),
    (dict(label_lengths=[3, 1]), "label_lengths\\[0\\] = 3 > padded label width 2"),
    (dict(input_lengths=[5.0, 4.0]), "input_lengths has dtype float64"),
    (dict(input_lengths=[5, 4, 3]), "input_lengths has shape \\(3,\\)"),
    (dict(x=np.zeros((2, 5, 4), np.int32)), "dtype int32"),
    (dict(x=np.zeros((5, 4))), "shape \\(5, 4\\)"),
    (dict(x=np.full((2, 5, 4), np.nan)), "inputs\\[\\(0, 0, 0\\)\\] = nan"),
    (dict(labels=np.array([1, 2, 3, 1], np.int32)), "concatenated labels have 4 entries"),
    (dict(reduction="avg"), "reduction='avg'"),
])
def test_bad_input_raises_value_error(change, message):
    kwargs = {**GOOD, **change}
    with pytest.raises(ValueError, match=message):
        ctc_loss_and_grad(**kwargs)
    ctc_loss_and_grad(**GOOD)  # the unchanged arguments are valid


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_autograd_grad_equals_kernel_gradient(reduction, rng):
    logits = rng.normal(size=(3, 7, 5)).astype(np.float32)
    labels, input_lengths, label_lengths = rng.integers(1, 5, size=(3, 3)), [7, 5, 3], [3, 2, 1]
    x = Tensor(logits, requires_grad=True)
    loss = ctc_loss(x, labels, input_lengths, label_lengths, reduction=reduction)
    upstream = rng.normal(size=loss.shape).astype(np.float32)
    loss.backward(upstream)
    expected_loss, grad = ctc_loss_and_grad(logits, labels, input_lengths, label_lengths, reduction=reduction)
    np.testing.assert_array_equal(loss.data, expected_loss)
    scale = upstream[:, None, None] if reduction == "none" else upstream
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, grad * scale, rtol=1e-6)


def test_autograd_finite_differences_through_log_softmax(rng):
    labels, input_lengths, label_lengths = np.array([[1, 1], [2, 3]]), [6, 4], [2, 2]

    def loss_fn(x):
        return ctc_loss(F.log_softmax(x, axis=-1), labels, input_lengths, label_lengths,
                        reduction="none", log_probs=True)

    check_grad(loss_fn, [rng.normal(size=(2, 6, 4))], rng, label="ctc_loss(log_softmax)")
    check_grad(lambda x: ctc_loss(x, labels, input_lengths, label_lengths, reduction="mean"),
               [rng.normal(size=(2, 6, 4))], rng, label="ctc_loss(logits)")
