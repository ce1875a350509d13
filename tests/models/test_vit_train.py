"""`refq vit train`: a tiny seeded run learns, records its command, and continues from --init."""
import json

import numpy as np
import pytest

from refq.cli import main
from refq.data import fashion_mnist as fm
from refq.io.npz import load_npz
from refq.pretrained import load_vit

pytestmark = pytest.mark.skipif(not (fm.DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").exists(),
                                reason=f"Fashion-MNIST not installed in {fm.DEFAULT_ROOT} "
                                       "(Debian package dataset-fashion-mnist)")
TINY = ["--embed-dim", "16", "--depth", "1", "--heads", "2", "--patch", "7", "--limit", "4096", "--batch-size", "32"]


def test_tiny_training_learns_and_continues_from_init(tmp_path, capsys):
    first = tmp_path / "a.npz"
    assert main(["vit", "train", "--out", str(first), "--epochs", "2", "--seed", "1", "--lr", "3e-3"] + TINY) == 0
    top1 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test_top1"]
    assert top1 > 0.2  # 10 classes: chance is 0.1 (a 16-wide one-block ViT after 256 steps: about 0.28)
    _, manifest = load_npz(first)
    assert manifest["command"].startswith("refq vit train") and manifest["seed"] == 1
    assert [h["epoch"] for h in manifest["history"]] == [1, 2] and manifest["history"][-1]["n_eval"] == 10000

    second = tmp_path / "b.npz"
    argv = ["vit", "train", "--out", str(second), "--epochs", "1", "--seed", "2", "--lr", "3e-4",
            "--warmup-epochs", "0", "--init", str(first)] + TINY
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test_top1"]
    assert again > top1 - 0.05  # starts where the first run ended, not from scratch
    _, manifest = load_npz(second)
    assert manifest["init"]["command"] == load_npz(first)[1]["command"]


def test_init_with_another_architecture_is_refused(tmp_path, capsys):
    first = tmp_path / "a.npz"
    assert main(["vit", "train", "--out", str(first), "--epochs", "1", "--limit", "64"] + TINY[:8]) == 2
    assert "batch_size=128" in capsys.readouterr().err  # 64 images are less than one batch: a clear error
    assert main(["vit", "train", "--out", str(first), "--epochs", "1", "--limit", "64", "--batch-size", "32"]
                + TINY[:8]) == 0
    capsys.readouterr()
    argv = ["vit", "train", "--out", str(tmp_path / "b.npz"), "--epochs", "1", "--embed-dim", "32", "--depth", "1",
            "--heads", "2", "--patch", "7", "--limit", "64", "--init", str(first)]
    assert main(argv) == 2
    assert "--init" in capsys.readouterr().err
    assert not np.any([p.name == "b.npz" for p in tmp_path.iterdir()])


def test_ema_update_is_a_convex_step_and_leaves_its_inputs_alone():
    from refq.models.vit_train import ema_update

    average, params = {"w": np.array([1.0, 3.0], np.float32)}, {"w": np.array([3.0, -1.0], np.float32)}
    out = ema_update(average, params, 0.75)
    np.testing.assert_allclose(out["w"], [1.5, 2.0])  # 0.75 * 1 + 0.25 * 3, 0.75 * 3 + 0.25 * -1
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(average["w"], [1.0, 3.0])
    np.testing.assert_array_equal(params["w"], [3.0, -1.0])


def test_training_with_ema_returns_the_average_of_init_and_trajectory():
    from refq.models import vit
    from refq.models.vit_train import train

    cfg = vit.ViTConfig(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=1, num_heads=2)
    data = np.random.default_rng(0)
    x, y = data.standard_normal((8, 1, 8, 8)).astype(np.float32), data.integers(0, 3, 8)
    init = vit.init_params(cfg, np.random.default_rng(1))
    kw = dict(epochs=1, batch_size=8, lr=1e-2, warmup_epochs=0, init=init, augmentation="none", log=lambda m: None)
    last, _ = train(cfg, x, y, x, y, np.random.default_rng(2), **kw)  # a single step
    averaged, history = train(cfg, x, y, x, y, np.random.default_rng(2), ema=0.9, **kw)
    for k in init:
        np.testing.assert_allclose(averaged[k], 0.9 * init[k] + 0.1 * last[k], rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(last[k], init[k]) for k in init)  # the step moved the weights
    with pytest.raises(ValueError, match="ema=1.0"):
        train(cfg, x, y, x, y, np.random.default_rng(2), ema=1.0, **kw)


def test_average_weights_is_the_elementwise_mean_and_leaves_its_inputs_alone():
    from refq.models.vit_train import average_weights

    a = {"w": np.array([1.0, 3.0], np.float32), "b": np.array([0.5], np.float32)}
    b = {"w": np.array([3.0, -1.0], np.float32), "b": np.array([0.0], np.float32)}
    c = {"w": np.array([2.0, 1.0], np.float32), "b": np.array([1.0], np.float32)}
    out = average_weights([a, b, c])
    np.testing.assert_allclose(out["w"], [2.0, 1.0])  # (1 + 3 + 2) / 3, (3 - 1 + 1) / 3
    np.testing.assert_allclose(out["b"], [0.5])
    assert out["w"].dtype == np.float32 and out["w"] is not a["w"]
    np.testing.assert_array_equal(a["w"], [1.0, 3.0])
    np.testing.assert_array_equal(b["w"], [3.0, -1.0])
    same = average_weights([a, a])
    np.testing.assert_array_equal(same["w"], a["w"])
    with pytest.raises(ValueError, match="none"):
        average_weights([])
    with pytest.raises(ValueError, match=r"\['b'\]"):
        average_weights([a, {"w": a["w"]}])
    with pytest.raises(ValueError, match=r"w has shape \(3,\)"):
        average_weights([a, {"w": np.zeros(3, np.float32), "b": a["b"]}])


def _tiny_checkpoint(path, seed, embed_dim=16):
    from refq.io.npz import save_npz
    from refq.models import vit

    cfg = vit.ViTConfig(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=embed_dim, depth=1,
                        num_heads=2, mean=(fm.MEAN,), std=(fm.STD,))
    params = vit.init_params(cfg, np.random.default_rng(seed))
    save_npz(path, params, {"config": cfg.to_dict(), "command": f"made by a test, seed {seed}", "seed": seed,
                            "test_top1": 0.1})
    return params


def test_average_command_saves_the_mean_its_ingredients_and_a_top1_that_eval_confirms(tmp_path, capsys):
    first, second = _tiny_checkpoint(tmp_path / "a.npz", 1), _tiny_checkpoint(tmp_path / "b.npz", 2)
    out = tmp_path / "soup.npz"
    assert main(["vit", "average", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    params, manifest = load_npz(out)
    for k in first:
        np.testing.assert_allclose(params[k], (first[k] + second[k]) / 2, rtol=1e-6, atol=1e-7)
    assert [m["command"] for m in manifest["soup"]] == ["made by a test, seed 1", "made by a test, seed 2"]
    assert manifest["command"].startswith("refq vit average") and manifest["test_top1"] == record["test_top1"]
    assert main(["vit", "eval", "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == record["test_top1"]


def test_average_command_refuses_one_checkpoint_or_mixed_architectures(tmp_path, capsys):
    _tiny_checkpoint(tmp_path / "a.npz", 1)
    _tiny_checkpoint(tmp_path / "wide.npz", 2, embed_dim=32)
    out = tmp_path / "soup.npz"
    assert main(["vit", "average", str(tmp_path / "a.npz"), "--out", str(out)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["vit", "average", str(tmp_path / "a.npz"), str(tmp_path / "wide.npz"), "--out", str(out)]) == 2
    assert "wide.npz has config" in capsys.readouterr().err
    assert not out.exists()


def test_val_split_is_a_fixed_partition():
    from refq.models.vit_train import val_split

    train_idx, val_idx = val_split(100, 20)
    assert len(val_idx) == 20 and len(train_idx) == 80
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(100))
    again_train, again_val = val_split(100, 20)
    np.testing.assert_array_equal(again_val, val_idx)  # the same split every time, whatever the run's seed
    assert not np.array_equal(val_idx, np.arange(80, 100))  # shuffled, not the tail of the file
    for bad in (0, 100, -3):
        with pytest.raises(ValueError, match=f"size={bad}"):
            val_split(100, bad)


def test_training_with_a_validation_set_monitors_it_and_tests_only_at_the_end():
    from refq.models import vit
    from refq.models.vit_train import train

    cfg = vit.ViTConfig(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=1, num_heads=2)
    data = np.random.default_rng(0)
    x, y = data.standard_normal((16, 1, 8, 8)).astype(np.float32), data.integers(0, 3, 16)
    _, history = train(cfg, x[:8], y[:8], x[8:], y[8:], np.random.default_rng(1), epochs=2, batch_size=8,
                       augmentation="none", log=lambda m: None, x_val=x[8:12], y_val=y[8:12])
    assert [h["n_val"] for h in history] == [4, 4] and all(0 <= h["val_top1"] <= 1 for h in history)
    assert "test_top1" not in history[0] and history[1]["n_eval"] == 8
    with pytest.raises(ValueError, match="x_val and y_val"):
        train(cfg, x[:8], y[:8], x[8:], y[8:], np.random.default_rng(1), epochs=1, batch_size=8, x_val=x[8:12])


def test_val_size_is_recorded_and_guards_fine_tunes_against_leaks(tmp_path, capsys):
    held = tmp_path / "held.npz"
    argv = ["vit", "train", "--out", str(held), "--epochs", "1", "--val-size", "512"] + TINY
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, manifest = load_npz(held)
    assert manifest["val_size"] == 512 and manifest["val_top1"] == record["val_top1"]
    assert manifest["history"][-1]["n_val"] == 512 and manifest["history"][-1]["n_eval"] == 10000

    fine = ["vit", "train", "--out", str(tmp_path / "fine.npz"), "--epochs", "1", "--warmup-epochs", "0"] + TINY
    assert main(fine + ["--init", str(held), "--val-size", "512"]) == 0  # same split: allowed
    capsys.readouterr()
    assert load_npz(tmp_path / "fine.npz")[1]["init"]["val_size"] == 512
    assert main(fine + ["--init", str(held), "--val-size", "256"]) == 2
    assert "--val-size 512, not 256" in capsys.readouterr().err
    _tiny_checkpoint(tmp_path / "all.npz", 1)  # held nothing out: every training image may have been seen
    tiny_cfg = ["--embed-dim", "16", "--depth", "1", "--heads", "2", "--patch", "7"]
    assert main(["vit", "train", "--out", str(tmp_path / "x.npz"), "--init", str(tmp_path / "all.npz"),
                 "--val-size", "512", "--limit", "1024", "--batch-size", "32"] + tiny_cfg) == 2
    assert "--val-size 0, not 512" in capsys.readouterr().err


def test_cnn_teacher_trains_evaluates_and_distils_into_a_vit(tmp_path, capsys):
    teacher = tmp_path / "cnn.npz"
    argv = ["vit", "train", "--arch", "cnn", "--channels", "4", "8", "8", "--out", str(teacher), "--epochs", "1",
            "--limit", "2048", "--batch-size", "32", "--lr", "3e-3", "--val-size", "512", "--seed", "0"]
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["val_top1"] > 0.4 and record["test_top1"] > 0.4  # chance is 0.1
    _, manifest = load_npz(teacher)
    assert manifest["config"]["arch"] == "cnn" and manifest["config"]["channels"] == [4, 8, 8]
    assert main(["vit", "eval", "--checkpoint", str(teacher), "--limit", "500", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 500

    student = tmp_path / "vit.npz"
    argv = ["vit", "train", "--out", str(student), "--epochs", "1", "--teacher", str(teacher)] + TINY
    assert main(argv) == 0
    capsys.readouterr()
    _, manifest = load_npz(student)
    assert manifest["teacher"]["path"] == str(teacher) and manifest["teacher"]["val_size"] == 512
    assert "--distill" not in manifest["command"]  # the default, hard, is what ran
    # a teacher that held out another split has trained on this run's validation images
    refused = ["vit", "train", "--out", str(tmp_path / "x.npz"), "--epochs", "1", "--val-size", "256",
               "--teacher", str(teacher)] + TINY
    assert main(refused) == 2
    assert "--teacher" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()
    with pytest.raises(ValueError, match="not a ViT"):
        load_vit(teacher)


def test_an_interrupted_run_resumes_from_its_state_file_to_the_same_weights(tmp_path, capsys, monkeypatch):
    from refq.models import vit_train

    argv = ["vit", "train", "--epochs", "2", "--seed", "4", "--limit", "1024"] + TINY[:8] + ["--batch-size", "64"]
    whole = tmp_path / "whole.npz"
    assert main(argv + ["--out", str(whole)]) == 0
    assert not (tmp_path / "whole.state.npz").exists()  # removed once the run has finished

    real_augment, calls = vit_train.augment, []

    def interrupted_augment(*args, **kwargs):  # stop the run in its second epoch (16 steps per epoch)
        calls.append(1)
        if len(calls) > 20:
            raise KeyboardInterrupt
        return real_augment(*args, **kwargs)

    cut = tmp_path / "cut.npz"
    monkeypatch.setattr(vit_train, "augment", interrupted_augment)
    with pytest.raises(KeyboardInterrupt):
        main(argv + ["--out", str(cut)])
    monkeypatch.setattr(vit_train, "augment", real_augment)
    assert not cut.exists() and (tmp_path / "cut.state.npz").exists()
    assert main(argv + ["--out", str(cut), "--seed", "5", "--resume"]) == 2  # other arguments: refused
    assert "same arguments" in capsys.readouterr().err
    assert main(argv + ["--out", str(cut), "--resume"]) == 0
    a, manifest_a = load_npz(whole)
    b, manifest_b = load_npz(cut)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert manifest_b["resumed"] and manifest_a["history"][-1]["train_loss"] == manifest_b["history"][-1]["train_loss"]
    assert main(argv + ["--out", str(tmp_path / "none.npz"), "--resume"]) == 2
    assert "no saved state" in capsys.readouterr().err


def test_resume_and_lineage_policy(tmp_path):
    import pytest

    from refq.models.vit_train import check_held_out, check_resume, command_line, lineage, state_path

    assert state_path(tmp_path / "m.npz") == tmp_path / "m.state.npz"
    command = command_line(["vit", "train", "--out", "m npz", "--resume"], drop="--resume")
    assert command == "refq vit train --out 'm npz'"
    check_resume(tmp_path / "s", {"command": command}, command)
    with pytest.raises(ValueError, match="no saved state"):
        check_resume(tmp_path / "s", None, command)
    with pytest.raises(ValueError, match="resume with the same arguments"):
        check_resume(tmp_path / "s", {"command": "refq vit train"}, command)
    assert lineage({"command": "c", "seed": 1, "config": {}, "init": {"command": "a"}}) == \
        {"command": "c", "seed": 1, "init": {"command": "a"}}
    check_held_out("--init", "a.npz", {"val_size": 5, "init": {"val_size": 5}}, 5)
    with pytest.raises(ValueError, match="--val-size 0, not 5"):
        check_held_out("--init", "a.npz", {"val_size": 5, "init": {"val_size": 3}}, 5)
