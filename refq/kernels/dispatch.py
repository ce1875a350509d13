"""Which integer GEMM kernel runs, weights packed once for it, and the public int8 / int4 GEMMs.

Three kernels compute the same C = A @ B.T (int8 A [M, K], int8 or int4 B [N, K], int32 C), bit for bit:

    "vnni"      refq.kernels.vnni    AVX-512 VNNI vpdpbusd, 64 multiply-adds per instruction
    "avx2"      refq.kernels.avx2    AVX2 vpmaddwd on int16-widened weights, 16 per instruction
    "portable"  refq.kernels.int8_gemm / int4_gemm, plain Numba, any CPU

`select()` takes the first of these the CPU runs (refq.kernels.cpu), unless the environment variable
REFQ_GEMM_KERNEL names one ("auto" = the default choice); naming a kernel this CPU cannot run is a
ValueError that lists the missing features, never an illegal-instruction crash.

Packing. Each fast kernel reads the weights in its own panel layout. `pack_int8` / `pack_int4` build
it once, into a `PackedWeights`; a quantized layer keeps that and calls `gemm_packed(a, w)` on every
forward, so only the activations are touched per call. `gemm_int8(a, b)` / `gemm_int4(a, b, k)`
pack and multiply in one call, for one-off products and tests.

References: Goto & van de Geijn, ACM TOMS 34(3), 2008 (pack B once, reuse it across blocks of A).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from refq.kernels import avx2, vnni
from refq.kernels.int4_gemm import gemm_int4_tiled
from refq.kernels.int8_gemm import dequant_epilogue, gemm_int8_tiled
from refq.kernels.reference import check_gemm_int4, check_gemm_int8, check_int4_weights, check_matrix, check_scales

KERNELS = ("vnni", "avx2", "portable")  # preference order
ENV = "REFQ_GEMM_KERNEL"
FEATURES = {"vnni": ("avx512f", "avx512bw", "avx512vnni"), "avx2": ("avx2",), "portable": ()}


def available(kernel: str) -> bool:
    """True when this host can run `kernel`."""
    return {"vnni": vnni.AVAILABLE, "avx2": avx2.AVAILABLE, "portable": True}[kernel]


def select(kernel: str | None = None) -> str:
    """The kernel to run: `kernel` if given, else $REFQ_GEMM_KERNEL, else the fastest this host runs."""
    name = kernel if kernel is not None else os.environ.get(ENV, "auto")
    name = name.strip().lower() or "auto"
    if name == "auto":
        return next(k for k in KERNELS if available(k))
    if name not in KERNELS:
        source = f"{ENV}={name!r}" if kernel is None else f"kernel={name!r}"
        raise ValueError(f"{source}: unknown GEMM kernel, expected one of auto, {', '.join(KERNELS)}")
    if not available(name):
        from refq.kernels.cpu import describe, jit_targets_host

        why = (f"needs the CPU features {', '.join(FEATURES[name])}; this host is {describe()}"
               if jit_targets_host() else "needs Numba's JIT compiling for the host CPU (x86-64)")
        raise ValueError(f"GEMM kernel {name!r} cannot run here: it {why}")
    return name


@dataclass(frozen=True)
class PackedWeights:
    """Weights B [N, K] (int8, or int4 when bits == 4) in the layout `kernel` reads."""

    kernel: str
    bits: int
    n: int
    k: int
    data: np.ndarray  # vnni: uint8 panels; avx2: int16 panels; portable: B itself (int8, or packed int4 bytes)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.k


def pack_int8(b: np.ndarray, kernel: str | None = None) -> PackedWeights:
    """Pack int8 weights [N, K] once for `kernel` (default: `select()`)."""
    b = check_matrix(b, "b", np.int8, "pack_int8")
    name = select(kernel)
    data = {"vnni": vnni.pack_int8, "avx2": avx2.pack_int8, "portable": np.array}[name](b)
    return PackedWeights(name, 8, b.shape[0], b.shape[1], data)


def pack_int4(b_packed: np.ndarray, k: int, kernel: str | None = None) -> PackedWeights:
    """Pack int4 weights (uint8 [N, ceil(K/2)], refq.quant.int4 layout) once for `kernel`."""
    b_packed = check_int4_weights(b_packed, k, "pack_int4")
    name = select(kernel)
    if name == "vnni":
        data = vnni.pack_int4(b_packed, int(k))
    else:
        data = avx2.pack_int4(b_packed) if name == "avx2" else np.array(b_packed)
    return PackedWeights(name, 4, b_packed.shape[0], int(k), data)


def gemm_packed(a: np.ndarray, w: PackedWeights) -> np.ndarray:
    """C = A @ B.T: int8 A [M, K] times the packed weights B [N, K] -> int32 [M, N]."""
    if not isinstance(w, PackedWeights):
        raise ValueError(f"gemm_packed: w is a {type(w).__name__}, expected PackedWeights (pack_int8 / pack_int4)")
    a = check_matrix(a, "a", np.int8, "gemm_packed")
    if a.shape[1] != w.k:
        raise ValueError(f"gemm_packed: a has K={a.shape[1]} columns but the weights have K={w.k}")
    if w.kernel == "vnni":
        run = vnni.gemm_int8_panels if w.bits == 8 else vnni.gemm_int4_panels
        return run(a, w.data, w.n, w.k)
    if w.kernel == "avx2":
        return avx2.gemm_panels(a, w.data, w.n)
    return gemm_int8_tiled(a, w.data) if w.bits == 8 else gemm_int4_tiled(a, w.data, w.k)


def gemm_int8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int8 [N, K] -> int32 [M, N]) on the selected kernel, packing B on the call."""
    a, b = check_gemm_int8(a, b, "gemm_int8")
    return gemm_packed(a, pack_int8(b))


def gemm_int4(a: np.ndarray, b_packed: np.ndarray, k: int) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int4 packed [N, ceil(K/2)] -> int32 [M, N]) on the selected kernel."""
    a, b_packed = check_gemm_int4(a, b_packed, k, "gemm_int4")
    return gemm_packed(a, pack_int4(b_packed, k))


def gemm_int8_dequant(a, b, a_scale, b_scale, bias=None) -> np.ndarray:
    """Y = (A @ B.T) * a_scale[:, None] * b_scale[None, :] (+ bias): int8 GEMM then the float32 epilogue."""
    a, b = check_gemm_int8(a, b, "gemm_int8_dequant")
    check_scales((a.shape[0], b.shape[0]), a_scale, b_scale, bias, "gemm_int8_dequant")
    return dequant_epilogue(gemm_int8(a, b), a_scale, b_scale, bias)


def gemm_int4_dequant(a, b_packed, k, a_scale, b_scale, bias=None) -> np.ndarray:
    """Y = (A @ B.T) * a_scale[:, None] * b_scale[None, :] (+ bias): int4 GEMM then the float32 epilogue."""
    a, b_packed = check_gemm_int4(a, b_packed, k, "gemm_int4_dequant")
    check_scales((a.shape[0], b_packed.shape[0]), a_scale, b_scale, bias, "gemm_int4_dequant")
    return dequant_epilogue(gemm_int4(a, b_packed, k), a_scale, b_scale, bias)
