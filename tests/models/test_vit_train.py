"""`refq vit train`: a tiny seeded run learns, records its command, and continues from --init."""
import json

import numpy as np
import pytest

from refq.cli import main
from refq.data import fashion_mnist as fm
from refq.io.npz import load_npz

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
