"""`refq convert SRC DST.npz`: read a public checkpoint without torch and save it as a refq .npz."""
from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert a .safetensors / torch .pth / llama2.c .bin checkpoint to a refq .npz",
        description="Read SRC (format detected from its first bytes and extension: .safetensors, a torch.save "
                    "zip .pth/.pt/.bin, or a llama2.c .bin) with refq's torch-free readers, print a summary "
                    "(tensor count, parameter count, dtypes) and write DST.npz: the tensors under the checkpoint's "
                    "own names plus a __manifest__ (source sha256, format, config/metadata, refq version).")
    p.add_argument("src", help="source checkpoint")
    p.add_argument("dst", help="output .npz path")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON record")
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


def _convert(args) -> int:
    from pathlib import Path

    from refq.io import read_checkpoint
    from refq.io.npz import save_npz

    src, dst = Path(args.src), Path(args.dst)
    if dst.suffix != ".npz":
        raise ValueError(f"output {dst} must end in .npz")
    print(f"reading {src}", file=sys.stderr)
    params, info, fmt = read_checkpoint(src)
    record = {"source": src.name, "format": fmt, "sha256": sha256(src), **summarize(params)}
    manifest = {"source": src.name, "source_format": fmt, "source_sha256": record["sha256"], "config": info}
    save_npz(dst, params, manifest)
    record["out"] = str(dst)
    if args.json:
        print(json.dumps(record))
    else:
        dtypes = ", ".join(f"{k} x{v}" for k, v in record["dtypes"].items())
        print(f"{src.name}: {fmt}, sha256 {record['sha256'][:16]}...\n"
              f"  {record['tensors']} tensors, {record['parameters']:,} parameters ({dtypes})\n"
              f"  wrote {dst}")
    return 0
