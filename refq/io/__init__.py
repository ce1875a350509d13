"""Checkpoint readers, all without torch: safetensors, PyTorch zip (.pth/.pt/.bin), llama2.c .bin, refq .npz.

Every reader module has `read_checkpoint(path) -> (params, info)`: params maps the checkpoint's own tensor
names to NumPy arrays, info holds the rest (safetensors metadata, non-tensor pickle leaves, llama2.c config).
Readers validate every size, offset, dtype and shape and raise ValueError naming the bad value.
"""
from __future__ import annotations

import importlib
import importlib.util
import struct
from pathlib import Path

FORMATS = {"safetensors": "refq.io.safetensors", "pth": "refq.io.pth", "llama2c": "refq.io.llama2c"}


def require_file(path: str | Path) -> Path:
    """path as a Path, or ValueError when it is missing or not a regular file (a directory, a FIFO...)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file" if not path.exists() else
                         f"{path} is a directory, not a file" if path.is_dir() else f"{path} is not a regular file")
    return path


def detect_format(path: str | Path) -> str:
    """'safetensors', 'pth' or 'llama2c', from the file's first bytes and its extension."""
    path = require_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    suffix = path.suffix.lower()
    if head[:4] == b"PK\x03\x04":  # a zip: torch.save archives (an .npz is refq's output, not a source)
        if suffix == ".npz":
            raise ValueError(f"{path}: already a refq .npz; load it with refq.io.npz.load_npz")
        return "pth"
    if suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > 1):
        return "safetensors"
    if suffix == ".bin":
        return "llama2c"
    if suffix in (".pth", ".pt"):
        return "pth"  # not a zip: load_pth explains (legacy format or not a checkpoint)
    raise ValueError(f"{path}: unknown checkpoint format (extension {suffix!r}, first bytes {head!r}); "
                     f"expected .safetensors, a torch.save zip (.pth/.pt/.bin) or a llama2.c .bin")


def read_checkpoint(path: str | Path, fmt: str | None = None) -> tuple[dict, dict, str]:
    """(params, info, format) of any supported checkpoint; the format is detected unless given."""
    fmt = detect_format(path) if fmt is None else fmt
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {sorted(FORMATS)}")
    if importlib.util.find_spec(FORMATS[fmt]) is None:
        raise ValueError(f"{path}: the {fmt} reader ({FORMATS[fmt]}) is not available in this refq")
    params, info = importlib.import_module(FORMATS[fmt]).read_checkpoint(path)
    return params, info, fmt
