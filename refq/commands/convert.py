"""`refq convert SRC DST.npz`: read a public checkpoint without torch and save it as a refq .npz.

With `--model vit` (or any --vit-* option) SRC must be a timm ViT/DeiT state dict: refq.models.vit_timm reads
the ViTConfig off its shapes, validates every key, and the manifest's "config" is that ViTConfig, so the .npz
loads with refq.pretrained.load_vit and `refq vit dfq --checkpoint`.
"""
from __future__ import annotations

import json
import sys

from refq.commands._args import finite_float, input_file, output_file, positive_float, positive_int, same_file


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a .safetensors / torch .pth / llama2.c .bin checkpoint to a refq .npz",
        description="Read SRC (format detected from its first bytes and extension: .safetensors, a torch.save "
                    "zip .pth/.pt/.bin, or a llama2.c .bin) with refq's torch-free readers, print a summary "
                    "(tensor count, parameter count, dtypes) and write DST.npz: the tensors under the checkpoint's "
                    "own names plus a __manifest__ (source sha256, format, config/metadata, refq version).")
    p.add_argument("src", type=input_file, help="source checkpoint")
    p.add_argument("dst", type=output_file, help="output .npz path (not SRC itself)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON record")
    v = p.add_argument_group("timm ViT/DeiT", "check SRC as a timm ViT/DeiT state dict and store its ViTConfig in "
                                              "the manifest (loadable by refq.pretrained.load_vit, `refq vit dfq`)")
    v.add_argument("--model", choices=("raw", "vit"), default=None,
                   help="'vit': a timm ViT/DeiT (implied by any --vit-* option); default 'raw': tensors as stored")
    v.add_argument("--vit-heads", type=positive_int, default=None, metavar="N",
                   help="attention heads (not in the shapes; known for deit_/vit_ tiny, small, base, large file names)")
    v.add_argument("--vit-norm", choices=("imagenet", "inception"), default=None,
                   help="input mean/std: imagenet (DeiT) or inception = 0.5/0.5 (augreg ViT); "
                        "default from the file name (vit_* -> inception, else imagenet)")
    v.add_argument("--vit-mean", type=finite_float, nargs="+", default=None, metavar="M",
                   help="per-channel mean (overrides --vit-norm)")
    v.add_argument("--vit-std", type=positive_float, nargs="+", default=None, metavar="S",
                   help="per-channel std (overrides --vit-norm)")
    p.set_defaults(func=_convert)


def summarize(params: dict) -> dict:
    """Tensor count, parameter count and tensors per dtype."""
    dtypes: dict[str, int] = {}
    for arr in params.values():
        dtypes[str(arr.dtype)] = dtypes.get(str(arr.dtype), 0) + 1
    return {"tensors": len(params), "parameters": int(sum(arr.size for arr in params.values())),
            "dtypes": dict(sorted(dtypes.items()))}


def sha256(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _vit_options(args) -> bool:
    """Whether the ViT path is requested (explicitly or by any --vit-* option)."""
    given = [a for a in ("vit_heads", "vit_norm", "vit_mean", "vit_std") if getattr(args, a) is not None]
    if args.model == "raw" and given:
        raise ValueError(f"--model raw with --{given[0].replace('_', '-')}: the --vit-* options need --model vit")
    return args.model == "vit" or bool(given)


def convert_vit(params: dict, src_name: str, heads=None, norm=None, mean=None, std=None) -> tuple[dict, dict, dict]:
    """(float32 params, ViTConfig dict, manifest extras) of a timm ViT/DeiT state dict read from src_name."""
    from refq.models import vit_timm

    heads = heads if heads is not None else vit_timm.heads_for_name(src_name)
    if heads is None:
        raise ValueError(f"{src_name}: the number of attention heads is not in the checkpoint and the file name is "
                         f"not a known timm model ({sorted(vit_timm.KNOWN_HEADS)}); pass --vit-heads N")
    norm = norm or vit_timm.normalization_for_name(src_name)
    default_mean, default_std = vit_timm.NORMALIZATIONS[norm]
    out, cfg, prefix = vit_timm.from_timm(params, heads, mean=mean or default_mean, std=std or default_std)
    extras = {"model": "vit", "timm_prefix_stripped": prefix,
              "normalization": "custom" if (mean or std) else norm}
    return out, cfg.to_dict(), extras


def _convert(args) -> int:
    from pathlib import Path

    from refq.io import read_checkpoint
    from refq.io.npz import save_npz

    src, dst = Path(args.src), Path(args.dst)
    if dst.suffix != ".npz":
        raise ValueError(f"output {dst} must end in .npz")
    if same_file(src, dst):
        raise ValueError(f"output {dst} is the input {src}; refusing to overwrite the source checkpoint")
    print(f"reading {src}", file=sys.stderr)
    params, info, fmt = read_checkpoint(src)
    record = {"source": src.name, "format": fmt, "sha256": sha256(src)}
    manifest = {"source": src.name, "source_format": fmt, "source_sha256": record["sha256"], "config": info}
    if _vit_options(args):
        params, config, extras = convert_vit(params, src.name, args.vit_heads, args.vit_norm, args.vit_mean,
                                             args.vit_std)
        manifest.update(config=config, source_info=info, **extras)
        record["vit_config"] = config
    record.update(summarize(params))
    save_npz(dst, params, manifest)
    record["out"] = str(dst)
    if args.json:
        print(json.dumps(record))
    else:
        dtypes = ", ".join(f"{k} x{v}" for k, v in record["dtypes"].items())
        print(f"{src.name}: {fmt}, sha256 {record['sha256'][:16]}...\n"
              f"  {record['tensors']} tensors, {record['parameters']:,} parameters ({dtypes})")
        if "vit_config" in record:
            print(f"  ViT config: {record['vit_config']}")
        print(f"  wrote {dst}")
    return 0
