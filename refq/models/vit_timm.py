"""timm ViT / DeiT state dicts -> refq's ViT (refq.models.vit): the config read off the tensor shapes, every key
and shape validated.

refq's ViT already uses timm's parameter names, so converting a timm checkpoint is not a renaming: it is
working out the ViTConfig that the tensors imply and refusing anything refq's model would not use.

    patch_embed.proj.weight  [D, C, p, p]      width D, input channels C, patch size p
    pos_embed                [1, T, D]          T = grid^2 + 1 (+1 with a distillation token); img_size = grid * p
    dist_token, head_dist.*                     present only in distilled DeiT (Touvron et al., Sec. 4)
    blocks.<i>.*                                depth = number of distinct i
    blocks.0.mlp.fc1.weight  [M, D]             mlp_ratio = M / D
    head.weight              [K, D]             K classes

The number of attention heads H is not in any shape (qkv is [3D, D] whatever H is), so it is an argument;
`heads_for_name` knows it for the standard timm model names. The LayerNorm epsilon (1e-6) is timm's fixed
choice for ViT/DeiT. Input normalisation is not in the checkpoint either: DeiT was trained with the ImageNet
mean/std, the original and "augreg" ViT checkpoints with mean = std = 0.5 ("inception" in timm).

Checkpoints that wrap the state dict ({'model': state_dict}, as the DeiT release files do) read as
'model.<name>'; a prefix shared by every key ('model.', 'module.', 'state_dict.') is removed. No other key is
dropped silently: a key refq's ViT has no use for (fc_norm, reg_token, layer scale, ...) raises ValueError
naming it, because ignoring it would compute a different function from the checkpoint's own model.

References:
  Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (Sec. 3.1: patch, class and position embeddings).
  Touvron et al., "Training data-efficient image transformers (DeiT)", ICML 2021 (Sec. 4: distillation token).
  Steiner et al., "How to train your ViT?", TMLR 2022 (the "augreg" checkpoints; inputs scaled to [-1, 1]).
  timm (Wightman, pytorch-image-models): vision_transformer.py and deit.py define the key names.
"""
from __future__ import annotations

import math
import re

import numpy as np

from refq.models import vit

NORMALIZATIONS = {  # name -> (mean, std) per RGB channel
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # DeiT
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # original and augreg ViT
}
KNOWN_HEADS = {"deit_tiny": 3, "deit_small": 6, "deit_base": 12,
               "vit_tiny": 3, "vit_small": 6, "vit_base": 12, "vit_large": 16}
WRAPPER_PREFIXES = ("model.", "module.", "state_dict.")
REQUIRED = ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.mlp.fc1.weight", "head.weight")


def heads_for_name(name: str) -> int | None:
    """Heads of a standard timm model named at the start of `name` (e.g. 'deit_tiny_patch16_224-a1311bcf.pth')."""
    stem = name.lower().rsplit("/", 1)[-1]
    hits = [key for key in KNOWN_HEADS if stem.startswith(key)]
    return KNOWN_HEADS[max(hits, key=len)] if hits else None


def normalization_for_name(name: str) -> str:
    """'inception' for timm ViT names (vit_*), 'imagenet' otherwise (DeiT and anything unknown)."""
    return "inception" if name.lower().rsplit("/", 1)[-1].startswith("vit_") else "imagenet"


def strip_wrapper(params: dict) -> tuple[dict, str]:
    """(params without a prefix that every key shares, that prefix or '')."""
    for prefix in WRAPPER_PREFIXES:
        if params and all(k.startswith(prefix) for k in params):
            return {k[len(prefix):]: v for k, v in params.items()}, prefix
    return dict(params), ""


def config_from_timm_state_dict(params: dict, num_heads: int, img_size: int | None = None,
                                mean=NORMALIZATIONS["imagenet"][0], std=NORMALIZATIONS["imagenet"][1]) -> vit.ViTConfig:
    """The ViTConfig implied by a timm ViT/DeiT state dict's shapes (heads and normalisation given)."""
    for key in REQUIRED:
        if key not in params:
            raise ValueError(f"timm state dict has no {key!r}; not a timm ViT/DeiT with a class token "
                             f"(first keys: {sorted(params)[:6]})")
    w = params["patch_embed.proj.weight"]
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"patch_embed.proj.weight has shape {tuple(w.shape)}, expected [D, C, p, p]")
    D, C, p, _ = w.shape
    distilled = "dist_token" in params
    pos = params["pos_embed"]
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != D:
        raise ValueError(f"pos_embed has shape {tuple(pos.shape)}, expected [1, T, {D}]")
    patches = pos.shape[1] - 1 - int(distilled)  # T minus the class (and distillation) token
    grid = math.isqrt(max(patches, 0))
    if patches < 1 or grid * grid != patches:
        raise ValueError(f"pos_embed has shape {tuple(pos.shape)}: {patches} patch positions, not a square grid")
    if img_size is not None and img_size != grid * p:
        raise ValueError(f"img_size {img_size} does not match the checkpoint: pos_embed holds a {grid}x{grid} "
                         f"grid of {p}-pixel patches ({grid * p} pixels); refq does not resample position embeddings")
    indices = sorted({int(m.group(1)) for k in params if (m := re.match(r"blocks\.(\d+)\.", k))})
    if indices != list(range(len(indices))):
        raise ValueError(f"block indices {indices[:10]} are not 0..depth-1")
    hidden = params["blocks.0.mlp.fc1.weight"].shape[0]
    if int(D * (hidden / D)) != hidden:
        raise ValueError(f"blocks.0.mlp.fc1.weight: MLP width {hidden} is not representable as a ratio of width {D}")
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != C or len(std) != C:
        raise ValueError(f"mean {mean} / std {std} need one value per input channel ({C})")
    if num_heads < 1 or D % num_heads:
        raise ValueError(f"num_heads {num_heads} does not divide the width {D}")
    return vit.ViTConfig(img_size=grid * p, patch_size=p, in_chans=C, num_classes=params["head.weight"].shape[0],
                         embed_dim=D, depth=len(indices), num_heads=num_heads, mlp_ratio=hidden / D,
                         distilled=distilled, mean=mean, std=std)


def check_timm_params(params: dict, cfg: vit.ViTConfig) -> None:
    """ValueError naming any unknown, missing, mis-shaped or non-float tensor."""
    want = vit.expected_shapes(cfg)
    unknown, missing = sorted(set(params) - set(want)), sorted(set(want) - set(params))
    if unknown:
        raise ValueError(f"timm state dict: unknown key(s) {unknown[:8]} (refq's ViT/DeiT has no such parameter; "
                         f"{len(unknown)} in all)")
    if missing:
        raise ValueError(f"timm state dict: missing key(s) {missing[:8]} for config {cfg}")
    for key in sorted(params):
        if np.asarray(params[key]).dtype.kind != "f":
            raise ValueError(f"timm state dict: {key} has dtype {np.asarray(params[key]).dtype}, expected floats")
    vit.check_params(params, cfg)


def from_timm(params: dict, num_heads: int, img_size: int | None = None, mean=NORMALIZATIONS["imagenet"][0],
              std=NORMALIZATIONS["imagenet"][1]) -> tuple[dict[str, np.ndarray], vit.ViTConfig, str]:
    """(float32 params, config, stripped wrapper prefix) of a timm ViT/DeiT state dict; the input is not modified."""
    params, prefix = strip_wrapper(params)
    cfg = config_from_timm_state_dict(params, num_heads, img_size, mean, std)
    check_timm_params(params, cfg)
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()}  # fp16/fp64 -> float32
    return out, cfg, prefix
