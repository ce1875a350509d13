"""timm ViT/DeiT checkpoints -> refq's ViT: golden logits and attention from timm itself, config inference,
key/shape validation and the `refq convert --model vit` round trip.

The fixtures (tests/fixtures/timm_*.pth/.safetensors, vit_timm_golden.npz) are tiny random timm models saved by
tests/fixtures/make_vit_golden.py with torch and timm, which these tests never import.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.autograd import Tensor, no_grad
from refq.cli import main
from refq.io import read_checkpoint
from refq.io.npz import load_npz
from refq.io.safetensors import save_safetensors
from refq.models import vit, vit_timm
from refq.pretrained import load_vit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
with np.load(FIXTURES / "vit_timm_golden.npz", allow_pickle=False) as _golden:
    GOLDEN = dict(_golden)
ABOUT = json.loads(str(GOLDEN.pop("about")))
MODELS = sorted(ABOUT["models"])  # ['timm_deit_micro_distilled', 'timm_vit_micro']
VIT, DEIT = "timm_vit_micro", "timm_deit_micro_distilled"
RTOL = 1e-4  # max |refq - timm| / max |timm|


def read(name: str, ext: str) -> dict[str, np.ndarray]:
    return read_checkpoint(FIXTURES / f"{name}.{ext}")[0]


def heads(name: str) -> int:
    return ABOUT["models"][name]["num_heads"]


def run(params, cfg, x):
    with no_grad():
        logits, attns = vit.forward(params, cfg, Tensor(x), return_attn=True)
    return logits.data, [a.data for a in attns]


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("ext", ["pth", "safetensors"])
@pytest.mark.parametrize("name", MODELS)
def test_logits_and_attention_match_timm(name, ext):
    params, cfg, _ = vit_timm.from_timm(read(name, ext), heads(name))
    logits, attns = run(params, cfg, GOLDEN[f"{name}.x"])
    assert logits.dtype == np.float32
    err = rel_err(logits, GOLDEN[f"{name}.logits"])
    assert err < RTOL, f"{name}.{ext}: logits relative error {err:.2e}"
    assert len(attns) == cfg.depth
    for i, a in enumerate(attns):
        err = rel_err(a, GOLDEN[f"{name}.attn.{i}"])
        assert err < RTOL, f"{name}.{ext}: block {i} attention relative error {err:.2e}"
        np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5, err_msg=f"{name} block {i}")


@pytest.mark.parametrize("name", MODELS)
def test_pth_and_safetensors_hold_the_same_tensors(name):
    a = vit_timm.from_timm(read(name, "pth"), heads(name))
    b = vit_timm.from_timm(read(name, "safetensors"), heads(name))
    assert a[1] == b[1] and set(a[0]) == set(b[0])
    for key in a[0]:
        np.testing.assert_array_equal(a[0][key], b[0][key], err_msg=key)
    assert a[2] == ("model." if ABOUT["models"][name]["wrapped_pth"] else "") and b[2] == ""


@pytest.mark.parametrize("name", MODELS)
def test_config_is_read_off_the_shapes(name):
    spec = ABOUT["models"][name]
    _, cfg, _ = vit_timm.from_timm(read(name, "safetensors"), spec["num_heads"])
    grid = spec["img_size"] // spec["patch_size"]
    assert (cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio,
            cfg.num_classes) == (spec["img_size"], spec["patch_size"], 3, spec["embed_dim"], spec["depth"],
                                 spec["num_heads"], spec["mlp_ratio"], spec["num_classes"])
    assert cfg.distilled == (name == DEIT)
    assert cfg.num_tokens == grid ** 2 + 1 + int(cfg.distilled)
    assert cfg.eps == 1e-6 and cfg.mean == vit_timm.NORMALIZATIONS["imagenet"][0]


@given(patch=st.integers(1, 4), grid=st.integers(1, 4), chans=st.sampled_from([1, 3]), n_heads=st.integers(1, 3),
       head_dim=st.integers(1, 3), depth=st.integers(1, 3), ratio=st.sampled_from([1.0, 2.0, 4.0, 0.5]),
       classes=st.integers(1, 6), distilled=st.booleans())
def test_config_inference_recovers_any_config(patch, grid, chans, n_heads, head_dim, depth, ratio, classes, distilled):
    D = 2 * n_heads * head_dim  # even, so that ratio 0.5 gives an integer MLP width
    cfg = vit.ViTConfig(img_size=grid * patch, patch_size=patch, in_chans=chans, num_classes=classes, embed_dim=D,
                        depth=depth, num_heads=n_heads, mlp_ratio=ratio, distilled=distilled,
                        mean=(0.25,) * chans, std=(2.0,) * chans)
    params = vit.init_params(cfg, np.random.default_rng(0))
    assert vit_timm.config_from_timm_state_dict(params, n_heads, mean=cfg.mean, std=cfg.std) == cfg


def test_the_head_count_matters():
    params, cfg, _ = vit_timm.from_timm(read(VIT, "pth"), 4)  # 16 / 4 heads: valid, but not this model's 2
    logits, _ = run(params, cfg, GOLDEN[f"{VIT}.x"])
    assert rel_err(logits, GOLDEN[f"{VIT}.logits"]) > 1e-2
    with pytest.raises(ValueError, match="num_heads 3 does not divide the width 16"):
        vit_timm.from_timm(read(VIT, "pth"), 3)


def _bad(params: dict, change: str) -> dict:
    bad = dict(params)
    if change == "shape":
        bad["blocks.1.attn.proj.weight"] = np.zeros((16, 15), np.float32)
    elif change == "unknown":
        bad["fc_norm.weight"] = np.ones(16, np.float32)
    elif change == "missing":
        del bad["blocks.0.norm2.bias"]
    elif change == "dtype":
        bad["head.bias"] = np.zeros(5, np.int64)
    elif change == "tokens":
        bad["pos_embed"] = np.zeros((1, 18, 16), np.float32)
    elif change == "no_head":
        del bad["head.weight"], bad["head.bias"]
    return bad


@pytest.mark.parametrize("change, named", [("shape", "blocks.1.attn.proj.weight"), ("unknown", "fc_norm.weight"),
                                           ("missing", "blocks.0.norm2.bias"), ("dtype", "head.bias"),
                                           ("tokens", "pos_embed"), ("no_head", "head.weight")])
def test_bad_state_dicts_raise_naming_the_key(change, named):
    params = read(VIT, "safetensors")
    before = {k: v.copy() for k, v in params.items()}
    vit_timm.from_timm(params, 2)  # the unchanged state dict converts
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        vit_timm.from_timm(_bad(params, change), 2)
    assert set(params) == set(before) and all(np.array_equal(params[k], before[k]) for k in before)


def test_img_size_must_match_the_position_embeddings():
    params = read(VIT, "pth")
    assert vit_timm.from_timm(params, 2, img_size=16)[1].img_size == 16
    with pytest.raises(ValueError, match="img_size 32"):
        vit_timm.from_timm(params, 2, img_size=32)


def test_known_timm_names():
    assert vit_timm.heads_for_name("deit_tiny_patch16_224-a1311bcf.pth") == 3
    assert vit_timm.heads_for_name("/ckpt/deit_tiny_distilled_patch16_224.pth") == 3
    assert vit_timm.heads_for_name("deit_small_patch16_224.fb_in1k.safetensors") == 6
    assert vit_timm.heads_for_name("vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors") == 12
    assert vit_timm.heads_for_name("model.safetensors") is None
    assert vit_timm.normalization_for_name("vit_small_patch16_224.augreg_in21k_ft_in1k.pth") == "inception"
    assert vit_timm.normalization_for_name("deit_base_patch16_224.pth") == "imagenet"


@pytest.mark.parametrize("name, ext", [(VIT, "pth"), (DEIT, "safetensors"), (DEIT, "pth")])
def test_convert_cli_round_trip(tmp_path, capsys, name, ext):
    dst = tmp_path / f"{name}.npz"
    assert main(["convert", str(FIXTURES / f"{name}.{ext}"), str(dst), "--vit-heads", str(heads(name)), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["vit_config"]["num_heads"] == heads(name) and record["tensors"] == ABOUT["models"][name]["keys"]
    params, cfg, manifest = load_vit(dst)
    assert manifest["model"] == "vit" and manifest["normalization"] == "imagenet"
    assert manifest["source"] == f"{name}.{ext}" and manifest["source_format"] == ext
    want, want_cfg, _ = vit_timm.from_timm(read(name, ext), heads(name))
    assert cfg == want_cfg and set(params) == set(want)
    logits, _ = run(params, cfg, GOLDEN[f"{name}.x"])
    assert rel_err(logits, GOLDEN[f"{name}.logits"]) < RTOL


def test_convert_cli_normalisation_options(tmp_path, capsys):
    src = FIXTURES / f"{VIT}.safetensors"
    assert main(["convert", str(src), str(tmp_path / "a.npz"), "--vit-heads", "2", "--vit-norm", "inception"]) == 0
    assert "ViT config" in capsys.readouterr().out
    assert load_vit(tmp_path / "a.npz")[1].mean == (0.5, 0.5, 0.5)
    assert main(["convert", str(src), str(tmp_path / "b.npz"), "--vit-heads", "2",
                 "--vit-mean", "0.1", "0.2", "0.3", "--vit-std", "1", "2", "3"]) == 0
    _, cfg, manifest = load_vit(tmp_path / "b.npz")
    assert (cfg.mean, cfg.std, manifest["normalization"]) == ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0), "custom")
    named = tmp_path / "vit_micro_custom.pth"  # a vit_* name: mean/std 0.5 by default
    shutil.copy(FIXTURES / f"{VIT}.pth", named)
    assert main(["convert", str(named), str(tmp_path / "c.npz"), "--model", "vit", "--vit-heads", "2"]) == 0
    assert load_vit(tmp_path / "c.npz")[1].std == (0.5, 0.5, 0.5)


def test_convert_cli_reports_bad_timm_checkpoints(tmp_path, capsys):
    src, dst = FIXTURES / f"{VIT}.safetensors", tmp_path / "o.npz"
    assert main(["convert", str(src), str(dst), "--model", "vit"]) == 2
    assert "pass --vit-heads" in capsys.readouterr().err
    assert main(["convert", str(src), str(dst), "--model", "raw", "--vit-heads", "2"]) == 2
    assert "--model raw with --vit-heads" in capsys.readouterr().err
    save_safetensors(tmp_path / "bad.safetensors", _bad(read(VIT, "safetensors"), "unknown"))
    assert main(["convert", str(tmp_path / "bad.safetensors"), str(dst), "--vit-heads", "2"]) == 2
    assert "fc_norm.weight" in capsys.readouterr().err
    assert not dst.exists()


def test_raw_convert_is_unchanged_by_the_vit_options(tmp_path, capsys):
    assert main(["convert", str(FIXTURES / f"{DEIT}.pth"), str(tmp_path / "raw.npz"), "--json"]) == 0
    params, manifest = load_npz(tmp_path / "raw.npz")
    assert all(k.startswith("model.") for k in params) and "model" not in manifest
    with pytest.raises(ValueError, match="config"):
        load_vit(tmp_path / "raw.npz")
