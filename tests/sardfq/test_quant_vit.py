"""Quantized ViT: every quantizer initialised, integer path (refq.quant.qlinear) == fake-quant simulation."""
import numpy as np
import pytest

from refq.models import vit
from refq.models.vit_train import predict
from refq.sardfq.quant_vit import PATCH_INPUT, QuantOps, init_quantizers, linear_weights, quantizer_summary

CFG = vit.ViTConfig(img_size=8, patch_size=4, in_chans=2, num_classes=5, embed_dim=16, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    p = vit.init_params(CFG, rng)
    p = {k: (v * 10 if v.ndim > 1 else v + rng.normal(0, 0.1, v.shape).astype(np.float32)) for k, v in p.items()}
    calib = rng.standard_normal((16, 2, 8, 8)).astype(np.float32)
    test = rng.standard_normal((400, 2, 8, 8)).astype(np.float32)
    return p, calib, test


def test_weight_codes_follow_a_new_weight_array(model):
    p, calib, test = model
    ops = init_quantizers(p, CFG, QuantOps(8, 8), calib)
    ops.integer = True
    before = predict(p, CFG, test[:20], ops=ops)
    changed = dict(p, **{"head.weight": -p["head.weight"]})  # a new array: the cached codes must not be reused
    after = predict(changed, CFG, test[:20], ops=ops)
    assert not np.allclose(before, after)
    ops.integer = False
    np.testing.assert_allclose(after, predict(changed, CFG, test[:20], ops=ops), rtol=1e-4, atol=1e-4)


def test_init_fits_every_quantizer(model):
    p, calib, _ = model
    ops = init_quantizers(p, CFG, QuantOps(4, 4), calib)
    assert set(ops.weights) == set(linear_weights(p, CFG))
    want = {PATCH_INPUT, "head.in"} | {f"blocks.{i}.{k}" for i in range(2) for k in (
        "attn.qkv.in", "attn.proj.in", "mlp.fc1.in", "mlp.fc2.in", "attn.qk.q", "attn.qk.k", "attn.av.v")}
    assert set(ops.act) == want
    assert all(not q.symmetric and q.granularity == "tensor" for q in ops.act.values())
    assert all(q.granularity == "channel" and q.axis == 0 for q in ops.weights.values())
    assert ops.act[PATCH_INPUT].bits == 8 and ops.act["head.in"].bits == 4
    rows = quantizer_summary(ops)
    assert len(rows) == len(ops.act) + len(ops.weights) and all(r["lo"] <= 0 <= r["hi"] for r in rows)


def test_uninitialised_quantizer_raises(model):
    p, _, test = model
    with pytest.raises(ValueError, match="not initialised"):
        predict(p, CFG, test[:2], ops=QuantOps(8, 8))


@pytest.mark.parametrize("bits", [8, 4])
def test_integer_path_agrees_with_simulation(model, bits):
    p, calib, test = model
    ops = init_quantizers(p, CFG, QuantOps(bits, bits), calib)
    sim = predict(p, CFG, test, ops=ops)
    ops.integer = True
    integer = predict(p, CFG, test, ops=ops)
    assert (sim.argmax(-1) == integer.argmax(-1)).mean() >= 0.995
    # identical integer values; float32 rounding may flip a rare activation code downstream, never many
    close = np.isclose(integer, sim, rtol=1e-4, atol=1e-5 * np.abs(sim).max()).all(axis=-1)  # [N]
    assert close.mean() >= 0.9


def test_more_bits_track_the_fp_model_better(model):
    p, calib, test = model
    fp = predict(p, CFG, test)
    errors = []
    for bits in (4, 6, 8):
        q = predict(p, CFG, test, ops=init_quantizers(p, CFG, QuantOps(bits, bits), calib))
        errors.append(np.mean((q - fp) ** 2))
    assert errors[0] > errors[1] > errors[2]


def test_quantization_switches_restore_the_fp_model(model):
    p, calib, test = model
    ops = init_quantizers(p, CFG, QuantOps(4, 4), calib)
    ops.quant_act = ops.quant_weight = False
    np.testing.assert_allclose(predict(p, CFG, test[:20], ops=ops), predict(p, CFG, test[:20]), rtol=1e-5, atol=1e-6)


def test_bad_bits_are_rejected():
    with pytest.raises(ValueError, match="wbits=1"):
        QuantOps(1, 4)
