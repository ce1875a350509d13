"""One SARDFQ configuration end to end: load a ViT, make calibration images, quantize, reconstruct, evaluate.

    calibration  'real'  : `batch` real images (Fashion-MNIST training images, or a labelled image folder)
                 'noise' : N(0, 1) images in the normalised space                       (PSAQ-ViT's mode)
                 'psaq'  : PSAQ-ViT inversion (PSE + CE + TV)                            (S1)
                 'sardfq': APA + MSR + SL inversion, each switchable                    (S2-S4)
    quantize     QuantOps(wbits, abits), ranges by percentile-MSE on the calibration images (S5)
    reconstruct  patch embedding, blocks, head; 100 Adam steps each, lr 4e-5 (the paper)
    evaluate     top-1 of the fake-quant model (or its integer path) on the evaluation images

Models: the shipped Fashion-MNIST ViT (refq.pretrained), any refq ViT .npz whose manifest holds a
ViTConfig, or a timm ViT/DeiT converted by `refq convert` (keys are timm's names; the config is read off
the shapes: patch size, width, depth, classes, tokens; the head count is not in the shapes, so it is
`heads` or width / 64 as in timm's ViT/DeiT; ImageNet mean/std by default). Evaluation images for those
come from a folder (`load_image_folder`), resized to img_size / crop_pct (bicubic) and centre-cropped, as
in timm's evaluation transform.

References: SARDFQ, arXiv:2412.16553 (data synthesis, then quantized network learning); docs/sardfq.md,
S1-S8 (the notes in parentheses above); timm's evaluation transform.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from refq.models import vit
from refq.models.vit_train import predict
from refq.sardfq.quant_vit import QuantOps, init_quantizers
from refq.sardfq.reconstruct import reconstruct
from refq.sardfq.synthesis import SynthConfig, synthesize

CALIB_METHODS = ("real", "noise", "psaq", "sardfq")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")
_PREFIXES = ("model.", "state_dict.", "module.")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def infer_config(params: dict, heads: int | None = None, mean=None, std=None) -> vit.ViTConfig:
    """A ViTConfig read off timm-named parameter shapes (heads default: width / 64, at least 1)."""
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token", "head.weight"):
        if key not in params:
            raise ValueError(f"checkpoint has no {key!r}; not a timm ViT/DeiT (first keys: {sorted(params)[:5]})")
    D, C, p, _ = params["patch_embed.proj.weight"].shape
    distilled = "dist_token" in params
    patches = params["pos_embed"].shape[1] - 1 - int(distilled)
    grid = int(round(patches ** 0.5))
    if grid * grid != patches:
        raise ValueError(f"pos_embed has {patches} patch positions, not a square grid")
    depth = len({k.split(".")[1] for k in params if k.startswith("blocks.")})
    hidden = params["blocks.0.mlp.fc1.weight"].shape[0]
    mean = tuple(mean) if mean is not None else (IMAGENET_MEAN if C == 3 else (0.5,) * C)
    std = tuple(std) if std is not None else (IMAGENET_STD if C == 3 else (0.5,) * C)
    return vit.ViTConfig(img_size=grid * p, patch_size=p, in_chans=C, num_classes=params["head.weight"].shape[0],
                         embed_dim=D, depth=depth, num_heads=heads or max(1, D // 64), mlp_ratio=hidden / D,
                         distilled=distilled, mean=mean, std=std)


def load_model(checkpoint=None, heads: int | None = None, mean=None, std=None) -> tuple[dict, vit.ViTConfig, dict]:
    """(params, cfg, manifest): the shipped ViT, a refq ViT .npz, or a converted timm checkpoint."""
    from refq.io.npz import load_npz
    from refq.pretrained import load_vit

    if checkpoint is None:
        return load_vit()
    params, manifest = load_npz(checkpoint)
    for prefix in _PREFIXES:  # e.g. DeiT's {'model': state_dict} flattens to 'model.<name>'
        if params and all(k.startswith(prefix) for k in params):
            params = {k[len(prefix):]: v for k, v in params.items()}
    params = {k: np.asarray(v, np.float32) for k, v in params.items()
              if np.asarray(v).dtype.kind == "f"}  # float16/bfloat16 -> float32; integer buffers dropped
    config = manifest.get("config")
    if isinstance(config, dict) and "embed_dim" in config:
        cfg = vit.ViTConfig.from_dict(config)
        overrides = {k: v for k, v in (("num_heads", heads), ("mean", mean), ("std", std)) if v is not None}
        cfg = replace(cfg, **{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in overrides.items()})
    else:
        cfg = infer_config(params, heads, mean, std)
    vit.check_params(params, cfg)  # unknown keys (e.g. a global-pool fc_norm) are an error, not dropped
    return params, cfg, manifest


def _read_image(path: Path, cfg: vit.ViTConfig, crop_pct: float) -> np.ndarray:
    """timm-style eval transform: resize the short side to img_size / crop_pct (bicubic), centre crop; [C, H, W] in [0, 1]."""
    from PIL import Image

    from refq.data.image import read_image

    with Image.fromarray(read_image(path, "L" if cfg.in_chans == 1 else "RGB")) as im:  # size-capped, errors named
        short = int(round(cfg.img_size / crop_pct))
        w, h = im.size
        scale = short / min(w, h)
        im = im.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.BICUBIC)
        left, top = (im.size[0] - cfg.img_size) // 2, (im.size[1] - cfg.img_size) // 2
        im = im.crop((left, top, left + cfg.img_size, top + cfg.img_size))
        arr = np.asarray(im, np.float32) / 255.0  # [H, W] or [H, W, 3]
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # -> [C, H, W]


def list_image_folder(root, labels=None) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, class names) of ROOT/<class>/<image> (classes sorted, or in the order listed in the
    `labels` file), or of a flat ROOT with a `labels` file of 'filename class_index' lines."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist")
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir())
    lines = [ln.split() for ln in Path(labels).read_text().splitlines() if ln.strip()] if labels else None
    files, ys = [], []
    if subdirs:
        classes = [ln[0] for ln in lines] if lines else subdirs
        index = {c: i for i, c in enumerate(classes)}
        for d in subdirs:
            if d not in index:
                raise ValueError(f"class folder {d!r} of {root} is not listed in {labels}")
            for f in sorted((root / d).iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(f)
                    ys.append(index[d])
    else:
        if not lines:
            raise ValueError(f"{root} has no class subfolders; pass a labels file of 'filename class_index' lines")
        classes = []
        for ln in lines:
            if len(ln) < 2 or not ln[1].lstrip("-").isdigit():
                raise ValueError(f"labels line {' '.join(ln)!r} is not 'filename class_index'")
            files.append(root / ln[0])
            ys.append(int(ln[1]))
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {root}")
    return files, np.asarray(ys, np.int64), classes


def load_image_folder(root, cfg: vit.ViTConfig, labels=None, limit: int | None = None,
                      crop_pct: float = 0.875) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images [N, C, H, W] float32 and labels [N] of an image folder (limit: a fixed random subset)."""
    files, ys, _ = list_image_folder(root, labels)
    if ys.max() >= cfg.num_classes:
        raise ValueError(f"label {ys.max()} is out of range for a model with {cfg.num_classes} classes")
    order = np.random.default_rng(0).permutation(len(files))[:limit] if limit else np.arange(len(files))
    x = np.stack([_read_image(files[i], cfg, crop_pct) for i in order])  # [N, C, H, W] in [0, 1]
    return vit.normalize_images(x, cfg), ys[order]


def fashion_mnist(cfg: vit.ViTConfig, split: str, data=None, limit: int | None = None,
                  offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Fashion-MNIST images [N, 1, 28, 28] and labels, images offset..offset+limit of `split`."""
    from refq.data import fashion_mnist as fm

    x, y = fm.load(split, data)
    end = len(x) if limit is None else offset + limit
    return vit.normalize_images(x[offset:end, None], cfg), y[offset:end]


def calibration_images(params: dict, cfg: vit.ViTConfig, calib: str, sc: SynthConfig, rng: np.random.Generator,
                       real_pool: np.ndarray | None = None, log=_stderr):
    """(images [B, C, H, W], SynthResult or None, seconds) for one calibration method."""
    if calib not in CALIB_METHODS:
        raise ValueError(f"calibration method {calib!r}, expected one of {CALIB_METHODS}")
    start = time.time()
    if calib == "real":
        if real_pool is None or len(real_pool) < sc.batch:
            have = 0 if real_pool is None else len(real_pool)
            raise ValueError(f"'real' calibration needs {sc.batch} real images, got {have}")
        return real_pool[rng.choice(len(real_pool), sc.batch, replace=False)], None, time.time() - start
    result = synthesize(params, cfg, replace(sc, method=calib), rng, log)
    return result.images, result, time.time() - start


def quantize_and_evaluate(params: dict, cfg: vit.ViTConfig, calib_x: np.ndarray, wbits: int, abits: int,
                          eval_x: np.ndarray, eval_y: np.ndarray, rng: np.random.Generator, recon_iters: int = 100,
                          integer: bool = False, compare_integer: bool = False, log=_stderr) -> dict:
    """Quantizer init + reconstruction on calib_x, then top-1 on the evaluation images; a record with timings.

    compare_integer: also run the other path (integer kernels vs fake-quant simulation) on the same
    images and record its top-1 and the fraction of images where both paths predict the same class.
    """
    t0 = time.time()
    ops = init_quantizers(params, cfg, QuantOps(wbits, abits), calib_x)
    t1 = time.time()
    qparams, history = reconstruct(params, cfg, ops, calib_x, rng, iters=recon_iters, batch_size=len(calib_x), log=log)
    t2 = time.time()
    ops.integer = integer
    pred = predict(qparams, cfg, eval_x, batch_size=250, ops=ops).argmax(-1)  # [N]
    record = {"top1": float((pred == eval_y).mean()), "n_eval": len(eval_y), "integer": integer,
              "reconstruction": history,
              "seconds": {"quant_init": t1 - t0, "reconstruction": t2 - t1, "eval": time.time() - t2},
              "ops": ops, "params": qparams}
    if compare_integer:
        ops.integer = not integer
        other = predict(qparams, cfg, eval_x, batch_size=250, ops=ops).argmax(-1)  # [N]
        ops.integer = integer
        int_pred, sim_pred = (pred, other) if integer else (other, pred)
        record.update(integer_top1=float((int_pred == eval_y).mean()),
                      simulated_top1=float((sim_pred == eval_y).mean()),
                      integer_agreement=float((int_pred == sim_pred).mean()))
    return record


def run_config(params: dict, cfg: vit.ViTConfig, calib: str, wbits: int, abits: int, seed: int,
               eval_x: np.ndarray, eval_y: np.ndarray, sc: SynthConfig = SynthConfig(), real_pool=None,
               recon_iters: int = 100, images: np.ndarray | None = None, integer: bool = False,
               compare_integer: bool = False, log=_stderr) -> tuple[dict, np.ndarray, object]:
    """One configuration -> (JSON-able record with top-1 and timings, calibration images, SynthResult or None)."""
    synth_rng, recon_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    result, synth_seconds = None, 0.0
    if images is None:
        images, result, synth_seconds = calibration_images(params, cfg, calib, sc, synth_rng, real_pool, log)
    out = quantize_and_evaluate(params, cfg, images, wbits, abits, eval_x, eval_y, recon_rng, recon_iters, integer,
                                compare_integer, log)
    sardfq = calib == "sardfq"
    record = {"calib": calib, "wbits": wbits, "abits": abits, "seed": seed, "top1": out["top1"],
              "n_eval": out["n_eval"], "integer": integer, "n_calib": len(images),
              "apa": sardfq and sc.apa, "msr": sardfq and sc.msr, "sl": sardfq and sc.sl,
              "alpha1": sc.alpha1 if sardfq and sc.apa else None,
              "synth_iters": sc.rounds * sc.iters if calib in ("psaq", "sardfq") else 0, "recon_iters": recon_iters,
              "seconds": {"synthesis": synth_seconds, "synthesis_per_image": synth_seconds / len(images),
                          **out["seconds"]}}
    record.update({k: out[k] for k in ("integer_top1", "simulated_top1", "integer_agreement") if k in out})
    return record, images, result


def save_image_grid(images: np.ndarray, cfg: vit.ViTConfig, path, ncol: int = 8, scale: int = 1) -> None:
    """Write normalised images [B, C, H, W] as one PNG grid (denormalised, clipped to [0, 1])."""
    from PIL import Image

    mean = np.asarray(cfg.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(cfg.std, np.float32).reshape(1, -1, 1, 1)
    x = np.clip(images * std + mean, 0.0, 1.0)  # [B, C, H, W] in [0, 1]
    B, C, H, W = x.shape
    rows = (B + ncol - 1) // ncol
    canvas = np.ones((C, rows * (H + 2), ncol * (W + 2)), np.float32)  # white 2-px gutters
    for i in range(B):
        r, c = divmod(i, ncol)
        canvas[:, r * (H + 2):r * (H + 2) + H, c * (W + 2):c * (W + 2) + W] = x[i]
    arr = (canvas.transpose(1, 2, 0) * 255).round().astype(np.uint8)  # [H', W', C]
    im = Image.fromarray(arr[..., 0] if C == 1 else arr)
    if scale > 1:
        im = im.resize((im.size[0] * scale, im.size[1] * scale), Image.NEAREST)
    im.save(path)
