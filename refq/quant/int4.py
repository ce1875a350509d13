"""int4 packing: two 4-bit two's-complement codes per uint8 byte, and back.

Layout (the one the int4 GEMM of refq.kernels.int4_gemm reads):

    byte j of a row = (q[2j] & 0xF) | (q[2j+1] & 0xF) << 4        low nibble = even index

along the packed axis (the last one by default; for nn.Linear weights [N, K] that is K, the reduction
axis, so a weight row is packed into ceil(K/2) bytes). A nibble v in 0..15 decodes to the signed code
v - 16 if v >= 8 else v, i.e. codes -8..7. An odd length is padded with one zero code; the packed array
does not remember the original length, so `unpack_int4` takes it explicitly.

References: docs/aser.md, A2 (W4 per-channel symmetric codes, -8..7); Jacob et al., "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018 (integer
codes stored narrow, widened for the integer matmul).
"""
from __future__ import annotations

import numpy as np

INT4_MIN, INT4_MAX = -8, 7


def _packed_axis(x: np.ndarray, axis, fn: str) -> int:
    """Map `axis` into 0..ndim-1, or raise ValueError naming it."""
    if x.ndim == 0:
        raise ValueError(f"{fn}: got a 0-d array, expected at least 1 dimension to pack along")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{fn}: axis={axis!r} is out of range for an array with {x.ndim} dims")
    return int(axis) % x.ndim


def pack_int4(q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pack int8 codes in [-8, 7] two per byte along `axis` (low nibble = even index); odd lengths pad a 0 code."""
    if not isinstance(q, np.ndarray) or q.dtype != np.int8:
        kind = q.dtype if isinstance(q, np.ndarray) else type(q).__name__
        raise ValueError(f"pack_int4: q has dtype {kind}, expected an int8 numpy array")
    ax = _packed_axis(q, axis, "pack_int4")
    bad = (q < INT4_MIN) | (q > INT4_MAX)
    if bad.any():
        raise ValueError(f"pack_int4: q has {int(bad.sum())} codes outside [{INT4_MIN}, {INT4_MAX}] "
                         f"(first: {int(q[bad][0])})")
    x = np.moveaxis(q, ax, -1)  # [..., L]
    if x.shape[-1] % 2:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (1,), np.int8)], axis=-1)  # [..., L] -> [..., L+1]
    nib = x.view(np.uint8) & np.uint8(0x0F)  # [..., 2P] two's-complement low 4 bits
    packed = nib[..., 0::2] | (nib[..., 1::2] << np.uint8(4))  # [..., 2P] -> [..., P]
    return np.ascontiguousarray(np.moveaxis(packed, -1, ax))


def unpack_int4(packed: np.ndarray, length: int, axis: int = -1) -> np.ndarray:
    """Inverse of `pack_int4`: int8 codes in [-8, 7] with `length` entries along `axis`."""
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8:
        kind = packed.dtype if isinstance(packed, np.ndarray) else type(packed).__name__
        raise ValueError(f"unpack_int4: packed has dtype {kind}, expected a uint8 numpy array")
    ax = _packed_axis(packed, axis, "unpack_int4")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"unpack_int4: length={length!r}, expected a non-negative int")
    if packed.shape[ax] != (length + 1) // 2:
        raise ValueError(f"unpack_int4: packed has {packed.shape[ax]} bytes along axis {ax}, "
                         f"but length={length} needs {(length + 1) // 2}")
    x = np.moveaxis(packed, ax, -1)  # [..., P]
    nib = np.stack([x & np.uint8(0x0F), x >> np.uint8(4)], axis=-1)  # [..., P] -> [..., P, 2] in 0..15
    codes = (nib.astype(np.int8) ^ np.int8(8)) - np.int8(8)  # [..., P, 2] sign-extend: v >= 8 -> v - 16
    codes = codes.reshape(x.shape[:-1] + (2 * x.shape[-1],))[..., :length]  # [..., P, 2] -> [..., L]
    return np.ascontiguousarray(np.moveaxis(codes, -1, ax))
