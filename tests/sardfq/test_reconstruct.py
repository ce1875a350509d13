"""Block-wise reconstruction lowers each unit's output error and trains only Linear weights and biases."""
import numpy as np
import pytest

from refq.autograd import Tensor
from refq.models import vit
from refq.sardfq.quant_vit import QuantOps, init_quantizers
from refq.sardfq.reconstruct import lp_loss, reconstruct

CFG = vit.ViTConfig(img_size=8, patch_size=4, in_chans=1, num_classes=4, embed_dim=16, depth=2, num_heads=2,
                    distilled=True)


def test_lp_loss_sums_axis_one():
    pred = np.zeros((2, 3, 4))
    target = np.ones((2, 3, 4))
    target[0, :, 0] = 3.0  # (3 tokens x 9) + (3 x 1 x 3 others) for b = 0, c = 0 vs 3 per (b, c) elsewhere
    # per (b, c): sum over the 3 tokens of the squared error; mean over the 8 (b, c) pairs
    assert lp_loss(Tensor(pred), target).item() == pytest.approx((27 + 7 * 3) / 8)


def test_reconstruction_lowers_block_errors_and_touches_only_linears():
    rng = np.random.default_rng(0)
    p = vit.init_params(CFG, rng)
    p = {k: v * 10 if v.ndim > 1 else v for k, v in p.items()}
    calib = rng.standard_normal((8, 1, 8, 8)).astype(np.float32)
    ops = init_quantizers(p, CFG, QuantOps(4, 4), calib)
    frozen = {k: v.scale.copy() for k, v in ops.act.items()}
    new, history = reconstruct(p, CFG, ops, calib, rng, iters=25, lr=1e-3, batch_size=4, log=lambda m: None)
    assert [h["unit"] for h in history] == ["patch_embed", "block0", "block1", "head", "head_dist"]
    for h in history[1:]:
        assert h["loss_after"] < h["loss_before"], h
    for k in p:
        changed = not np.array_equal(p[k], new[k])
        linear = k.endswith((".weight", ".bias")) and any(s in k for s in ("qkv", "proj", "fc1", "fc2", "head"))
        assert changed == linear, k
        assert new[k].dtype == np.float32
    assert all(np.array_equal(ops.act[k].scale, s) for k, s in frozen.items())  # ranges stay frozen


def test_zero_iterations_is_the_identity():
    p = vit.init_params(CFG, np.random.default_rng(0))
    new, history = reconstruct(p, CFG, QuantOps(8, 8), np.zeros((2, 1, 8, 8), np.float32),
                               np.random.default_rng(0), iters=0)
    assert history == [] and all(new[k] is p[k] for k in p)
