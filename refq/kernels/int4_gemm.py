"""int8 x int4 -> int32 GEMM in Numba: activations A [M, K] int8, weights B [N, K] int4 packed along K.

    C[m, n] = sum_k A[m, k] B[n, k]          B stored as uint8 [N, ceil(K/2)] (refq.quant.int4 layout:
                                             low nibble = even k, two's-complement codes -8..7)
    Y[m, n] = C[m, n] a_scale[m] b_scale[n] (+ bias[n])

Exactness and the K limit. The largest |product| is (-128)(-8) = 1024, so the int32 accumulator cannot
overflow while K <= 2097151 = floor((2^31 - 1) / 1024); longer K raises ValueError. Below it all kernels
equal the int64 NumPy twin `gemm_int4_ref` bit for bit.

Inputs. `a` is 2-D int8 with K columns, `b_packed` 2-D uint8 with ceil(K/2) columns; K is passed
explicitly because an odd K is padded with one zero code. Non-contiguous inputs are copied to C order.

Three kernels, all tested to agree bit for bit:

* `gemm_int4_plain`: the triple loop, decoding each nibble where it is used.
* `gemm_int4_tiled` (portable): weights are decoded one cache panel at a time (NB rows -> an int8
  scratch panel of NB x K bytes), and the panel is multiplied by the int8 kernel's threaded 4 x 2
  register tiles (`refq.kernels.int8_gemm._panel`). Weights cross memory at 4 bits each, decoding costs
  O(N K) next to the O(M N K) multiply-adds, and the inner loop is exactly the int8 one.
* `refq.kernels.avx2.gemm_int4_avx2`: each packed byte is one k-pair, decoded straight into the int16
  panels of the vpmaddwd micro-kernel (all of B, once per call, so the multiply reads 16-bit weights).

* `refq.kernels.vnni.gemm_int4_vnni`: the nibbles (+8, unsigned) stay packed in the panels and are split
  by a mask and a shift inside the vpdpbusd loop.

`refq.kernels.dispatch.gemm_int4` runs the fastest kernel this CPU has (or the one REFQ_GEMM_KERNEL names).

References: Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", ICLR 2023 (packed 3/4-bit weights decoded inside the matmul kernel);
Goto & van de Geijn, ACM TOMS 34(3), 2008 (cache panels); docs/aser.md, A2 (W4 per-channel codes).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from refq.kernels.int8_gemm import _multiply_panel, panel_rows
from refq.kernels.reference import check_gemm_int4
from refq.kernels.threads import run_chunks


@njit(cache=True)
def _decode(byte, odd):
    """Signed int4 code of the low (odd=False) or high (odd=True) nibble of a uint8 byte."""
    v = (np.int32(byte) >> 4) if odd else (np.int32(byte) & 15)
    return (v ^ 8) - 8  # two's-complement nibble: 0..7 -> 0..7, 8..15 -> -8..-1


@njit(cache=True)
def _gemm_int4_plain(a, b_packed, c):
    """c[m, n] = sum_k a[m, k] code(b_packed[n, k // 2], k odd), one dot product per output."""
    for m in range(a.shape[0]):
        for n in range(b_packed.shape[0]):
            s = np.int32(0)
            for k in range(a.shape[1]):
                s = np.int32(s + np.int32(a[m, k]) * _decode(b_packed[n, k >> 1], (k & 1) == 1))
            c[m, n] = s


@njit(cache=True, nogil=True)
def _unpack_panel(b_packed, n0, k, out, r0, r1):
    """out[r, :k] = int8 codes of row n0 + r of b_packed (both nibbles of each byte), r in [r0, r1)."""
    for r in range(r0, r1):
        row = b_packed[n0 + r]
        for j in range(k // 2):
            out[r, 2 * j] = _decode(row[j], False)
            out[r, 2 * j + 1] = _decode(row[j], True)
        if k % 2:
            out[r, k - 1] = _decode(row[k // 2], False)


def _gemm_int4_blocked(a, b_packed, k, c, nb) -> None:
    """c = a @ decode(b_packed).T, decoding and multiplying one cache panel of nb weight rows at a time."""
    scratch = np.empty((min(nb, b_packed.shape[0]), k), np.int8)  # [NB, K] decoded panel
    for n0 in range(0, b_packed.shape[0], nb):
        n1 = min(n0 + nb, b_packed.shape[0])
        run_chunks(_unpack_panel, n1 - n0, b_packed, n0, k, scratch)
        _multiply_panel(a, scratch, 0, n1 - n0, c, n0)


def gemm_int4_plain(a: np.ndarray, b_packed: np.ndarray, k: int) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int4 packed uint8 [N, ceil(K/2)] -> int32 [M, N]) by the plain triple loop."""
    a, b_packed = check_gemm_int4(a, b_packed, k, "gemm_int4_plain")
    c = np.empty((a.shape[0], b_packed.shape[0]), np.int32)  # [M, N]
    _gemm_int4_plain(a, b_packed, c)
    return c


def gemm_int4_tiled(a: np.ndarray, b_packed: np.ndarray, k: int) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int4 packed uint8 [N, ceil(K/2)] -> int32 [M, N]) by the portable panel kernel."""
    a, b_packed = check_gemm_int4(a, b_packed, k, "gemm_int4_tiled")
    c = np.empty((a.shape[0], b_packed.shape[0]), np.int32)  # [M, N]
    _gemm_int4_blocked(a, b_packed, int(k), c, panel_rows(k))
    return c
