"""`refq vit dfq` end to end on a tiny timm-style checkpoint (safetensors -> refq convert -> dfq) and an image folder."""
import json

import numpy as np
import pytest
from PIL import Image

from refq.cli import main
from refq.io.npz import save_npz
from refq.io.safetensors import save_safetensors
from refq.models import vit
from refq.sardfq import pipeline

TINY = vit.ViTConfig(img_size=32, patch_size=8, in_chans=3, num_classes=3, embed_dim=16, depth=2, num_heads=2,
                     mean=pipeline.IMAGENET_MEAN, std=pipeline.IMAGENET_STD)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    """A converted tiny timm ViT (no ViTConfig in its manifest) and 3 classes x 3 generated images."""
    root = tmp_path_factory.mktemp("dfq")
    rng = np.random.default_rng(0)
    params = {k: v * 10 if v.ndim > 1 else v for k, v in vit.init_params(TINY, rng).items()}
    save_safetensors(root / "tiny_vit.safetensors", params)
    assert main(["convert", str(root / "tiny_vit.safetensors"), str(root / "tiny_vit.npz")]) == 0
    for c, name in enumerate(("cat", "dog", "eel")):
        (root / "val" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (36 + 4 * i, 40, 3)).astype(np.uint8)  # not square: resize + crop
            pixels[..., c] = 255  # a class-coloured tint
            Image.fromarray(pixels).save(root / "val" / name / f"{i}.png")
    return root


def test_infer_config_reads_the_shapes(fixture_dir):
    params, cfg, manifest = pipeline.load_model(fixture_dir / "tiny_vit.npz", heads=2)
    assert cfg == TINY
    assert manifest["source_format"] == "safetensors"
    _, cfg_default, _ = pipeline.load_model(fixture_dir / "tiny_vit.npz")
    assert cfg_default.num_heads == 1  # width 16 < 64: timm's D/64 rule gives 1


def test_load_model_strips_a_state_dict_prefix_and_keeps_a_refq_config(tmp_path, rng):
    cfg = vit.ViTConfig(img_size=8, patch_size=4, in_chans=1, num_classes=2, embed_dim=8, depth=1, num_heads=2,
                        distilled=True)
    params = vit.init_params(cfg, rng)
    save_npz(tmp_path / "deit.npz", {"model." + k: v for k, v in params.items()}, {"config": {}})
    got, inferred, _ = pipeline.load_model(tmp_path / "deit.npz", heads=2)
    assert inferred.distilled and inferred.grid == 2 and set(got) == set(params)
    save_npz(tmp_path / "refq.npz", params, {"config": cfg.to_dict()})
    assert pipeline.load_model(tmp_path / "refq.npz")[1] == cfg


def test_image_folder_loading(fixture_dir, tmp_path):
    x, y = pipeline.load_image_folder(fixture_dir / "val", TINY)
    assert x.shape == (9, 3, 32, 32) and x.dtype == np.float32 and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    lo = (0 - np.array(TINY.mean)) / np.array(TINY.std)
    assert (x.min(axis=(0, 2, 3)) >= lo - 1e-5).all()
    order = tmp_path / "classes.txt"
    order.write_text("eel\ndog\ncat\n")  # the class index follows the file, not the folder names
    _, y2 = pipeline.load_image_folder(fixture_dir / "val", TINY, labels=order)
    assert sorted(y2.tolist()) == sorted(y.tolist())
    files, ys, _ = pipeline.list_image_folder(fixture_dir / "val", order)
    assert all(ys[i] == 2 for i, f in enumerate(files) if f.parent.name == "cat")
    bad = tmp_path / "bad.txt"
    bad.write_text("cat\ndog\n")
    with pytest.raises(ValueError, match="'eel'"):
        pipeline.list_image_folder(fixture_dir / "val", bad)
    broken = tmp_path / "broken" / "cat"
    broken.mkdir(parents=True)
    (broken / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="x.png is not a readable image"):
        pipeline.load_image_folder(tmp_path / "broken", TINY)


@pytest.mark.parametrize("calib, extra", [("sardfq", []), ("psaq", []), ("real", ["--calib-images", "VAL"]),
                                          ("sardfq", ["--no-apa", "--no-msr", "--integer"]),
                                          ("noise", ["--compare-integer"])])
def test_dfq_cli_end_to_end(fixture_dir, capsys, tmp_path, calib, extra):
    val = str(fixture_dir / "val")
    png = tmp_path / "calib.png"
    argv = ["vit", "dfq", "--checkpoint", str(fixture_dir / "tiny_vit.npz"), "--heads", "2", "--images", val,
            "--calib", calib, "--wbits", "4", "--abits", "4", "--batch", "4", "--iters", "2", "--recon-iters", "2",
            "--seed", "3", "--json", "--save-images", str(png)] + [val if a == "VAL" else a for a in extra]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["calib"] == calib and record["n_eval"] == 9 and 0.0 <= record["top1"] <= 1.0
    assert record["n_calib"] == 4 and len(record["fp_predictions"]) == 4
    assert record["seconds"]["synthesis"] >= 0 and record["integer"] == ("--integer" in extra)
    if "--compare-integer" in extra:  # both paths on the same 9 images: top-1 is the simulated one
        assert record["simulated_top1"] == record["top1"] and 0.0 <= record["integer_top1"] <= 1.0
        assert 0.0 <= record["integer_agreement"] <= 1.0
    with Image.open(png) as im:
        assert im.size[0] > 32 * 4


def test_dfq_cli_rejects_bad_combinations(fixture_dir, capsys):
    base = ["vit", "dfq", "--checkpoint", str(fixture_dir / "tiny_vit.npz"), "--heads", "2"]
    assert main(base + ["--calib", "noise", "--no-apa"]) == 2
    assert "--no-apa" in capsys.readouterr().err
    assert main(base + ["--calib", "real", "--images", str(fixture_dir / "val")]) == 2
    assert "--calib-images" in capsys.readouterr().err
    assert main(base) == 2  # a 32x32 RGB model has no Fashion-MNIST evaluation set
    assert "--images" in capsys.readouterr().err


def test_run_config_is_seeded(fixture_dir):
    params, cfg, _ = pipeline.load_model(fixture_dir / "tiny_vit.npz", heads=2)
    x, y = pipeline.load_image_folder(fixture_dir / "val", cfg)
    sc = pipeline.SynthConfig(batch=4, iters=2, rounds=1)
    runs = [pipeline.run_config(params, cfg, "sardfq", 4, 4, 7, x, y, sc, recon_iters=1, log=lambda m: None)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][0]["top1"] == runs[1][0]["top1"] and runs[0][0]["alpha1"] == sc.alpha1


def test_dfq_cli_on_fashion_mnist(tmp_path, capsys):
    from refq.data import fashion_mnist as fm
    if not (fm.DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not installed in {fm.DEFAULT_ROOT} (Debian package dataset-fashion-mnist)")
    cfg = vit.ViTConfig(embed_dim=8, depth=2, num_heads=2, mean=(fm.MEAN,), std=(fm.STD,))
    save_npz(tmp_path / "vit.npz", vit.init_params(cfg, np.random.default_rng(0)), {"config": cfg.to_dict()})
    argv = ["vit", "dfq", "--checkpoint", str(tmp_path / "vit.npz"), "--calib", "real", "--wbits", "6", "--abits", "6",
            "--batch", "4", "--recon-iters", "1", "--limit", "20", "--json"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["n_eval"] == 20 and record["wbits"] == 6 and record["calib"] == "real"


def test_load_model_refuses_unknown_keys(tmp_path, rng):
    params = vit.init_params(TINY, rng)
    params["fc_norm.weight"] = np.ones(16, np.float32)  # a global-pool ViT: not the architecture refq runs
    save_npz(tmp_path / "gap.npz", params, {"config": {}})
    with pytest.raises(ValueError, match="fc_norm"):
        pipeline.load_model(tmp_path / "gap.npz", heads=2)
