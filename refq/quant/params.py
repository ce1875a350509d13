"""Quantization parameters: the frozen `QParams` record, its code convention and its scale layouts.

Code convention (the same for every uniform quantizer in refq)
-------------------------------------------------------------
Codes are signed int8 in [qmin, qmax] = [-2^(b-1), 2^(b-1) - 1] for every bit width b in 2..8, and

    x_hat = scale * (q - zero)

* symmetric:  zero = 0. With absmax ranges the code -2^(b-1) is never produced (docs/aser.md, A2:
  -8 unused at b = 4); it is only reached when a clipped range (percentile, MSE) saturates.
* asymmetric: the textbook unsigned code u = round(x / scale) + z_u in [0, 2^b - 1] with zero point z_u
  (I&S-ViT's uniform quantizer) is stored shifted by -2^(b-1): q = u - 2^(b-1), zero = z_u - 2^(b-1). The shift
  cancels in q - zero, so reconstructions are those of the textbook quantizer, and 8-bit codes still
  fit in int8. The zero point is itself a valid code, so 0.0 is reconstructed exactly.
* The Numba int8 GEMMs consume symmetric codes (zero == 0): then y = s_x s_w sum_k q_x q_w exactly.
  Asymmetric codes are valid int8 too but need the zero-point correction terms of
  sum_k (q_x - z_x)(q_w - z_w); check `params.symmetric` before handing codes to a kernel.

Scale layouts (scale and zero have the same shape; shown for an input x of shape S)
------------------------------------------------------------------------------------
granularity  axis  group_size  scale shape                            used for
"tensor"     None  None        ()                                     per-tensor (layer-wise) activations
"channel"    a     None        S with every axis except a set to 1    per-output-channel weights (a = 0)
"token"      None  None        S[:-1] + (1,)  (statistics over last)  per-token dynamic activations
"group"      a     g           S with S[a] replaced by S[a] // g      per-group weights (g | S[a])
All but "group" broadcast against x directly; "group" is repeated g times along a (`broadcast_params`).

References: docs/aser.md, A2 (per-channel symmetric weights, per-token activations); Zhong et al., "I&S-ViT",
arXiv:2311.10126 (uniform asymmetric quantizer; docs/sardfq.md, S5); Nagel et al., "A White Paper on Neural Network
Quantization", arXiv:2106.08295, Sec. 2.2 (scale / zero-point, symmetric vs asymmetric).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRANULARITIES = ("tensor", "channel", "token", "group")
MIN_BITS, MAX_BITS = 2, 8


def qmin(bits: int) -> int:
    """Smallest code, -2^(b-1)."""
    return -(1 << (bits - 1))


def qmax(bits: int) -> int:
    """Largest code, 2^(b-1) - 1."""
    return (1 << (bits - 1)) - 1


def validate_bits(bits, fn: str) -> int:
    """Return `bits` as an int, or raise ValueError unless it is an integer in 2..8."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{fn}: bits={bits!r}, expected an int in {MIN_BITS}..{MAX_BITS}")
    return int(bits)


def validate_float_array(x, name: str, fn: str) -> np.ndarray:
    """Return `x` unchanged, or raise ValueError unless it is a float ndarray with only finite values."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{fn}: {name} is a {type(x).__name__}, expected a float numpy array")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{fn}: {name} has dtype {x.dtype}, expected a float dtype")
    finite = np.isfinite(x)
    if not finite.all():
        bad = x[~finite]
        raise ValueError(f"{fn}: {name} has {bad.size} non-finite values (first: {bad[0]})")
    return x


def normalize_axis(axis, ndim: int, fn: str) -> int:
    """Map `axis` (negative allowed) into 0..ndim-1, or raise ValueError naming it."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"{fn}: axis={axis!r} is out of range for an array with {ndim} dims")
    return int(axis) % ndim


def scale_shape(shape: tuple, granularity: str, axis, group_size, fn: str) -> tuple:
    """Shape of `scale` for an input of `shape` (see the layout table); raises ValueError on a bad layout."""
    ndim = len(shape)
    if granularity not in GRANULARITIES:
        raise ValueError(f"{fn}: granularity={granularity!r}, expected one of {GRANULARITIES}")
    if granularity != "group" and group_size is not None:
        raise ValueError(f"{fn}: group_size={group_size!r} is only meaningful with granularity='group'")
    if granularity in ("tensor", "token"):
        if axis is not None:
            raise ValueError(f"{fn}: axis={axis!r} must be None for granularity={granularity!r}")
        if granularity == "tensor":
            return ()
        if ndim == 0:
            raise ValueError(f"{fn}: granularity='token' needs at least 1 dim, got shape {shape}")
        return tuple(shape[:-1]) + (1,)
    if axis is None:
        raise ValueError(f"{fn}: granularity={granularity!r} needs an axis, got axis=None")
    a = normalize_axis(axis, ndim, fn)
    if granularity == "channel":
        return tuple(n if i == a else 1 for i, n in enumerate(shape))
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise ValueError(f"{fn}: group_size={group_size!r}, expected a positive int")
    if shape[a] % group_size != 0:
        raise ValueError(f"{fn}: group_size={group_size} does not divide axis {a} of length {shape[a]}")
    return tuple(n // group_size if i == a else n for i, n in enumerate(shape))


@dataclass(frozen=True, eq=False)
class QParams:
    """Scale (float32, > 0) and zero point (int32) of a uniform quantizer, with their layout."""

    scale: np.ndarray
    zero: np.ndarray
    bits: int
    axis: int | None = None
    symmetric: bool = True
    granularity: str = "tensor"
    group_size: int | None = None

    def __post_init__(self):
        fn = "QParams"
        bits = validate_bits(self.bits, fn)
        scale = np.asarray(self.scale)
        zero = np.asarray(self.zero)
        if scale.dtype != np.float32:
            raise ValueError(f"{fn}: scale has dtype {scale.dtype}, expected float32")
        if zero.dtype != np.int32:
            raise ValueError(f"{fn}: zero has dtype {zero.dtype}, expected int32")
        if scale.shape != zero.shape:
            raise ValueError(f"{fn}: scale shape {scale.shape} != zero shape {zero.shape}")
        if not (np.isfinite(scale) & (scale > 0)).all():
            raise ValueError(f"{fn}: scale must be finite and > 0, got min {scale.min()} / max {scale.max()}")
        if zero.size and (zero.min() < qmin(bits) or zero.max() > qmax(bits)):
            raise ValueError(f"{fn}: zero in [{zero.min()}, {zero.max()}] is outside the codes "
                             f"[{qmin(bits)}, {qmax(bits)}] of bits={bits}")
        if self.symmetric and zero.any():
            raise ValueError(f"{fn}: symmetric=True needs zero == 0, got nonzero zero points")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"{fn}: granularity={self.granularity!r}, expected one of {GRANULARITIES}")
        if self.granularity == "tensor" and scale.shape != ():
            raise ValueError(f"{fn}: granularity='tensor' needs a 0-d scale, got shape {scale.shape}")
        if (self.axis is None) != (self.granularity in ("tensor", "token")):
            raise ValueError(f"{fn}: axis={self.axis!r} does not fit granularity={self.granularity!r}")
        if (self.group_size is None) != (self.granularity != "group"):
            raise ValueError(f"{fn}: group_size={self.group_size!r} does not fit granularity={self.granularity!r}")
        for name, arr in (("scale", scale), ("zero", zero)):
            frozen = arr.copy()
            frozen.setflags(write=False)
            object.__setattr__(self, name, frozen)
        object.__setattr__(self, "bits", bits)

    @property
    def qmin(self) -> int:
        """Smallest code of this quantizer."""
        return qmin(self.bits)

    @property
    def qmax(self) -> int:
        """Largest code of this quantizer."""
        return qmax(self.bits)


def broadcast_params(params: QParams, shape: tuple, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero) of `params` made broadcastable to an input of `shape`; ValueError if they do not fit."""
    expected = scale_shape(tuple(shape), params.granularity, params.axis, params.group_size, fn)
    if params.scale.shape != expected:
        raise ValueError(f"{fn}: params.scale has shape {params.scale.shape}, but a {params.granularity} "
                         f"quantizer of an input with shape {tuple(shape)} needs {expected}")
    if params.granularity != "group":
        return params.scale, params.zero
    a = normalize_axis(params.axis, len(shape), fn)
    scale = np.repeat(params.scale, params.group_size, axis=a)  # [.., S[a]/g, ..] -> [.., S[a], ..]
    zero = np.repeat(params.zero, params.group_size, axis=a)  # [.., S[a]/g, ..] -> [.., S[a], ..]
    return scale, zero
