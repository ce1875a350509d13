"""docs/sardfq.md table driver: the run grid, image sharing between bit widths, and the markdown."""
import numpy as np

from refq.models import vit
from refq.sardfq import table
from refq.sardfq.synthesis import SynthConfig


def test_configurations_cover_main_grid_and_ablation():
    runs = table.configurations()
    keys = [table.run_key(r, 0) for r in runs]
    assert len(runs) == 2 * 4 + 7 and len(set(keys)) == len(keys)
    ablation = {(r["apa"], r["msr"], r["sl"]) for r in runs if r["calib"] == "sardfq" and r["wbits"] == 4}
    assert ablation == set(table.ABLATION)
    assert "sardfq-W4A4-apa1-msr0-sl1-seed0" in keys and "psaq-W6A6-seed0" in keys
    assert [r["calib"] for r in table.subset("w4a4")] == ["real", "noise", "psaq", "sardfq"]
    assert len(table.subset("ablation")) == 8 and len(table.subset("main")) == 8
    extra = table.subset("ablation-extra")
    assert len(extra) == 7 and not {table.run_key(r, 0) for r in extra} & {table.run_key(r, 0) for r in table.subset("main")}
    assert {table.run_key(r, 0) for r in extra + table.subset("main")} == set(keys)


def test_markdown_reports_mean_and_std():
    recs = [{"calib": "sardfq", "wbits": 4, "abits": 4, "apa": True, "msr": True, "sl": True, "top1": t,
             "seconds": {"synthesis": 10.0, "synthesis_per_image": 0.5}} for t in (0.80, 0.82, 0.84)]
    md = table.to_markdown(recs, 0.9, {"seeds": [0, 1, 2], "n_eval": 100, "synth_iters": 200, "batch": 32,
                                       "alpha1": 1000.0, "recon_iters": 100, "seconds": 60})
    assert "| FP32 (no quantization) | 90.00 | |" in md
    assert "| SARDFQ | 82.00 ± 2.00 | – |" in md
    assert "| ✓ | ✓ | ✓ | 82.00 ± 2.00 |" in md and "| – | – | – | – |" in md
    assert "SARDFQ 0.50 s" in md


def test_run_all_shares_images_between_bit_widths(tmp_path):
    cfg = vit.ViTConfig(img_size=8, patch_size=4, in_chans=1, num_classes=4, embed_dim=8, depth=2, num_heads=2)
    rng = np.random.default_rng(0)
    params = vit.init_params(cfg, rng)
    x, y = rng.standard_normal((6, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, 6)
    cache = table.ImageCache(params, cfg, SynthConfig(batch=2, iters=2, rounds=1), x, tmp_path, log=lambda m: None)
    runs = [{"calib": "psaq", "wbits": w, "abits": w, "apa": True, "msr": True, "sl": True} for w in (4, 6)]
    saved = []
    records = table.run_all(params, cfg, x, y, cache, [0], 1, [], saved.append, runs, log=lambda m: None)
    assert [r["key"] for r in records] == ["psaq-W4A4-seed0", "psaq-W6A6-seed0"] and len(saved) == 2
    assert len(cache.memory) == 1 and len(list(tmp_path.glob("*.npz"))) == 1
    assert records[0]["seconds"]["synthesis"] == records[1]["seconds"]["synthesis"] > 0
    again = table.run_all(params, cfg, x, y, cache, [0], 1, records, None, runs, log=lambda m: None)
    assert len(again) == 2  # finished keys are skipped


def test_vit_table_takes_finished_runs_from_other_files(tmp_path, capsys):
    import json

    import pytest

    from refq.data import fashion_mnist as fm
    from refq.io.npz import save_npz
    if not (fm.DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not installed in {fm.DEFAULT_ROOT} (Debian package dataset-fashion-mnist)")
    cfg = vit.ViTConfig(embed_dim=8, depth=2, num_heads=2, patch_size=7, mean=(fm.MEAN,), std=(fm.STD,))
    save_npz(tmp_path / "vit.npz", vit.init_params(cfg, np.random.default_rng(0)), {"config": cfg.to_dict()})
    from refq.cli import main
    common = ["vit", "table", "--checkpoint", str(tmp_path / "vit.npz"), "--seeds", "0", "--iters", "2", "--recon-iters", "1",
              "--limit", "20", "--subset", "w4a4"]
    assert main(common + ["--out-json", str(tmp_path / "a.json")]) == 0
    first = json.loads((tmp_path / "a.json").read_text())["records"]
    assert [r["key"] for r in first] == ["real-W4A4-seed0", "noise-W4A4-seed0", "psaq-W4A4-seed0",
                                         "sardfq-W4A4-apa1-msr1-sl1-seed0"]
    capsys.readouterr()
    assert main(common + ["--records", str(tmp_path / "a.json"), "--out-json", str(tmp_path / "b.json")]) == 0
    assert "table: " not in capsys.readouterr().err  # nothing ran again
    assert json.loads((tmp_path / "b.json").read_text())["records"] == first


def test_runtime_of_a_merged_table_names_its_parts():
    assert table._runtime({"seconds": 90.0}) == "total 1.5 min"
    text = table._runtime({"seconds": 30.0, "part_seconds": [600.0, 1200.0]})
    assert text == "10.0 + 20.0 min in 2 parallel parts (wall time 20.0 min), then 0.5 min to merge"


def test_model_fingerprint_separates_checkpoints_in_cache_and_records(tmp_path):
    import pytest

    cfg = vit.ViTConfig(img_size=8, patch_size=4, in_chans=1, num_classes=4, embed_dim=8, depth=2, num_heads=2)
    a = vit.init_params(cfg, np.random.default_rng(0))
    b = {k: v.copy() for k, v in a.items()}
    b["head.bias"] = b["head.bias"] + np.float32(1e-3)
    fa, fb = table.model_fingerprint(a), table.model_fingerprint(b)
    assert fa == table.model_fingerprint({k: v.copy() for k, v in a.items()}) and fa != fb and len(fa) == 12
    x = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    sc = SynthConfig(batch=2, iters=2, rounds=1)
    run = {"calib": "noise", "wbits": 4, "abits": 4, "apa": True, "msr": True, "sl": True}
    table.ImageCache(a, cfg, sc, x, tmp_path, log=lambda m: None).get(run, 0)
    table.ImageCache(b, cfg, sc, x, tmp_path, log=lambda m: None).get(run, 0)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # one file per model, never shared
    assert table.check_records([{"model": fa}], fa, "a.json") == [{"model": fa}]
    with pytest.raises(ValueError, match=f"b.json: records of model.*{fb}.*this model is {fa}"):
        table.check_records([{"model": fa}, {"model": fb}], fa, "b.json")
    with pytest.raises(ValueError, match="None"):
        table.check_records([{"key": "old"}], fa, "old.json")
