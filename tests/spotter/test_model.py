"""The spotter model: config and params, shapes, padding independence, the BiLSTM gradient, word crops."""
from __future__ import annotations

import numpy as np
import pytest

from refq.autograd import Tensor, no_grad
from refq.spotter import model as M
from refq.spotter.recurrent import bilstm, init_bilstm, reverse_index
from refq.spotter.synth import SynthWord
from refq.spotter.train import TrainConfig, pack_word_crops
from tests.gradcheck import check_grad

TINY = M.SpotterConfig(backbone=(4, 6, 8, 8), det_ctx=4, rec_channels=(8, 8, 8), text_scale=64.0)


def test_default_model_size_and_round_trip(rng):
    cfg = M.SpotterConfig()
    params = M.init_params(cfg, rng)
    M.check_params(params, cfg)
    assert 300_000 <= M.param_count(params) <= 600_000  # a small model for 2 CPU cores: 0.3-0.6 M parameters
    assert M.SpotterConfig.from_dict(cfg.to_dict()) == cfg
    assert set(M.init_params(M.SpotterConfig(tasks="det"), rng)) < set(params)
    assert not any(k.startswith("det.") for k in M.init_params(M.SpotterConfig(tasks="rec"), rng))


def test_check_params_names_the_problem(rng):
    params = M.init_params(TINY, rng)
    with pytest.raises(ValueError, match="missing"):
        M.check_params({k: v for k, v in params.items() if k != "rec.out.bias"}, TINY)
    bad = dict(params, **{"rec.out.bias": params["rec.out.bias"].astype(np.float64)})
    with pytest.raises(ValueError, match="rec.out.bias"):
        M.check_params(bad, TINY)
    with pytest.raises(ValueError, match="tasks"):
        M.SpotterConfig(tasks="both")
    with pytest.raises(ValueError, match="rec_pad"):
        M.SpotterConfig(rec_pad=1.5)


def test_forward_shapes(rng):
    p = M.init_params(TINY, rng)
    images = rng.integers(0, 256, (2, 32, 48), dtype=np.uint8)
    with no_grad():
        feats = M.backbone(p, Tensor(M.normalize_images(images)))
        score, geo = M.det_head(p, TINY, feats)
        boxes = np.array([[2.0, 3.0, 40.0, 20.0], [5.0, 5.0, 15.0, 30.0]])
        widths = M.roi_widths(TINY, boxes)
        logits = M.recognizer(p, TINY, M.pool_rois(TINY, feats, boxes, np.array([0, 1]), widths), widths)
    assert feats.shape == (2, 8, 8, 12) and score.shape == (2, 1, 8, 12) and geo.shape == (2, 4, 8, 12)
    assert np.all((geo.data > 0) & (geo.data < TINY.text_scale))
    assert logits.shape == (2, widths.max(), TINY.num_classes) and logits.dtype == np.float32


@pytest.mark.parametrize("kind", ["fcr", "lstm"])
def test_a_word_reads_the_same_alone_and_in_a_padded_batch(rng, kind):
    cfg = M.SpotterConfig(backbone=(4, 6, 8, 8), rec_channels=(8, 8, 8), recognizer=kind, lstm_hidden=5, tasks="rec")
    p = M.init_params(cfg, rng)
    pooled = rng.standard_normal((3, 8, 8, 11)).astype(np.float32)  # [R, C, 8, T]
    widths = np.array([11, 4, 7])
    pooled *= M.column_mask(widths)  # zero padding, as text pooling leaves it
    with no_grad():
        batch = M.recognizer(p, cfg, Tensor(pooled), widths).data  # [3, 11, K]
        for r, w in enumerate(widths):
            alone = M.recognizer(p, cfg, Tensor(pooled[r:r + 1, :, :, :w]), widths[r:r + 1]).data
            np.testing.assert_allclose(batch[r, :w], alone[0], rtol=1e-5, atol=1e-5)


def test_bilstm_gradient(rng):
    p = {k: v.astype(np.float64) for k, v in init_bilstm("l", 3, 2, rng).items()}
    lengths = np.array([4, 2])
    check_grad(lambda x: bilstm(p, "l", x, lengths), [rng.standard_normal((2, 4, 3))], rng, label="bilstm")


def test_reverse_index_reverses_within_each_length():
    np.testing.assert_array_equal(reverse_index(np.array([3, 1]), 4), [[2, 1, 0, 3], [0, 1, 2, 3]])


def test_word_crops_see_the_same_features_as_the_whole_image(rng):
    cfg = M.SpotterConfig(backbone=(4, 6, 8, 8), rec_channels=(8, 8, 8), tasks="rec")
    p = M.init_params(cfg, rng)
    images = rng.integers(0, 256, (2, 96, 192), dtype=np.uint8)
    words = [[SynthWord((30, 30, 70, 48), "abc", False)], [SynthWord((40, 50, 100, 70), "hello", False)]]
    canvases, boxes, owner, texts = pack_word_crops(images, words, [(0, 0), (1, 0)], rng,
                                                    TrainConfig(jitter=0.0), cfg.stride)
    assert texts == ["hello", "abc"] and len(canvases) == 1  # tallest crop first, both on one canvas
    with no_grad():
        on_canvas = M.pool_rois(cfg, M.backbone(p, Tensor(M.normalize_images(canvases))), boxes, owner,
                                np.array([9, 9])).data
        for r, (i, text) in enumerate(((1, "hello"), (0, "abc"))):
            full = M.backbone(p, Tensor(M.normalize_images(images[i:i + 1])))
            ref = M.pool_rois(cfg, full, np.array([words[i][0].box], np.float64), np.array([0]), np.array([9])).data
            np.testing.assert_allclose(on_canvas[r], ref[0], rtol=1e-5, atol=1e-6, err_msg=text)
