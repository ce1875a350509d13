"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747): 28x28 grey images, 10 classes.

The Debian package `dataset-fashion-mnist` installs the four standard IDX files in
DEFAULT_ROOT; any directory holding those files (gzip-compressed or not) works.

`save_sample` / `load_sample`: the first N test images as a small .npz, so that `refq tour` runs
without the Debian package. The shipped one (refq/weights/fmnist_test500.npz) was written by

    python -m refq.data.fashion_mnist --sample 500 --out refq/weights/fmnist_test500.npz

(Fashion-MNIST is MIT-licensed, Copyright (c) 2017 Zalando SE.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from refq.data.idx import read_idx

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Per-pixel statistics of the training set, used to normalise inputs to the ViT.
MEAN, STD = 0.2860, 0.3530
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.exists():
            return candidate
    raise ValueError(f"fashion-mnist: {stem}(.gz) not found in {root} "
                     "(install the Debian package dataset-fashion-mnist or pass the folder holding the IDX files)")


def load(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 [N, 28, 28] and labels as int64 [N]."""
    if split not in _FILES:
        raise ValueError(f"fashion-mnist: split {split!r} is not one of {sorted(_FILES)}")
    root = Path(root) if root is not None else DEFAULT_ROOT
    images = read_idx(_find(root, _FILES[split][0]))
    labels = read_idx(_find(root, _FILES[split][1])).astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"fashion-mnist: images {images.shape} and labels {labels.shape} do not match")
    return images, labels



def save_sample(out, n: int = 500, root: str | Path | None = None) -> Path:
    """Write the first n test images (uint8 [n, 28, 28]) and labels (int64 [n]) to an .npz."""
    if not 1 <= n <= 10000:
        raise ValueError(f"fashion-mnist: sample size n={n} must be in [1, 10000]")
    images, labels = load("test", root)
    out = Path(out)
    np.savez_compressed(out, images=images[:n], labels=labels[:n])
    return out


def load_sample(path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of a file written by save_sample."""
    with np.load(path, allow_pickle=False) as f:
        if set(f.files) != {"images", "labels"}:
            raise ValueError(f"fashion-mnist sample {path}: members {sorted(f.files)}, expected images and labels")
        images, labels = f["images"], f["labels"]
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"fashion-mnist sample {path}: images {images.dtype} {images.shape}, labels {labels.shape}")
    return images, labels.astype(np.int64)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write the first N Fashion-MNIST test images as an .npz sample.")
    parser.add_argument("--sample", type=int, default=500, help="number of test images (default 500)")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--root", default=None, help="folder with the IDX files (default: the Debian package's)")
    cli = parser.parse_args()
    print(save_sample(cli.out, cli.sample, cli.root))
