"""ViT/DeiT model: shapes, attention normalisation, gradients, checkpoint validation."""
import numpy as np
import pytest

from refq.autograd import Tensor, no_grad
from refq.models import vit
from tests.gradcheck import check_grad

TINY = vit.ViTConfig(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2)


def _params64(cfg, rng):
    p = vit.init_params(cfg, rng)
    # larger weights than the 0.02 init so that every path carries signal in the gradient check
    return {k: (v * 10 if v.ndim > 1 else v).astype(np.float64) for k, v in p.items()}


@pytest.mark.parametrize("distilled", [False, True])
def test_shapes_and_attention_rows_sum_to_one(rng, distilled):
    cfg = vit.ViTConfig(img_size=8, patch_size=4, in_chans=2, num_classes=3, embed_dim=8, depth=2, num_heads=2,
                        distilled=distilled)
    params = vit.init_params(cfg, rng)
    x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    with no_grad():
        logits, attns = vit.forward(params, cfg, Tensor(x), return_attn=True)
    assert logits.shape == (3, 3) and logits.dtype == np.float32
    assert len(attns) == cfg.depth
    for a in attns:
        assert a.shape == (3, cfg.num_heads, cfg.num_tokens, cfg.num_tokens)
        np.testing.assert_allclose(a.data.sum(-1), 1.0, rtol=1e-5)
        assert (a.data >= 0).all()


def test_input_gradient_matches_finite_differences(rng):
    params = _params64(TINY, rng)
    x = rng.standard_normal((2, 2, 8, 8))
    check_grad(lambda t: vit.forward(params, TINY, t), [x], rng, atol=1e-6, rtol=1e-4, label="vit input")


def test_weight_gradient_matches_finite_differences(rng):
    params = _params64(TINY, rng)
    x = Tensor(rng.standard_normal((2, 2, 8, 8)))
    for key in ("blocks.1.attn.qkv.weight", "blocks.0.mlp.fc1.bias", "pos_embed"):
        def f(w, key=key):
            return vit.forward({**params, key: w}, TINY, x)
        check_grad(f, [params[key]], rng, atol=1e-6, rtol=1e-4, label=key)


def test_patchify_matches_strided_convolution(rng):
    from refq.autograd import functional as F
    cfg = TINY
    params = vit.init_params(cfg, rng)
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    with no_grad():
        ours = vit.embed(params, cfg, Tensor(x)).data[:, 1:]  # [B, N, D] patch tokens
        conv = F.conv2d(x, params["patch_embed.proj.weight"], params["patch_embed.proj.bias"], stride=4).data
    ref = conv.reshape(2, cfg.embed_dim, -1).transpose(0, 2, 1) + params["pos_embed"][:, 1:]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_check_params_names_the_bad_key(rng):
    params = vit.init_params(TINY, rng)
    bad = dict(params, **{"blocks.0.attn.qkv.weight": np.zeros((5, 8), np.float32)})
    with pytest.raises(ValueError, match="blocks.0.attn.qkv.weight"):
        vit.check_params(bad, TINY)
    missing = {k: v for k, v in params.items() if k != "head.bias"}
    with pytest.raises(ValueError, match="head.bias"):
        vit.check_params(missing, TINY)


def test_bad_input_shape_and_config():
    with pytest.raises(ValueError, match="input shape"):
        vit.forward(vit.init_params(TINY, np.random.default_rng(0)), TINY, Tensor(np.zeros((1, 1, 8, 8), np.float32)))
    with pytest.raises(ValueError, match="patch_size"):
        vit.ViTConfig(img_size=10, patch_size=4)
