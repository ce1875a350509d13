"""Synthesis loop on a tiny random ViT: it lowers its objective, respects the pixel range, honours the switches."""
from dataclasses import replace

import numpy as np
import pytest

from refq.models import vit
from refq.sardfq.synthesis import SynthConfig, objective, sample_targets, synthesize, valid_range

CFG = vit.ViTConfig(img_size=8, patch_size=4, in_chans=1, num_classes=6, embed_dim=16, depth=2, num_heads=2,
                    mean=(0.3,), std=(0.4,))
SMALL = SynthConfig(batch=4, iters=12, rounds=2, log_every=100)


@pytest.fixture(scope="module")
def params():
    p = vit.init_params(CFG, np.random.default_rng(0))
    return {k: v * 10 if v.ndim > 1 else v for k, v in p.items()}  # larger weights: non-trivial attention


def _quiet(msg):
    pass


@pytest.mark.parametrize("method, switches", [("sardfq", {}), ("psaq", {}),
                                              ("sardfq", {"apa": False, "msr": False, "sl": False})])
def test_synthesis_lowers_its_objective(params, method, switches):
    sc = replace(SMALL, method=method, alpha1=100.0, **switches)
    result = synthesize(params, CFG, sc, np.random.default_rng(1), log=_quiet)
    before = objective(params, CFG, sc, result, result.initial)
    after = objective(params, CFG, sc, result, result.images)
    assert after["loss"] < before["loss"], (before, after)
    lo, hi = valid_range(CFG)
    assert result.images.dtype == np.float32 and result.images.shape == (4, 1, 8, 8)
    assert (result.images >= lo - 1e-6).all() and (result.images <= hi + 1e-6).all()
    assert len(result.history) >= 2 and result.seconds > 0


def test_switches_select_the_loss_terms(params):
    rng = np.random.default_rng(0)
    full = sample_targets(CFG, SMALL, rng)
    assert full.priors.shape == (4, 1, 2, 4)  # APA on block 2 of 2, 2 heads, 2x2 patch grid
    assert full.plan is not None and full.image_targets.shape == (4, 6) and full.patch_targets.shape == (len(full.plan), 6)
    for b in range(4):  # the image target covers its own label and its regions' labels
        targets = {int(full.labels[b])} | set(full.plan.labels[full.plan.batch_index == b].tolist())
        assert set(np.flatnonzero(full.image_targets[b] > full.image_targets[b].min()).tolist()) == targets
    bare = sample_targets(CFG, replace(SMALL, apa=False, msr=False, sl=False), rng)
    assert bare.priors is None and bare.plan is None and bare.image_targets is None
    parts = objective(params, CFG, replace(SMALL, apa=False, msr=False, sl=False), bare,
                      np.zeros((4, 1, 8, 8), np.float32))
    assert set(parts) == {"ce", "tv", "loss"}
    parts = objective(params, CFG, SMALL, full, np.zeros((4, 1, 8, 8), np.float32))
    assert set(parts) == {"apa", "ce", "msr", "tv", "loss"}


def test_psaq_objective_has_pse(params):
    sc = replace(SMALL, method="psaq")
    t = sample_targets(CFG, sc, np.random.default_rng(0))
    parts = objective(params, CFG, sc, t, np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32))
    assert set(parts) == {"pse", "ce", "tv", "loss"}


def test_noise_method_returns_standard_normal_images(params):
    result = synthesize(params, CFG, replace(SMALL, method="noise", batch=64), np.random.default_rng(0), log=_quiet)
    assert result.images.shape == (64, 1, 8, 8) and result.history == []
    assert abs(result.images.mean()) < 0.1 and abs(result.images.std() - 1) < 0.1


def test_synthesis_is_seeded(params):
    sc = replace(SMALL, iters=3, rounds=1)
    a = synthesize(params, CFG, sc, np.random.default_rng(5), log=_quiet).images
    b = synthesize(params, CFG, sc, np.random.default_rng(5), log=_quiet).images
    c = synthesize(params, CFG, sc, np.random.default_rng(6), log=_quiet).images
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_chunked_batches_give_the_same_gradient_step(params):
    sc = replace(SMALL, iters=2, rounds=1, method="sardfq")
    whole = synthesize(params, CFG, sc, np.random.default_rng(3), log=_quiet).images
    chunked = synthesize(params, CFG, replace(sc, chunk=3), np.random.default_rng(3), log=_quiet).images
    np.testing.assert_allclose(whole, chunked, atol=1e-5)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="method='gan'"):
        SynthConfig(method="gan")
