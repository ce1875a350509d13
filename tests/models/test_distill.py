"""DeiT's distillation objectives (refq.models.distill) and the convnet teacher (refq.models.cnn)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.models import cnn, vit
from refq.models.distill import distillation_loss, hard_distillation_loss, soft_distillation_loss
from refq.models.vit_train import accuracy, train
from tests.gradcheck import check_grad


def _ce(logits: np.ndarray, target_probs: np.ndarray) -> float:
    """Mean cross-entropy in float64 against probability targets."""
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-(target_probs * logp).sum(-1).mean())


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_hard_distillation_on_a_hand_computed_case():
    student = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))  # log-probabilities as logits
    labels, teacher = np.array([0, 1]), np.array([[0.0, 5.0, 1.0], [0.0, 9.0, 0.0]])  # teacher says 1, 1
    loss = hard_distillation_loss(Tensor(student), labels, teacher).item()
    expected = 0.5 * (-(np.log(0.5) + np.log(0.8)) / 2) + 0.5 * (-(np.log(0.25) + np.log(0.8)) / 2)
    assert loss == pytest.approx(expected, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 1.0), st.floats(0.5, 4.0))
def test_soft_distillation_is_ce_plus_scaled_kl(seed, weight, tau):
    rng = np.random.default_rng(seed)
    s, t, y = rng.normal(size=(5, 4)) * 2, rng.normal(size=(5, 4)) * 2, rng.integers(0, 4, 5)
    got = soft_distillation_loss(Tensor(s), y, t, weight, tau).item()
    p = _softmax(t / tau)
    kl = float((p * (np.log(p) - np.log(_softmax(s / tau)))).sum(-1).mean())
    entropy = float(-(p * np.log(p)).sum(-1).mean())  # the constant that separates KL from cross-entropy
    expected = (1 - weight) * _ce(s, np.eye(4)[y]) + weight * tau ** 2 * (kl + entropy)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_hard_distillation_equals_cross_entropy_when_the_teacher_agrees_with_the_labels(seed):
    rng = np.random.default_rng(seed)
    s, y = rng.normal(size=(6, 5)), rng.integers(0, 5, 6)
    teacher = np.eye(5)[y] * 3 + rng.normal(size=(6, 5)) * 0.1  # top-1 is always the label
    assert hard_distillation_loss(Tensor(s), y, teacher).item() == \
        pytest.approx(F.cross_entropy(Tensor(s), y).item(), rel=1e-12)


def test_distillation_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    y, teacher = rng.integers(0, 4, 3), rng.normal(size=(3, 4))
    check_grad(lambda s: soft_distillation_loss(s, y, teacher, 0.7, 2.0), [rng.normal(size=(3, 4))], rng)
    check_grad(lambda s: hard_distillation_loss(s, y, teacher), [rng.normal(size=(3, 4))], rng)


def test_bad_distillation_arguments_name_the_value():
    s, y, t = Tensor(np.zeros((2, 3))), np.array([0, 1]), np.zeros((2, 3))
    with pytest.raises(ValueError, match="weight=1.5"):
        soft_distillation_loss(s, y, t, weight=1.5)
    with pytest.raises(ValueError, match="tau=0"):
        soft_distillation_loss(s, y, t, tau=0)
    with pytest.raises(ValueError, match="'medium'"):
        distillation_loss("medium", s, y, t)


def test_cnn_config_checks_and_round_trip():
    cfg = cnn.CNNConfig(channels=(4, 8, 16))
    assert cnn.CNNConfig.from_dict(cfg.to_dict()) == cfg and cfg.features == 16 * 7 * 7
    with pytest.raises(ValueError, match="img_size 30"):
        cnn.CNNConfig(img_size=30)  # two 2x2 poolings need a multiple of 4
    with pytest.raises(ValueError, match="channels"):
        cnn.CNNConfig(channels=())
    with pytest.raises(ValueError, match="not a ViT"):
        vit.ViTConfig.from_dict(cfg.to_dict())
    with pytest.raises(ValueError, match="expected 'cnn'"):
        cnn.CNNConfig.from_dict(vit.ViTConfig().to_dict())
    params = cnn.init_params(cfg, np.random.default_rng(0))
    cnn.check_params(params, cfg)
    with pytest.raises(ValueError, match="head.weight"):
        cnn.check_params({**params, "head.weight": params["head.weight"][:, :-1]}, cfg)
    with pytest.raises(ValueError, match="input shape"):
        cnn.forward(params, cfg, Tensor(np.zeros((2, 1, 24, 24), np.float32)))


def test_cnn_forward_matches_a_plain_numpy_convnet():
    """Reference: each 3x3 'same' convolution as an explicit sum over the nine kernel offsets, in float64."""
    cfg = cnn.CNNConfig(img_size=8, channels=(3, 5))
    rng = np.random.default_rng(1)
    params = cnn.init_params(cfg, rng)
    x = rng.normal(size=(2, 1, 8, 8)).astype(np.float32)

    def conv3x3(h, w, b):
        hp = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((h.shape[0], w.shape[0]) + h.shape[2:])
        for dy in range(3):
            for dx in range(3):
                out += np.einsum("bchw,oc->bohw", hp[:, :, dy:dy + h.shape[2], dx:dx + h.shape[3]], w[:, :, dy, dx])
        return out + b[None, :, None, None]

    h = np.maximum(conv3x3(x.astype(np.float64), params["convs.0.weight"], params["convs.0.bias"]), 0)
    h = h.reshape(2, 3, 4, 2, 4, 2).max(axis=(3, 5))  # 2x2 max pooling
    h = np.maximum(conv3x3(h, params["convs.1.weight"], params["convs.1.bias"]), 0)
    want = h.reshape(2, -1) @ params["head.weight"].T.astype(np.float64) + params["head.bias"]
    got = cnn.forward(params, cfg, Tensor(x)).data
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _stripes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A two-class toy problem: horizontal vs vertical stripes plus noise, 8x8."""
    y = rng.integers(0, 2, n)
    base = np.tile((np.arange(8) % 2).astype(np.float32), (8, 1))  # vertical stripes
    x = np.where(y[:, None, None] == 1, base[None], base.T[None]) + rng.normal(0, 0.3, (n, 8, 8))
    return x[:, None].astype(np.float32), y


def test_a_cnn_teacher_learns_and_a_vit_student_distils_from_it():
    rng = np.random.default_rng(0)
    x, y = _stripes(256, rng)
    x_test, y_test = _stripes(128, rng)
    t_cfg = cnn.CNNConfig(img_size=8, num_classes=2, channels=(4, 8))
    quiet = dict(log=lambda msg: None, augmentation="none", batch_size=32, warmup_epochs=0.1)
    t_params, history = train(t_cfg, x, y, x_test, y_test, np.random.default_rng(1), epochs=3, lr=3e-3, **quiet)
    assert history[-1]["test_top1"] > 0.9  # stripes are easy for a convnet

    s_cfg = vit.ViTConfig(img_size=8, patch_size=4, num_classes=2, embed_dim=8, depth=1, num_heads=2)
    flipped = 1 - y  # train the student on wrong labels: only the teacher's half of Eq. 3 teaches it
    frozen = {k: v.copy() for k, v in t_params.items()}
    s_params, _ = train(s_cfg, x, flipped, x_test, y_test, np.random.default_rng(2), epochs=1, lr=1e-3,
                        teacher=(t_params, t_cfg), distill="soft", distill_weight=1.0, **quiet)
    assert all(np.array_equal(frozen[k], t_params[k]) for k in frozen)  # the teacher is not trained
    s_params, _ = train(s_cfg, x, flipped, x_test, y_test, np.random.default_rng(2), epochs=8, lr=3e-3,
                        teacher=(t_params, t_cfg), distill="soft", distill_weight=1.0, **quiet)
    assert accuracy(s_params, s_cfg, x_test, y_test) > 0.8  # follows the teacher, not the (inverted) labels
    with pytest.raises(ValueError, match="distill='medium'"):
        train(s_cfg, x, y, x_test, y_test, rng, epochs=1, teacher=(t_params, t_cfg), distill="medium", **quiet)


def test_training_resumed_from_an_epoch_state_ends_bit_for_bit_where_an_uninterrupted_run_ends():
    rng = np.random.default_rng(0)
    x, y = _stripes(128, rng)
    cfg = vit.ViTConfig(img_size=8, patch_size=4, num_classes=2, embed_dim=8, depth=1, num_heads=2)
    kwargs = dict(log=lambda msg: None, augmentation="crop-flip", batch_size=32, warmup_epochs=0.5, epochs=3,
                  lr=3e-3, ema=0.9)
    saved = []
    straight, history = train(cfg, x, y, x, y, np.random.default_rng(5),
                              on_epoch=lambda arrays, meta: saved.append((arrays, meta)), **kwargs)
    assert [meta["epoch"] for _, meta in saved] == [1, 2]  # after every epoch but the last
    snapshot = {k: v.copy() for k, v in saved[0][0].items()}
    caller_rng = np.random.default_rng(99)
    resumed, history_b = train(cfg, x, y, x, y, caller_rng, resume=saved[0], **kwargs)
    assert straight.keys() == resumed.keys()
    assert all(np.array_equal(straight[k], resumed[k]) for k in straight)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in history_b]
    assert all(np.array_equal(snapshot[k], saved[0][0][k]) for k in snapshot)  # the state is not modified
    with pytest.raises(ValueError, match="ema differs"):
        train(cfg, x, y, x, y, caller_rng, resume=saved[0], **{**kwargs, "ema": 0.0})
    wider = vit.ViTConfig(img_size=8, patch_size=4, num_classes=2, embed_dim=12, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="shape"):
        train(wider, x, y, x, y, caller_rng, resume=saved[0], **kwargs)
    with pytest.raises(ValueError, match="epoch 2 of a run of 2"):
        train(cfg, x, y, x, y, caller_rng, resume=saved[1], **{**kwargs, "epochs": 2})
