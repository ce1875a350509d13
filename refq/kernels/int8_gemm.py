"""int8 x int8 -> int32 GEMM in Numba, C = A @ B.T with the nn.Linear layout, plus the dequant epilogue.

    C[m, n] = sum_k A[m, k] B[n, k]          A [M, K] int8 activations, B [N, K] int8 weights (out x in)
    Y[m, n] = C[m, n] a_scale[m] b_scale[n] (+ bias[n])      per-token x per-output-channel scales

Exactness and the K limit. The int32 accumulator cannot overflow while K <= 131071 =
floor((2^31 - 1) / 16384), 16384 = (-128)(-128) being the largest |product| (refq.kernels.reference
derives both limits). Longer K raises ValueError; below it every kernel here equals the int64 NumPy
twin `gemm_int8_ref` bit for bit.

Inputs. `a` and `b` must be 2-D int8 arrays with the same K; non-contiguous inputs are copied to C order
first (the kernels index rows as contiguous vectors). Scales and bias are float32 vectors.

Three kernels, all tested to agree bit for bit:

* `gemm_int8_plain`: the definition as a triple loop, one dot product per output.
* `gemm_int8_tiled`: the same sums, organised for speed in plain Numba (Goto & van de Geijn's blocking,
  shrunk to what Numba can express); portable to any CPU:
  1. cache blocking: the N axis is cut into panels of NB weight rows (NB*K bytes ~ 256 KiB, half an L2),
     and every activation row is streamed past one panel while it stays in cache;
  2. a 4 x 2 register tile: each pass over k loads 4 activation rows and 2 weight rows and updates 8
     int32 accumulators, so every loaded element feeds 2 or 4 multiply-adds instead of 1;
  3. threads: the row tiles of a panel are shared out over the threads in contiguous chunks
     (`refq.kernels.threads.run_chunks`; the kernel runs with `nogil=True`).
  Numba types int32 * int32 as int64; wrapping each update in np.int32(...) keeps the accumulators
  int32, which lets LLVM vectorise the k loop 8 lanes wide (AVX2: vpmovsxbd loads, vpmulld, vpaddd on
  ymm registers; see `_tile_4x2.inspect_asm()`). LLVM turns the single dot product of
  `gemm_int8_plain` into vpmaddwd (multiply int16 pairs, add adjacent products) instead, but only on
  128-bit registers and only when each widened operand feeds one multiply, which a register tile,
  by design, breaks; the tile's reuse of loaded rows wins.
* `refq.kernels.avx2.gemm_int8_avx2`: a 4 x 16 tile of 256-bit vpmaddwd (16 multiply-adds per
  instruction) written as a Numba intrinsic, about twice the tiled kernel's speed;

* `refq.kernels.vnni`: an 8 x 32 tile of 512-bit vpdpbusd (64 multiply-adds per instruction).

`refq.kernels.dispatch.gemm_int8` runs the fastest kernel this CPU has (or the one REFQ_GEMM_KERNEL names).

References: Goto & van de Geijn, "Anatomy of High-Performance Matrix Multiplication", ACM TOMS 34(3),
2008 (panels sized to the cache, register-blocked micro-kernel); Jacob et al., "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, Sec. 2.2
(int8 products accumulated in int32, then rescaled); docs/aser.md, A2 (per-token x per-channel scales).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from refq.kernels.reference import check_gemm_int8, check_matrix, check_scales
from refq.kernels.threads import run_chunks

MR, NR = 4, 2  # register tile: rows of A x rows of B per micro-kernel call
PANEL_BYTES = 256 * 1024  # target size of one cache-resident panel of B (NB rows x K int8)
THREADS_MIN_OUTPUTS = 1 << 16  # smaller epilogues run on one thread (waking the others costs more)


def panel_rows(k: int) -> int:
    """Rows NB of B per cache panel: about PANEL_BYTES / K, a multiple of NR, at least NR."""
    return max(NR, PANEL_BYTES // max(k, 1) // NR * NR)


@njit(cache=True)
def _dot(x, y):
    """sum_k x[k] y[k] of two int8 vectors, in an int32 accumulator."""
    s = np.int32(0)
    for k in range(x.shape[0]):
        s = np.int32(s + np.int32(x[k]) * np.int32(y[k]))
    return s


@njit(cache=True)
def _gemm_int8_plain(a, b, c):
    """c[m, n] = sum_k a[m, k] b[n, k], one dot product per output (the definition)."""
    for m in range(a.shape[0]):
        for n in range(b.shape[0]):
            c[m, n] = _dot(a[m], b[n])


@njit(cache=True)
def _tile_4x2(a, m, b, n, c, col):
    """c[m:m+4, col:col+2] = a[m:m+4] @ b[n:n+2].T with 8 int32 accumulators (the micro-kernel)."""
    a0, a1, a2, a3 = a[m], a[m + 1], a[m + 2], a[m + 3]  # 4 x [K]
    b0, b1 = b[n], b[n + 1]  # 2 x [K]
    s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = np.int32(0)
    for k in range(a.shape[1]):
        x0, x1, x2, x3 = np.int32(a0[k]), np.int32(a1[k]), np.int32(a2[k]), np.int32(a3[k])
        y0, y1 = np.int32(b0[k]), np.int32(b1[k])
        s00 = np.int32(s00 + x0 * y0)
        s01 = np.int32(s01 + x0 * y1)
        s10 = np.int32(s10 + x1 * y0)
        s11 = np.int32(s11 + x1 * y1)
        s20 = np.int32(s20 + x2 * y0)
        s21 = np.int32(s21 + x2 * y1)
        s30 = np.int32(s30 + x3 * y0)
        s31 = np.int32(s31 + x3 * y1)
    c[m, col], c[m, col + 1] = s00, s01
    c[m + 1, col], c[m + 1, col + 1] = s10, s11
    c[m + 2, col], c[m + 2, col + 1] = s20, s21
    c[m + 3, col], c[m + 3, col + 1] = s30, s31


@njit(cache=True, nogil=True)
def _panel(a, b, n0, n1, c, col0, t0, t1):
    """c[4 t0 : 4 t1, col0 : col0 + n1 - n0] = a @ b[n0:n1].T: 4 x 2 tiles, dot products on the ragged edges."""
    n_pairs_end = n0 + (n1 - n0) // NR * NR
    for t in range(t0, t1):
        m = t * MR
        if m + MR <= a.shape[0]:
            for n in range(n0, n_pairs_end, NR):
                _tile_4x2(a, m, b, n, c, col0 + n - n0)
            for n in range(n_pairs_end, n1):  # odd last row of the panel
                for i in range(m, m + MR):
                    c[i, col0 + n - n0] = _dot(a[i], b[n])
        else:
            for i in range(m, a.shape[0]):  # last M % 4 rows
                for n in range(n0, n1):
                    c[i, col0 + n - n0] = _dot(a[i], b[n])


def _multiply_panel(a, b, n0, n1, c, col0) -> None:
    """c[:, col0 : col0 + n1 - n0] = a @ b[n0:n1].T, the 4-row tiles shared out over the threads."""
    run_chunks(_panel, (a.shape[0] + MR - 1) // MR, a, b, n0, n1, c, col0)


def _gemm_int8_blocked(a, b, c, nb) -> None:
    """c = a @ b.T, one cache panel of nb rows of b at a time."""
    for n0 in range(0, b.shape[0], nb):
        _multiply_panel(a, b, n0, min(n0 + nb, b.shape[0]), c, n0)


@njit(cache=True, nogil=True)
def _dequant(c, a_scale, b_scale, bias, has_bias, out, m0, m1):
    """out[m0:m1] = float32(c * a_scale[:, None] * b_scale[None, :] (+ bias)) on rows m0..m1, in float64."""
    for m in range(m0, m1):
        sa = np.float64(a_scale[m])
        for n in range(c.shape[1]):
            y = np.float64(c[m, n]) * sa * np.float64(b_scale[n])
            if has_bias:
                y = y + np.float64(bias[n])
            out[m, n] = np.float32(y)


def gemm_int8_plain(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int8 [N, K] -> int32 [M, N]) by the plain triple loop."""
    a, b = check_gemm_int8(a, b, "gemm_int8_plain")
    c = np.empty((a.shape[0], b.shape[0]), np.int32)  # [M, N]
    _gemm_int8_plain(a, b, c)
    return c


def gemm_int8_tiled(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int8 [N, K] -> int32 [M, N]) by the portable blocked, threaded kernel."""
    a, b = check_gemm_int8(a, b, "gemm_int8_tiled")
    c = np.empty((a.shape[0], b.shape[0]), np.int32)  # [M, N]
    _gemm_int8_blocked(a, b, c, panel_rows(a.shape[1]))
    return c


def dequant_epilogue(c: np.ndarray, a_scale: np.ndarray, b_scale: np.ndarray, bias=None) -> np.ndarray:
    """Y = C * a_scale[:, None] * b_scale[None, :] (+ bias): int32 [M, N] -> float32 [M, N]."""
    c = check_matrix(c, "c", np.int32, "dequant_epilogue")
    a_scale, b_scale, bias = check_scales(c.shape, a_scale, b_scale, bias, "dequant_epilogue")
    out = np.empty(c.shape, np.float32)  # [M, N]
    has_bias = bias is not None
    run_chunks(_dequant, c.shape[0], c, a_scale, b_scale, bias if has_bias else b_scale, has_bias, out,
               threads=None if c.size >= THREADS_MIN_OUTPUTS else 1)
    return out
