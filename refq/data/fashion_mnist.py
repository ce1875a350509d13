"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747): 28x28 grey images, 10 classes.

The Debian package `dataset-fashion-mnist` installs the four standard IDX files in
DEFAULT_ROOT; any directory holding those files (gzip-compressed or not) works.
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

