"""SARDFQ / PSAQ synthesis losses: hand-computed values and finite-difference gradients."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.sardfq import losses
from tests.gradcheck import check_grad


def _attention(rng, B, H, N):
    """Random row-stochastic attention maps [B, H, N, N] (float64)."""
    return F.softmax(Tensor(rng.standard_normal((B, H, N, N))), axis=-1).data


@pytest.mark.parametrize("depth, mode, expected", [
    (6, "latter_half", [3, 4, 5]), (12, "latter_half", list(range(6, 12))), (6, "literal", [2, 3, 4, 5]),
    (12, "literal", list(range(5, 12))), (4, "all", [0, 1, 2, 3]), (1, "latter_half", [0]), (1, "literal", [0]),
])
def test_apa_blocks(depth, mode, expected):
    assert losses.apa_blocks(depth, mode) == expected


def test_apa_blocks_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode='first'"):
        losses.apa_blocks(6, "first")


def test_apa_loss_hand_computed(rng):
    # two blocks of a depth-4 model, APA on blocks 2 and 3 (0-indexed) with weights 3/4 and 4/4
    B, H, N = 2, 2, 5
    attns = [Tensor(_attention(rng, B, H, N)) for _ in range(4)]
    priors = rng.random((B, 2, H, N - 1))
    got = losses.apa_loss(attns, priors, [2, 3], depth=4).item()
    want = 0.0
    for j, l in enumerate([2, 3]):
        for h in range(H):
            want += (l + 1) / 4 * np.mean((attns[l].data[:, h, 0, 1:] - priors[:, j, h]) ** 2)
    assert got == pytest.approx(want, rel=1e-12)
    unweighted = losses.apa_loss(attns, priors, [2, 3], depth=4, depth_weight=False).item()
    assert unweighted > got  # the weights l/L are < 1 for the first block


def test_apa_loss_is_zero_at_the_prior(rng):
    attns = [Tensor(_attention(rng, 3, 2, 10))]
    priors = attns[0].data[:, None, :, 0, 1:]  # [B, 1, H, P]: the attention itself
    assert losses.apa_loss(attns, priors, [0], depth=1).item() == 0.0


def test_apa_loss_gradient(rng):
    B, H, N = 2, 2, 5
    priors = rng.random((B, 1, H, N - 1)) / N

    def f(scores):
        return losses.apa_loss([None, F.softmax(scores, axis=-1)], priors, [1], depth=2)

    check_grad(f, [rng.standard_normal((B, H, N, N))], rng, label="apa")


def test_apa_loss_rejects_wrong_prior_shape(rng):
    attns = [Tensor(_attention(rng, 2, 2, 5))]
    with pytest.raises(ValueError, match="priors"):
        losses.apa_loss(attns, np.zeros((2, 1, 2, 3)), [0], depth=1)


@given(st.integers(2, 12), st.integers(1, 4))
def test_soft_labels_properties(num_classes, rows):
    rng = np.random.default_rng(num_classes * 10 + rows)
    targets = [rng.choice(num_classes, size=rng.integers(1, num_classes + 1), replace=False).tolist()
               for _ in range(rows)]
    t = losses.soft_labels(num_classes, targets, rng)
    assert t.shape == (rows, num_classes) and t.dtype == np.float32
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
    for r, classes in enumerate(targets):
        others = np.setdiff1d(np.arange(num_classes), classes)
        if others.size:  # every target class outweighs every non-target class by e^5 at least
            assert t[r, classes].min() >= t[r, others].max() * math.exp(5.0) * (1 - 1e-5)
            np.testing.assert_allclose(t[r, others], t[r, others[0]])  # Z = 0 for all non-targets


def test_soft_label_single_target_probability_range(rng):
    # one target among 1000 classes: e^z / (e^z + 999) with z in [5, 10] (docs/sardfq.md S4: [0.129, 0.957])
    t = losses.soft_labels(1000, [[7]] * 200, rng)
    assert t[:, 7].min() >= math.exp(5) / (math.exp(5) + 999) - 1e-6
    assert t[:, 7].max() <= math.exp(10) / (math.exp(10) + 999) + 1e-6


def test_soft_labels_reject_bad_ids(rng):
    with pytest.raises(ValueError, match=r"row 0 has targets \[5\]"):
        losses.soft_labels(5, [[5]], rng)


def test_soft_cross_entropy_hand_computed():
    logits = np.array([[0.0, math.log(3.0)], [1.0, 1.0]])
    targets = np.array([[0.5, 0.5], [1.0, 0.0]])
    # row 0: softmax = (1/4, 3/4); row 1: (1/2, 1/2)
    row0 = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    row1 = -math.log(0.5)
    assert losses.soft_cross_entropy(logits, targets).item() == pytest.approx((row0 + row1) / 2)
    assert losses.soft_cross_entropy(logits, targets, reduction="sum").item() == pytest.approx(row0 + row1)


def test_soft_cross_entropy_matches_one_hot_cross_entropy(rng):
    logits = rng.standard_normal((4, 6))
    labels = np.array([0, 5, 2, 2])
    one_hot = np.eye(6)[labels]
    assert losses.soft_cross_entropy(logits, one_hot).item() == pytest.approx(F.cross_entropy(logits, labels).item())


def test_soft_cross_entropy_gradient(rng):
    targets = losses.soft_labels(5, [[0, 1], [3]], rng).astype(np.float64)
    check_grad(lambda z: losses.soft_cross_entropy(z, targets), [rng.standard_normal((2, 5))], rng, label="softce")


def test_total_variation_hand_computed():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 0] = 1.0  # one bright pixel in the top-left corner
    # d1 = x00 - x01 = 1, d2 = x00 - x10 = 1, d3 = x10 - x01 = 0, d4 = x00 - x11 = 1
    assert losses.total_variation(Tensor(x)).item() == pytest.approx(3.0)
    x2 = np.arange(9.0).reshape(1, 1, 3, 3)  # x(i, j) = 3 i + j
    # d1 = -1, d2 = -3, d3 = 3 - 1 = 2, d4 = -4 on all 4 positions: Frobenius norms 2 * |d|
    assert losses.total_variation(Tensor(x2)).item() == pytest.approx(2 * (1 + 3 + 2 + 4))
    assert losses.tv_loss(Tensor(x2), target=25.0).item() == pytest.approx(5.0)
    assert losses.tv_loss(Tensor(x2), target=15.0).item() == pytest.approx(5.0)
    assert losses.tv_loss(Tensor(x2)).item() == pytest.approx(20.0)


def test_total_variation_of_a_constant_image_is_zero():
    assert losses.total_variation(Tensor(np.full((2, 3, 4, 4), 0.7))).item() == pytest.approx(0.0)


@pytest.mark.parametrize("target", [None, 0.5, 50.0])
def test_tv_loss_gradient(rng, target):
    check_grad(lambda x: losses.tv_loss(x, target), [rng.standard_normal((2, 2, 4, 5))], rng, label=f"tv {target}")


def test_psaq_tv_target_scaling(rng):
    assert 2500 <= losses.psaq_tv_target((32, 3, 224, 224), rng) <= 3000
    small = [losses.psaq_tv_target((32, 1, 28, 28), rng) for _ in range(50)]
    factor = math.sqrt(32 * 28 * 28 / losses.PSAQ_ELEMENTS)
    assert 2500 * factor <= min(small) and max(small) <= 3000 * factor


def test_kde_entropy_of_a_single_sample_matches_the_gaussian_integrand():
    h, lo, hi = 0.5, -1.0, 1.0
    grid = np.linspace(lo, hi, 10)
    pdf = np.exp(-0.5 * grid ** 2 / h ** 2) / math.sqrt(2 * math.pi * h ** 2)
    f = -(pdf + 1e-4) * np.log(pdf + 1e-4)
    want = np.sum((f[1:] + f[:-1]) / 2 * (grid[1] - grid[0]))
    got = losses.kde_entropy(Tensor(np.zeros((1, 1))), lo, hi, bandwidth=h).item()
    assert got == pytest.approx(want, rel=1e-10)


def test_kde_entropy_gradient(rng):
    samples = rng.uniform(-0.5, 0.5, size=(2, 6))
    check_grad(lambda s: losses.kde_entropy(s, -0.6, 0.6, bandwidth=0.2), [samples], rng, label="kde")


def test_patch_similarity_is_cosine(rng):
    out = rng.standard_normal((2, 3, 5, 4))  # [B, H, N, Dh]
    s = losses.patch_similarity(Tensor(out)).data
    p = out.mean(axis=1)[:, 1:]  # [B, P, Dh]
    u = p / np.linalg.norm(p, axis=-1, keepdims=True)
    np.testing.assert_allclose(s, u @ u.transpose(0, 2, 1), rtol=1e-10)
    np.testing.assert_allclose(np.diagonal(s, axis1=1, axis2=2), 1.0, rtol=1e-10)


def test_pse_loss_gradient(rng):
    # the KDE grid bounds come from the data (constants); keep them fixed by checking through kde_entropy
    # with the bounds of the unperturbed similarities, which is what pse_loss differentiates
    out = rng.standard_normal((2, 2, 4, 3))
    s = losses.patch_similarity(Tensor(out)).data
    lo, hi = float(s.min()), float(s.max())

    def f(o):
        sim = losses.patch_similarity(o)
        return F.neg(losses.kde_entropy(F.reshape(sim, (2, -1)), lo, hi, bandwidth=0.3))

    check_grad(f, [out], rng, atol=1e-5, rtol=1e-4, label="pse")
    np.testing.assert_allclose(losses.pse_loss([Tensor(out)], bandwidth=0.3).item(), f(Tensor(out)).item(), rtol=1e-12)


def test_pse_loss_sums_blocks(rng):
    outs = [Tensor(rng.standard_normal((2, 2, 5, 3))) for _ in range(3)]
    total = losses.pse_loss(outs).item()
    assert total == pytest.approx(sum(losses.pse_loss([o]).item() for o in outs))
