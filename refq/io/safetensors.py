"""safetensors files, read and written with NumPy only (no `safetensors` package, no torch).

Layout of a .safetensors file:
  8 bytes     N, the header length, unsigned little-endian (uint64)
  N bytes     a UTF-8 JSON object: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
              ..., "__metadata__": {"str": "str"}} (the writer pads it with spaces to a multiple of 8 bytes)
  the rest    the data buffer; a tensor's bytes are buffer[begin:end], C order, little-endian

The format rules checked here (every violation raises ValueError with the actual values): the header fits
in the file, is a JSON object without duplicate keys, every dtype is known, every shape is a list of
non-negative ints, prod(shape) * itemsize == end - begin, and the tensors tile the buffer exactly (no
overlap, no hole, no trailing bytes) so a file cannot smuggle extra data.

bfloat16 has no NumPy dtype: BF16 tensors are widened to float32 by placing the 16 stored bits in the high
half of a float32 (`uint16 << 16`), which is exact. Large files are memory-mapped, so their arrays are
read-only views of the file until a caller copies them.

References: Hugging Face, "safetensors" format description (README, "Format" section), 2022-2024.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from refq.io import require_file
MAX_HEADER_BYTES = 100_000_000  # the limit the reference implementation enforces
MMAP_MIN_BYTES = 16 << 20  # data buffers at least this large are memory-mapped by default
DTYPES = {  # safetensors tag -> NumPy dtype of the stored bytes (BF16 is read as raw uint16, then widened)
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
}
_TAGS = {np.dtype(dt).str.lstrip("<|="): tag for tag, dt in DTYPES.items() if tag != "BF16"}  # 'f4' -> 'F32'


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bits (uint16) to float32: the 16 bits become the high half of the float32."""
    if bits.dtype != np.uint16:
        raise ValueError(f"bf16_to_float32: bits has dtype {bits.dtype}, expected uint16")
    wide = bits.astype(np.uint32)  # [...] uint16 -> [...] uint32, a fresh array
    wide <<= 16  # in place on the copy, so 0-d arrays stay arrays
    return wide.view(np.float32)


def float32_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16 (ties to even) and return its raw bits as uint16."""
    if x.dtype != np.float32:
        raise ValueError(f"float32_to_bf16: x has dtype {x.dtype}, expected float32")
    u = np.array(x, order="C").view(np.uint32)  # [...] float32 bits
    rounded = (u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16  # add half an ulp (ties to even), drop 16 bits
    return np.where(np.isnan(x), np.uint32(0x7FC0), rounded).astype(np.uint16)  # NaN stays a quiet NaN


def _no_duplicates(pairs: list) -> dict:
    """json object_pairs_hook: build the dict, refusing a key that appears twice."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} in safetensors header")
        out[key] = value
    return out


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_header(raw: bytes, data_size: int, where: str = "safetensors") -> tuple[dict, dict]:
    """Validate a JSON header against a data buffer of `data_size` bytes.

    Returns ({name: (tag, shape, begin, end)}, metadata) with offsets relative to the buffer.
    """
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError as err:
        raise ValueError(f"{where}: header JSON is nested too deeply") from err
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{where}: header is not valid UTF-8 JSON: {err}") from err
    if not isinstance(header, dict):
        raise ValueError(f"{where}: header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{where}: __metadata__ must map strings to strings, got {metadata!r:.200}")
    entries = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{where}: tensor {name!r} entry must have exactly dtype, shape, data_offsets; "
                             f"got {entry!r:.200}")
        tag, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(tag, str) or tag not in DTYPES:
            raise ValueError(f"{where}: tensor {name!r} has unknown dtype {tag!r:.50} (known: {sorted(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape) or len(shape) > 64:
            raise ValueError(f"{where}: tensor {name!r} has invalid shape {shape!r:.200}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise ValueError(f"{where}: tensor {name!r} has data_offsets {offsets!r:.200} outside the "
                             f"{data_size}-byte data buffer")
        span = offsets[1] - offsets[0]
        expected = math.prod(shape) * DTYPES[tag].itemsize
        if span != expected:
            raise ValueError(f"{where}: tensor {name!r} of shape {shape} and dtype {tag} needs {expected} bytes, "
                             f"data_offsets {offsets} span {span}")
        entries[name] = (tag, tuple(shape), offsets[0], offsets[1])
    end, previous = 0, None  # the tensors must tile [0, data_size) in offset order
    for name, (_, _, begin, stop) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != end:
            kind = "overlaps" if begin < end else "leaves a hole after"
            raise ValueError(f"{where}: tensor {name!r} at byte {begin} {kind} {previous!r} (ends at byte {end})")
        end, previous = stop, name
    if end != data_size:
        raise ValueError(f"{where}: tensors cover {end} bytes but the data buffer has {data_size}")
    return entries, metadata


def read_safetensors(path: str | Path, mmap: bool | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, metadata) of a .safetensors file; BF16 widened to float32; mmap=None maps files >= 16 MiB."""
    path = require_file(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: {size} bytes, too short for the 8-byte safetensors header length")
        (n,) = struct.unpack("<Q", prefix)  # header length, uint64 little-endian
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise ValueError(f"{path}: header length {n} runs past the end of the {size}-byte file "
                             f"(or exceeds {MAX_HEADER_BYTES})")
        raw = f.read(n)
        data_size = size - 8 - n
        entries, metadata = parse_header(raw, data_size, where=str(path))
        if mmap is None:
            mmap = data_size >= MMAP_MIN_BYTES
        if data_size == 0:
            buf = np.zeros(0, dtype=np.uint8)
        elif mmap:  # read-only view of the file: pages are loaded on first touch
            buf = np.asarray(np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n, shape=(data_size,)))
        else:
            buf = np.fromfile(f, dtype=np.uint8, count=data_size)
    if buf.size != data_size:
        raise ValueError(f"{path}: read {buf.size} data bytes, expected {data_size} (file changed while reading?)")
    tensors = {}
    for name, (tag, shape, begin, end) in entries.items():
        arr = buf[begin:end].view(DTYPES[tag]).reshape(shape)  # [nbytes] uint8 -> shape, stored dtype
        tensors[name] = bf16_to_float32(arr.astype(np.uint16)) if tag == "BF16" else arr
    return tensors, metadata


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(params, metadata): the common reader signature of refq.io."""
    return read_safetensors(path)


def save_safetensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict | None = None,
                     bf16: tuple[str, ...] = ()) -> None:
    """Write tensors (sorted by name) to a .safetensors file; names in `bf16` (float32) are stored as BF16."""
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"save_safetensors: metadata must map str to str, got {metadata!r:.200}")
    unknown = set(bf16) - set(tensors)
    if unknown:
        raise ValueError(f"save_safetensors: bf16 names {sorted(unknown)} are not in tensors")
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        arr = tensors[name]
        if not isinstance(name, str) or name == "__metadata__" or not isinstance(arr, np.ndarray):
            raise ValueError(f"save_safetensors: entry {name!r} must be a str name (not __metadata__) "
                             f"mapping to an ndarray, got {type(arr).__name__}")
        if name in bf16:
            tag, data = "BF16", float32_to_bf16(arr)
        else:
            tag = _TAGS.get(arr.dtype.str.lstrip("<>|="))
            if tag is None or arr.dtype.byteorder == ">":
                raise ValueError(f"save_safetensors: {name!r} has dtype {arr.dtype}, not one of {sorted(_TAGS)} "
                                 f"(little-endian)")
            data = arr
        blob = np.ascontiguousarray(data).tobytes()
        header[name] = {"dtype": tag, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header = {"__metadata__": dict(metadata), **header}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data buffer starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
