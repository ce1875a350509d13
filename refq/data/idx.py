"""Reader for the IDX format of MNIST-style datasets (optionally gzip-compressed).

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic
`0x00 0x00 <dtype code> <ndim>`, then `ndim` big-endian uint32 sizes, then the
values in C order. Only the unsigned-byte dtype (0x08) is used by (Fashion-)MNIST.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(raw: bytes, name: str = "idx") -> np.ndarray:
    """Decode IDX bytes into an array; ValueError on a bad magic or a size mismatch."""
    if len(raw) < 4:
        raise ValueError(f"{name}: {len(raw)} bytes is too short for an IDX header")
    zero, code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or code not in _DTYPES or not 1 <= ndim <= 4:
        raise ValueError(f"{name}: bad IDX magic {raw[:4].hex()} (expected 0000 + dtype code + ndim 1..4)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: {len(raw)} bytes is too short for a {ndim}-d IDX header ({header} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{name}: file has {len(raw)} bytes, shape {shape} of {dtype} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an `.idx` or `.idx.gz` file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return parse_idx(f.read(), name=str(path))
