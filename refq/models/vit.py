"""Vision Transformer / DeiT in the timm checkpoint layout, on the refq autograd.

Functions over a dict of arrays keyed by timm's own names (`patch_embed.proj.weight`,
`blocks.0.attn.qkv.weight`, ...). Every linear layer and both attention matmuls go
through a `refq.models.ops.ModelOps` object, so that the quantized model of SARDFQ (refq.sardfq)
can swap in fake-quantized or integer versions without touching the model code.

References:
  Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (Eq. 1-4: patch
    embedding, class token, pre-norm blocks, head on the class token).
  Touvron et al., "Training data-efficient image transformers (DeiT)", ICML 2021
    (Sec. 4: distillation token; at inference the two heads are averaged).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.models.checks import check_param_shapes
from refq.models.ops import FLOAT_OPS, ModelOps


@dataclass(frozen=True)
class ViTConfig:
    img_size: int = 28
    patch_size: int = 4
    in_chans: int = 1
    num_classes: int = 10
    embed_dim: int = 96
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    distilled: bool = False  # DeiT: an extra distillation token and head
    eps: float = 1e-6  # LayerNorm epsilon (timm ViT/DeiT)
    mean: tuple = (0.5,)  # input normalisation, per channel
    std: tuple = (0.5,)

    def __post_init__(self):
        if self.img_size % self.patch_size:
            raise ValueError(f"ViTConfig: img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"ViTConfig: embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:  # patches + class token (+ distillation token)
        return self.grid ** 2 + 1 + int(self.distilled)

    @property
    def hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ViTConfig":
        if d.get("arch", "vit") != "vit":
            raise ValueError(f"ViTConfig.from_dict: arch {d.get('arch')!r}, not a ViT checkpoint")
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)




def init_params(cfg: ViTConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """timm-style initialisation: truncated normal(0.02) weights, zero biases, unit LayerNorm gains."""
    def tn(*shape):
        return np.clip(rng.normal(0.0, 0.02, shape), -0.04, 0.04).astype(np.float32)

    D, p, C = cfg.embed_dim, cfg.patch_size, cfg.in_chans
    params = {
        "patch_embed.proj.weight": tn(D, C, p, p), "patch_embed.proj.bias": np.zeros(D, np.float32),
        "cls_token": tn(1, 1, D), "pos_embed": tn(1, cfg.num_tokens, D),
        "norm.weight": np.ones(D, np.float32), "norm.bias": np.zeros(D, np.float32),
        "head.weight": tn(cfg.num_classes, D), "head.bias": np.zeros(cfg.num_classes, np.float32),
    }
    if cfg.distilled:
        params.update({"dist_token": tn(1, 1, D), "head_dist.weight": tn(cfg.num_classes, D),
                       "head_dist.bias": np.zeros(cfg.num_classes, np.float32)})
    for i in range(cfg.depth):
        pre = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            params[pre + norm + ".weight"] = np.ones(D, np.float32)
            params[pre + norm + ".bias"] = np.zeros(D, np.float32)
        for name, (o, n) in {"attn.qkv": (3 * D, D), "attn.proj": (D, D),
                             "mlp.fc1": (cfg.hidden, D), "mlp.fc2": (D, cfg.hidden)}.items():
            params[pre + name + ".weight"] = tn(o, n)
            params[pre + name + ".bias"] = np.zeros(o, np.float32)
    return params


def expected_shapes(cfg: ViTConfig) -> dict[str, tuple]:
    """The shape of every parameter for this config (used to validate checkpoints)."""
    return {k: v.shape for k, v in init_params(cfg, np.random.default_rng(0)).items()}


def check_params(params: dict, cfg: ViTConfig) -> None:
    """ValueError naming the first missing, unexpected or mis-shaped key."""
    check_param_shapes(params, expected_shapes(cfg), "ViT")


def patchify(x, p: int):
    """Split images into flattened non-overlapping p x p patches (the stride-p patch conv as a matmul)."""
    B, C, H, W = x.shape
    x = F.reshape(x, (B, C, H // p, p, W // p, p))  # [B, C, H, W] -> [B, C, Gh, p, Gw, p]
    x = F.transpose(x, (0, 2, 4, 1, 3, 5))  # -> [B, Gh, Gw, C, p, p]
    return F.reshape(x, (B, (H // p) * (W // p), C * p * p))  # -> [B, N, C*p*p]


def embed(params: dict, cfg: ViTConfig, x, ops: ModelOps = FLOAT_OPS):
    """Patch embedding, class (and distillation) token, position embedding (ViT Eq. 1)."""
    B = x.shape[0]
    D, p = cfg.embed_dim, cfg.patch_size
    w = F.reshape(params["patch_embed.proj.weight"], (D, -1))  # [D, C, p, p] -> [D, C*p*p]
    tokens = ops.linear("patch_embed.proj", patchify(x, p), w, params["patch_embed.proj.bias"])  # [B, N, D]
    lead = [F.mul(params["cls_token"], np.ones((B, 1, 1), np.float32))]  # [1, 1, D] -> [B, 1, D]
    if cfg.distilled:
        lead.append(F.mul(params["dist_token"], np.ones((B, 1, 1), np.float32)))
    x = F.concat(lead + [tokens], axis=1)  # -> [B, N+1(+1), D]
    return F.add(x, params["pos_embed"])


def attention(params: dict, cfg: ViTConfig, i: int, x, ops: ModelOps = FLOAT_OPS):
    """Multi-head self-attention of block i; returns (output, post-softmax attention)."""
    B, N, D = x.shape
    H = cfg.num_heads
    pre = f"blocks.{i}.attn."
    qkv = ops.linear(pre + "qkv", x, params[pre + "qkv.weight"], params[pre + "qkv.bias"])  # [B, N, D] -> [B, N, 3D]
    qkv = F.transpose(F.reshape(qkv, (B, N, 3, H, D // H)), (2, 0, 3, 1, 4))  # -> [3, B, H, N, Dh]
    q, k, v = qkv[0], qkv[1], qkv[2]  # each [B, H, N, Dh]
    scores = F.mul(ops.qk(pre + "qk", q, k), 1.0 / math.sqrt(D // H))  # [B, H, N, N]
    attn = F.softmax(scores, axis=-1)  # [B, H, N, N], rows sum to 1
    out = ops.av(pre + "av", attn, v)  # [B, H, N, Dh]
    out = F.reshape(F.transpose(out, (0, 2, 1, 3)), (B, N, D))  # -> [B, N, D]
    return ops.linear(pre + "proj", out, params[pre + "proj.weight"], params[pre + "proj.bias"]), attn


def block(params: dict, cfg: ViTConfig, i: int, x, ops: ModelOps = FLOAT_OPS):
    """Pre-norm transformer block i (ViT Eq. 2-3); returns (output, attention)."""
    pre = f"blocks.{i}."
    h = F.layer_norm(x, params[pre + "norm1.weight"], params[pre + "norm1.bias"], cfg.eps)
    a, attn = attention(params, cfg, i, h, ops)
    x = F.add(x, a)  # [B, N, D]
    h = F.layer_norm(x, params[pre + "norm2.weight"], params[pre + "norm2.bias"], cfg.eps)
    h = F.gelu(ops.linear(pre + "mlp.fc1", h, params[pre + "mlp.fc1.weight"], params[pre + "mlp.fc1.bias"]))  # [B, N, 4D]
    h = ops.linear(pre + "mlp.fc2", h, params[pre + "mlp.fc2.weight"], params[pre + "mlp.fc2.bias"])  # [B, N, D]
    return F.add(x, h), attn


def head(params: dict, cfg: ViTConfig, x, ops: ModelOps = FLOAT_OPS):
    """Final LayerNorm and classifier on the class token (DeiT: mean of both heads) (ViT Eq. 4)."""
    x = F.layer_norm(x, params["norm.weight"], params["norm.bias"], cfg.eps)  # [B, N, D]
    logits = ops.linear("head", x[:, 0], params["head.weight"], params["head.bias"])  # [B, D] -> [B, classes]
    if cfg.distilled:
        dist = ops.linear("head_dist", x[:, 1], params["head_dist.weight"], params["head_dist.bias"])
        logits = F.mul(F.add(logits, dist), 0.5)
    return logits


def forward(params: dict, cfg: ViTConfig, x, return_attn: bool = False, ops: ModelOps = FLOAT_OPS):
    """Logits [B, classes] for normalised images x [B, C, H, W]; with return_attn also every block's attention."""
    if tuple(x.shape[1:]) != (cfg.in_chans, cfg.img_size, cfg.img_size):
        raise ValueError(f"vit.forward: input shape {tuple(x.shape)}, config needs [B, {cfg.in_chans}, {cfg.img_size}, {cfg.img_size}]")
    h = embed(params, cfg, x, ops)
    attns = []
    for i in range(cfg.depth):
        h, attn = block(params, cfg, i, h, ops)
        attns.append(attn)
    logits = head(params, cfg, h, ops)
    return (logits, attns) if return_attn else logits


def normalize_images(images: np.ndarray, cfg: ViTConfig) -> np.ndarray:
    """uint8 or [0, 1] float images [B, C, H, W] -> the model's normalised float32 input."""
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x = x / 255.0
    mean = np.asarray(cfg.mean, np.float32)[None, :, None, None]
    std = np.asarray(cfg.std, np.float32)[None, :, None, None]
    return (x - mean) / std


def as_tensors(params: dict, requires_grad: bool = False) -> dict[str, Tensor]:
    """Wrap every array in a Tensor (for training or gradients w.r.t. weights)."""
    return {k: Tensor(v, requires_grad=requires_grad) for k, v in params.items()}
