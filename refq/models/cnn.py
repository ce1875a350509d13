"""A small convolutional network: the teacher for distilling the shipped ViT (DeiT's convnet teacher).

DeiT (Touvron et al., ICML 2021, Sec. 5.1 and Table 2) distils a vision transformer from a convnet
teacher and finds it better than a transformer teacher, "probably due to the inductive bias inherited
by the transformers through distillation". This is the same idea at Fashion-MNIST scale: three
3x3 conv + ReLU stages (2x2 max pooling after the first two), then one linear classifier on the
flattened 7x7 map. Functions over a dict of arrays, like refq.models.vit, so that the training loop
(refq.models.vit_train) and the checkpoint files serve both.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.models.checks import check_param_shapes


@dataclass(frozen=True)
class CNNConfig:
    img_size: int = 28
    in_chans: int = 1
    num_classes: int = 10
    channels: tuple = (32, 64, 128)  # one 3x3 conv per stage; 2x2 max pooling after every stage but the last
    mean: tuple = (0.5,)  # input normalisation, per channel
    std: tuple = (0.5,)

    def __post_init__(self):
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"CNNConfig: channels {self.channels}, expected at least one positive width")
        if self.img_size % self.pool_factor:
            raise ValueError(f"CNNConfig: img_size {self.img_size} is not a multiple of {self.pool_factor} "
                             f"(2x2 pooling after {len(self.channels) - 1} stages)")

    @property
    def pool_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def features(self) -> int:  # length of the flattened last feature map
        return self.channels[-1] * (self.img_size // self.pool_factor) ** 2

    def to_dict(self) -> dict:
        return {"arch": "cnn", **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "CNNConfig":
        if d.get("arch") != "cnn":
            raise ValueError(f"CNNConfig.from_dict: arch {d.get('arch')!r}, expected 'cnn'")
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def init_params(cfg: CNNConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-normal weights (He et al. 2015, Eq. 10: std sqrt(2 / fan_in)) for ReLU layers, zero biases."""
    def he(*shape):
        return (rng.normal(0.0, 1.0, shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)

    params, cin = {}, cfg.in_chans
    for i, cout in enumerate(cfg.channels):
        params[f"convs.{i}.weight"], params[f"convs.{i}.bias"] = he(cout, cin, 3, 3), np.zeros(cout, np.float32)
        cin = cout
    params["head.weight"] = (rng.normal(0.0, 1.0, (cfg.num_classes, cfg.features))
                             / np.sqrt(cfg.features)).astype(np.float32)
    params["head.bias"] = np.zeros(cfg.num_classes, np.float32)
    return params


def expected_shapes(cfg: CNNConfig) -> dict[str, tuple]:
    return {k: v.shape for k, v in init_params(cfg, np.random.default_rng(0)).items()}


def check_params(params: dict, cfg: CNNConfig) -> None:
    """ValueError naming the first missing, unexpected or mis-shaped key."""
    check_param_shapes(params, expected_shapes(cfg), "CNN")


def forward(params: dict, cfg: CNNConfig, x) -> Tensor:
    """Logits [B, classes] for normalised images x [B, C, H, W]."""
    if tuple(x.shape[1:]) != (cfg.in_chans, cfg.img_size, cfg.img_size):
        raise ValueError(f"cnn.forward: input shape {tuple(x.shape)}, config needs "
                         f"[B, {cfg.in_chans}, {cfg.img_size}, {cfg.img_size}]")
    h = x
    for i in range(len(cfg.channels)):
        h = F.relu(F.conv2d(h, params[f"convs.{i}.weight"], params[f"convs.{i}.bias"], padding=1))  # [B, Ci, S, S]
        if i + 1 < len(cfg.channels):
            h = F.max_pool2d(h, 2)  # [B, Ci, S, S] -> [B, Ci, S/2, S/2]
    h = F.reshape(h, (h.shape[0], -1))  # [B, C, s, s] -> [B, C*s*s]
    return F.linear(h, params["head.weight"], params["head.bias"])  # -> [B, classes]
