"""A tiny joint model overfits a handful of synthetic images: the loss falls and it reads its training words."""
from __future__ import annotations

import numpy as np
import pytest

from refq.spotter import model as M
from refq.spotter.infer import recognize_gt
from refq.spotter.synth import SynthWord, generate_scene
from refq.spotter.train import TrainConfig, clip_gradients, train

TINY = M.SpotterConfig(backbone=(8, 16, 16, 16), det_ctx=8, rec_channels=(16, 16, 24), text_scale=64.0)


@pytest.fixture(scope="module")
def tiny_data():
    scenes = [generate_scene(np.random.default_rng([7, i]), size=(48, 128), max_words=2) for i in range(4)]
    images = np.stack([s[0] for s in scenes])
    words = [[w for w in s[1] if not w.dnc] for s in scenes]  # keep the test about readable words
    return images, words


def test_tiny_model_overfits_a_handful_of_images(tiny_data):
    images, words = tiny_data
    tcfg = TrainConfig(steps=160, batch_size=4, lr=3e-3, warmup=10, jitter=0.0, crop_words=0, pred_from=1.0,
                       eval_every=10_000)
    losses = []
    params, _ = train(TINY, tcfg, images, words, np.random.default_rng(0), log=losses.append)
    first = float(losses[0].split(" loss ")[1].split()[0])
    last = float(losses[-1].split(" loss ")[1].split()[0])
    assert last < 0.2 * first, (first, last)
    preds, gts = recognize_gt(params, TINY, images, words)
    normalized = [TINY.alphabet.normalize(t) for t in gts]
    correct = sum(p == g for p, g in zip(preds, normalized))
    assert correct >= len(gts) - 1, list(zip(preds, normalized))


def test_clip_gradients_bounds_the_global_norm():
    from refq.autograd import Tensor

    params = {k: Tensor(np.zeros(n, np.float32), requires_grad=True) for k, n in (("a", 3), ("b", 4))}
    params["a"].grad = np.full(3, 3.0, np.float32)
    params["b"].grad = np.full(4, 4.0, np.float32)
    norm = clip_gradients(params, 1.0)
    assert norm == pytest.approx(np.sqrt(27 + 64))
    total = np.sqrt(sum(float((t.grad ** 2).sum()) for t in params.values()))
    assert total == pytest.approx(1.0, rel=1e-5)


def test_train_rejects_mismatched_data():
    with pytest.raises(ValueError, match="word lists"):
        train(TINY, TrainConfig(steps=1), np.zeros((2, 32, 32), np.uint8), [[SynthWord((0, 0, 9, 9), "a", False)]],
              np.random.default_rng(0))
