"""AVX2 fast path for the int GEMMs: a 4 x 16 vpmaddwd micro-kernel written as a Numba intrinsic.

Why it exists. vpmaddwd multiplies 16 int16 pairs and adds adjacent products into 8 int32 lanes: 16
multiply-adds per instruction, twice what the portable kernel's vpmulld does (refq.kernels.int8_gemm).
LLVM emits vpmaddwd from plain Numba loops only for a lone dot product, never for a register tile, so
here the tile is spelled out in LLVM IR. Integer sums are exact in any order (the one input that makes
vpmaddwd wrap, two (-32768)(-32768) products, cannot come from int8 or int4 codes), so the result equals
the portable kernel's and the int64 NumPy twin's bit for bit; the tests check that.

Data layout (weights widened to int16 once, by `pack_int8` / `pack_int4`, zero-padded to an even K;
refq.kernels.dispatch keeps the panels with the layer; activations are widened on every call):

    a32[m, p]           = (A[m, 2p], A[m, 2p+1]) as one int32 word         [M, K/2]
    panels[q, p, 2j+t]  = B[16q + j, 2p + t]                                [ceil(N/16), K/2, 32] int16

so the 64 bytes of panels[q, p] (two ymm loads) hold the pairs (B[n, 2p], B[n, 2p+1]) of 16 columns n.
For each k-pair p and each row of a 4-row tile, the micro-kernel broadcasts the word a32[m, p] to all
lanes and issues vpmaddwd against both halves: acc[m, n] += A[m,2p] B[n,2p] + A[m,2p+1] B[n,2p+1].
Eight ymm accumulators hold the 4 x 16 int32 tile for the whole K loop; then they are stored to C.
All arrays the intrinsic sees are C-contiguous; the wrappers below create them.

Cache blocking and threads as in the portable kernel: panels are taken in blocks of ~256 KiB and the
row tiles of each block are shared out over the Numba threads (prange).

Huge pages for C. A 4 x 16 tile store touches four rows of C, and when N >= 1024 int32 outputs each
row is a 4 KiB page of its own, so a block of panels sweeps as many pages as A has rows: more than
the TLB holds. NumPy asks for transparent huge pages (madvise) on arrays of 4 MiB and more, but the
kernel can only back the 2 MiB-aligned part of an allocation with them, and where mmap places C
depends on what the process allocated before. That made the same 1024^3 product run at 1.1x or 1.5x
float32 depending on the shapes run earlier in the process. `_empty_huge` therefore places a large
C at a 2 MiB boundary inside a slightly larger buffer (at most 2 MiB more).

Availability. x86-64 hosts whose CPU has AVX2 (`AVAILABLE`); elsewhere, when NUMBA_CPU_NAME asks for a
generic build, or with NUMBA_DISABLE_JIT=1, the GEMM wrappers use the portable kernel.

References: Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 2, "PMADDWD";
Goto & van de Geijn, "Anatomy of High-Performance Matrix Multiplication", ACM TOMS 34(3), 2008
(packed panels, register tile); Numba documentation, "High-level extension API: @intrinsic".
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from refq.kernels.cpu import host_has
from refq.kernels.ir_helpers import i64, vector_at
from refq.kernels.reference import check_gemm_int4, check_gemm_int8

TILE_ROWS, TILE_COLS = 4, 16  # micro-kernel tile of C: rows of A x columns (= one panel of B)
BLOCK_BYTES = 256 * 1024  # target size of one cache block of panels
HUGE_PAGE = 1 << 21  # x86-64 transparent huge page, 2 MiB


AVAILABLE = host_has("avx2")

V8I32, V16I16 = ir.VectorType(ir.IntType(32), 8), ir.VectorType(ir.IntType(16), 16)


def _broadcast_pair(builder, word):
    """IR: the int32 `word` (an int16 pair) copied into all 8 lanes, viewed as 16 int16 lanes."""
    undef = ir.Constant(V8I32, ir.Undefined)
    one_lane = builder.insert_element(undef, word, ir.Constant(ir.IntType(32), 0))
    return builder.bitcast(builder.shuffle_vector(one_lane, undef, ir.Constant(V8I32, [0] * 8)), V16I16)


def _make_tile_kernel(rows: int):
    """Intrinsic c[m:m+rows, 16q:16q+16] = sum_p madd(a32[m:m+rows, p], panels[q, p]) (C-contiguous arrays)."""

    @intrinsic
    def tile(typingctx, a32, m, panels, q, c):
        if any(getattr(x, "layout", None) != "C" for x in (a32, panels, c)):
            raise TypingError("the vpmaddwd tile needs C-contiguous a32, panels and c")
        sig = types.void(a32, m, panels, q, c)

        def codegen(context, builder, signature, args):
            a32_v, m_v, panels_v, q_v, c_v = args
            a_data = context.make_array(signature.args[0])(context, builder, a32_v).data  # int32 [M, K/2]
            p_arr = context.make_array(signature.args[2])(context, builder, panels_v)  # int16 [Q, K/2, 32]
            c_arr = context.make_array(signature.args[4])(context, builder, c_v)  # int32 [M, 16 Q]
            kp = cgutils.unpack_tuple(builder, p_arr.shape, 3)[1]  # K/2 pairs (= row length of a32)
            ldc = cgutils.unpack_tuple(builder, c_arr.shape, 2)[1]  # row length of C
            madd = cgutils.get_or_insert_function(  # vpmaddwd ymm: 16 int16 x int16 -> 8 int32 pair sums
                builder.module, ir.FunctionType(V8I32, [V16I16, V16I16]), "llvm.x86.avx2.pmadd.wd")
            a_rows = [builder.mul(builder.add(m_v, i64(r)), kp) for r in range(rows)]  # a32[m + r, 0]
            panel = builder.mul(builder.mul(q_v, kp), i64(2 * TILE_COLS))  # panels[q, 0, 0]
            # 2 * rows accumulators of 8 int32 (C[m + r, 16q + 8h : +8]); LLVM keeps them in ymm registers
            accs = [cgutils.alloca_once_value(builder, ir.Constant(V8I32, None)) for _ in range(2 * rows)]
            with cgutils.for_range(builder, kp) as loop:  # p = 0 .. K/2 - 1: one k-pair per step
                at = builder.add(panel, builder.mul(loop.index, i64(2 * TILE_COLS)))  # panels[q, p, 0]
                b_half = [builder.load(vector_at(builder, p_arr.data, at, V16I16), align=2),  # columns 0..7
                          builder.load(vector_at(builder, p_arr.data, builder.add(at, i64(TILE_COLS)), V16I16),
                                       align=2)]  # columns 8..15, as (B[n, 2p], B[n, 2p+1]) pairs
                for r in range(rows):
                    pair = _broadcast_pair(builder, builder.load(builder.gep(a_data, [
                        builder.add(a_rows[r], loop.index)])))  # (A[m+r, 2p], A[m+r, 2p+1]) in every lane
                    for h in range(2):  # acc += A[m+r,2p] B[n,2p] + A[m+r,2p+1] B[n,2p+1] for 8 columns n
                        acc = accs[2 * r + h]
                        builder.store(builder.add(builder.load(acc), builder.call(madd, [pair, b_half[h]])), acc)
            for r in range(rows):
                row = builder.mul(builder.add(m_v, i64(r)), ldc)
                for h in range(2):
                    col = builder.add(builder.mul(q_v, i64(TILE_COLS)), i64(8 * h))  # c[m + r, 16q + 8h]
                    builder.store(builder.load(accs[2 * r + h]),
                                  vector_at(builder, c_arr.data, builder.add(row, col), V8I32), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_4x16 = _make_tile_kernel(TILE_ROWS)
_tile_1x16 = _make_tile_kernel(1)


@njit(cache=True, parallel=True)
def _pack_panels_int8(b, out):
    """out[q, p, 2j + t] = b[16q + j, 2p + t] (int8 -> int16); out is zero-filled, so padding stays 0."""
    for q in prange(out.shape[0]):
        for j in range(min(TILE_COLS, b.shape[0] - TILE_COLS * q)):
            row = b[TILE_COLS * q + j]
            for k in range(b.shape[1]):
                out[q, k >> 1, 2 * j + (k & 1)] = row[k]


@njit(cache=True, parallel=True)
def _pack_panels_int4(b_packed, out):
    """out[q, p, 2j + t] = int4 code t (0 = low nibble) of byte b_packed[16q + j, p]; zero-filled padding."""
    for q in prange(out.shape[0]):
        for j in range(min(TILE_COLS, b_packed.shape[0] - TILE_COLS * q)):
            row = b_packed[TILE_COLS * q + j]
            for p in range(b_packed.shape[1]):
                out[q, p, 2 * j] = ((np.int32(row[p]) & 15) ^ 8) - 8  # refq.quant.int4 nibble decoding
                out[q, p, 2 * j + 1] = ((np.int32(row[p]) >> 4) ^ 8) - 8


@njit(cache=True, parallel=True)
def _matmul_panels(a32, panels, c, block):
    """c[:, :16 Q] = a @ panels, `block` panels at a time; 4-row tiles, then single rows."""
    full = a32.shape[0] // TILE_ROWS
    for q0 in range(0, panels.shape[0], block):
        q1 = min(q0 + block, panels.shape[0])
        for t in prange(a32.shape[0] - full * (TILE_ROWS - 1)):  # `full` 4-row tiles + the leftover rows
            if t < full:
                for q in range(q0, q1):
                    _tile_4x16(a32, TILE_ROWS * t, panels, q, c)
            else:
                for q in range(q0, q1):
                    _tile_1x16(a32, TILE_ROWS * full + t - full, panels, q, c)


def _widen_a(a: np.ndarray, kp: int) -> np.ndarray:
    """int8 A [M, K] -> int32 words [M, kp], each holding the int16 pair (A[m, 2p], A[m, 2p+1])."""
    a16 = np.zeros((a.shape[0], 2 * kp), np.int16)  # [M, 2 kp], zero pad column when K is odd
    a16[:, : a.shape[1]] = a
    return a16.view(np.int32)  # [M, 2 kp] int16 -> [M, kp] int32 (little-endian: low half = even k)


def _empty_huge(shape: tuple, dtype) -> np.ndarray:
    """np.empty(shape, dtype), starting at a 2 MiB boundary when it spans at least one huge page."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes < HUGE_PAGE:
        return np.empty(shape, dtype)
    buf = np.empty(nbytes + HUGE_PAGE, np.uint8)  # >= 4 MiB: NumPy advises huge pages for it
    start = -buf.ctypes.data % HUGE_PAGE
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def _run(a: np.ndarray, panels: np.ndarray, n: int) -> np.ndarray:
    """C [M, N] from A and the packed panels (computed into a 16-column-padded buffer)."""
    kp = panels.shape[1]
    c = _empty_huge((a.shape[0], TILE_COLS * panels.shape[0]), np.int32)  # [M, 16 Q]
    _matmul_panels(_widen_a(a, kp), panels, c, max(1, BLOCK_BYTES // max(1, 4 * TILE_COLS * kp)))
    return c if c.shape[1] == n else np.ascontiguousarray(c[:, :n])  # [M, 16 Q] -> [M, N]


def _require_avx2(fn: str) -> None:
    """Refuse to run (instead of failing inside LLVM) on hosts without AVX2."""
    if not AVAILABLE:
        raise RuntimeError(f"{fn}: this host has no AVX2 (or Numba builds for a generic CPU); "
                           "use refq.kernels.gemm_int8 / gemm_int4, which fall back to the portable kernel")


def pack_int8(b: np.ndarray) -> np.ndarray:
    """int8 weights [N, K] -> the int16 panels [ceil(N/16), ceil(K/2), 32] of the micro-kernel."""
    n, k = b.shape
    panels = np.zeros(((n + TILE_COLS - 1) // TILE_COLS, (k + 1) // 2, 2 * TILE_COLS), np.int16)  # [Q, K/2, 32]
    _pack_panels_int8(np.ascontiguousarray(b), panels)
    return panels


def pack_int4(b_packed: np.ndarray) -> np.ndarray:
    """int4 weights packed as uint8 [N, ceil(K/2)] -> the int16 panels [ceil(N/16), ceil(K/2), 32]."""
    n = b_packed.shape[0]
    panels = np.zeros(((n + TILE_COLS - 1) // TILE_COLS, b_packed.shape[1], 2 * TILE_COLS), np.int16)  # [Q, K/2, 32]
    _pack_panels_int4(np.ascontiguousarray(b_packed), panels)  # one byte = one k-pair: (low, high) = (2p, 2p+1)
    return panels


def gemm_panels(a: np.ndarray, panels: np.ndarray, n: int) -> np.ndarray:
    """C = A @ B.T from int8 A [M, K] (C-contiguous) and B's int16 panels (`pack_int8`/`pack_int4`) -> int32 [M, N]."""
    _require_avx2("gemm_panels")
    return _run(a, panels, n)


def gemm_int8_avx2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int8 [N, K] -> int32 [M, N]), packing B on the call (tests, one-off products)."""
    _require_avx2("gemm_int8_avx2")
    a, b = check_gemm_int8(a, b, "gemm_int8_avx2")
    return _run(a, pack_int8(b), b.shape[0])


def gemm_int4_avx2(a: np.ndarray, b_packed: np.ndarray, k: int) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int4 packed uint8 [N, ceil(K/2)] -> int32 [M, N]), packing B on the call."""
    _require_avx2("gemm_int4_avx2")
    a, b_packed = check_gemm_int4(a, b_packed, k, "gemm_int4_avx2")
    return _run(a, pack_int4(b_packed), b_packed.shape[0])
