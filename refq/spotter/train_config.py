"""TrainConfig, the spotter's training hyper-parameters; light, so `refq spot train` builds its options from it
without importing the trainer."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 5000
    batch_size: int = 4
    lr: float = 1e-3
    warmup: int = 300
    clip: float = 5.0
    w_cls: float = 1.0
    w_geo: float = 1.0
    w_rec: float = 1.0
    jitter: float = 0.1
    pred_from: float = 0.5  # fraction of the steps after which predicted boxes join the RoIs
    max_rois: int = 64
    rec_batch: int = 24
    crop_words: int = 32  # extra recognition words per step, packed as crops into canvases
    crop_margin: int = 16  # >= the backbone's receptive-field radius (9 px) + one feature pixel of bilinear reach
    eval_every: int = 500
    eval_images: int = 100
