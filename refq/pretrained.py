"""Weights that ship with refq (trained by refq itself, with the seeded commands that made them).

* `vit_fmnist.npz`: the small ViT of the SARDFQ experiments, trained on Fashion-MNIST by
  `refq vit train` in stages, the last distilled from a convnet teacher (the chain of commands and seeds in
  the file's manifest, the logs in vit_fmnist.log, the recipe in the README).
* `spotter.npz`: the joint text spotter, trained by `refq spot train` (commands in its manifest and in
  spotter.log); loaded by `refq.spotter.infer.load_spotter`.
* `fmnist_test500.npz`: the first 500 Fashion-MNIST test images, so that `refq tour` needs no dataset
  (written by `python -m refq.data.fashion_mnist --sample 500 --out refq/weights/fmnist_test500.npz`).
* `demo_scene.png` and `demo_scene_gt.txt`: one synthetic scene in held-out fonts and its ICDAR 2015
  ground truth, image 1 of `refq spot synth --out DIR --n 3 --seed 7 --fonts heldout`.
"""
from __future__ import annotations

from pathlib import Path

from refq.io.npz import load_with_config
from refq.models.vit import ViTConfig, check_params

WEIGHTS = Path(__file__).resolve().parent / "weights"
VIT_FMNIST = WEIGHTS / "vit_fmnist.npz"
SPOTTER_NPZ = WEIGHTS / "spotter.npz"
FMNIST_SAMPLE = WEIGHTS / "fmnist_test500.npz"
DEMO_SCENE = WEIGHTS / "demo_scene.png"
DEMO_SCENE_GT = WEIGHTS / "demo_scene_gt.txt"


def load_vit(path: str | Path | None = None) -> tuple[dict, ViTConfig, dict]:
    """(params, config, manifest) of a refq ViT checkpoint; the shipped Fashion-MNIST ViT by default."""
    return load_with_config(VIT_FMNIST if path is None else path, ViTConfig, check_params, "ViT")
