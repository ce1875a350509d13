"""AVX-512 VNNI fast path for the int GEMMs: an 8 x 32 vpdpbusd micro-kernel written as a Numba intrinsic.

Why it exists. vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds each group of four
products to one of 16 int32 lanes: 64 multiply-adds per instruction, four times AVX2's vpmaddwd
(refq.kernels.avx2), and no int16 widening, so weights cross memory at one byte (int8) or half a byte
(int4) per code.

The offset trick. vpdpbusd wants one operand unsigned. Activations stay signed int8 codes (the
quantizer's output, read as they are); weights get an offset o (128 for int8, 8 for int4) and are
stored once, at packing time, as the unsigned bytes u = b + o. Then

    sum_k u[n, k] a[m, k] = sum_k b[n, k] a[m, k] + o * sum_k a[m, k]

so every accumulator of row m starts at -o * rowsum(A[m]) and ends at C[m, n]. vpdpbusd does not
saturate: the int32 lanes wrap, i.e. compute modulo 2^32, and the final value is exact whenever the
true C[m, n] fits int32, which the K limits of refq.kernels.reference guarantee. Padding entries of u
(k >= K or n >= N) are 0, so whatever bytes A holds past column K never count.

Packed layout (`pack_int8`, `pack_int4`; built once per weight matrix):

    int8  panels[q, p, 64h + 4j + i] = B[32q + 16h + j, 4p + i] + 128                  [ceil(N/32), K/4, 128] uint8
    int4  panels[q, g, 64h + 4j + i] = (B[n, 8g + i] + 8) | (B[n, 8g + 4 + i] + 8) << 4,  n = 32q + 16h + j
                                                                                         [ceil(N/32), K/8, 128] uint8

so one 64-byte load holds four consecutive k (int8), or two such groups in the low and high nibbles
(int4: split in the loop by a mask and a 4-bit shift), for 16 columns n. For each k-quad p and each
row of an 8-row tile, the micro-kernel broadcasts the 4 bytes A[m, 4p : 4p+4] to all 16 lanes and
issues vpdpbusd against both 16-column halves: 16 zmm accumulators hold the 8 x 32 int32 tile for the
whole K loop. Tiles of 4, 2 and 1 rows finish the last M % 8 rows. A must have K % 4 == 0 (int8) or
K % 8 == 0 (int4) columns to be read in place; otherwise the wrapper pads a copy.

Cache blocking and threads: panels are taken in blocks of ~BLOCK_BYTES, and the row tiles of each
block are shared out over the Numba threads (prange; `_matmul_parallel`). Products under
THREADS_MIN_OPS operations run on the calling thread (`_matmul`): there, waking threads costs more
than the work.

Availability. x86-64 hosts whose CPU has AVX-512 F, BW and VNNI (`AVAILABLE`), with Numba compiling
for the host CPU; refq.kernels.dispatch picks this kernel there.

References: Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 2, "VPDPBUSD";
Intel, "Lower Numerical Precision Deep Learning Inference and Training" (2018) (the u8 x s8 offset
compensation); Goto & van de Geijn, ACM TOMS 34(3), 2008 (packed panels, register tile).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from refq.kernels.avx2 import _empty_huge
from refq.kernels.cpu import host_has
from refq.kernels.ir_helpers import i64, vector_at
from refq.kernels.reference import check_gemm_int4, check_gemm_int8
from refq.kernels.threads import num_threads

TILE_ROWS, TILE_COLS = 8, 32  # micro-kernel tile of C: rows of A x columns of B (two zmm of 16 int32)
PANEL_BYTES = 2 * 64  # bytes of one panel per k-quad (int8) or k-octet (int4)
BLOCK_BYTES = 384 * 1024  # target size of one cache block of panels
OFFSET_INT8, OFFSET_INT4 = 128, 8  # u = b + offset makes the weight codes unsigned
THREADS_MIN_OPS = 1 << 24  # smaller products run on the calling thread (waking the others costs more)

AVAILABLE = host_has("avx512f", "avx512bw", "avx512vnni")

V16I32 = ir.VectorType(ir.IntType(32), 16)


def _splat(builder, value):
    """IR: the i32 `value` in all 16 lanes."""
    undef = ir.Constant(V16I32, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undef, ir.Constant(V16I32, [0] * 16))


def _make_tile_kernel(rows: int, int4: bool):
    """Intrinsic c[m:m+rows, 32q:32q+32] = corr[m:m+rows, None] + sum over K of u(panels[q]) a32[m:m+rows]."""

    @intrinsic
    def tile(typingctx, a32, m, panels, q, corr, c):
        if any(getattr(x, "layout", None) != "C" for x in (a32, panels, corr, c)):
            raise TypingError("the vpdpbusd tile needs C-contiguous a32, panels, corr and c")
        sig = types.void(a32, m, panels, q, corr, c)

        def codegen(context, builder, signature, args):
            a32_v, m_v, panels_v, q_v, corr_v, c_v = args
            a_arr = context.make_array(signature.args[0])(context, builder, a32_v)  # int32 [M, K/4]
            p_arr = context.make_array(signature.args[2])(context, builder, panels_v)  # uint8 [Q, P, 128]
            corr_data = context.make_array(signature.args[4])(context, builder, corr_v).data  # int32 [M]
            c_arr = context.make_array(signature.args[5])(context, builder, c_v)  # int32 [M, 32 Q]
            lda = cgutils.unpack_tuple(builder, a_arr.shape, 2)[1]  # K/4 words per row of A
            steps = cgutils.unpack_tuple(builder, p_arr.shape, 3)[1]  # k-quads (int8) or k-octets (int4)
            ldc = cgutils.unpack_tuple(builder, c_arr.shape, 2)[1]
            dot = cgutils.get_or_insert_function(  # vpdpbusd zmm: acc + sum of 4 u8 x s8 products per lane
                builder.module, ir.FunctionType(V16I32, [V16I32, V16I32, V16I32]), "llvm.x86.avx512.vpdpbusd.512")
            a_rows = [builder.mul(builder.add(m_v, i64(r)), lda) for r in range(rows)]  # a32[m + r, 0]
            panel = builder.mul(builder.mul(q_v, steps), i64(PANEL_BYTES))  # panels[q, 0, 0]
            accs = []
            for r in range(rows):  # both halves of row r start at corr[m + r] = -offset * rowsum(A[m + r])
                init = _splat(builder, builder.load(builder.gep(corr_data, [builder.add(m_v, i64(r))])))
                accs += [cgutils.alloca_once_value(builder, init) for _ in range(2)]
            nibble = ir.Constant(V16I32, 0x0F0F0F0F)
            with cgutils.for_range(builder, steps) as loop:
                at = builder.add(panel, builder.mul(loop.index, i64(PANEL_BYTES)))  # panels[q, p, 0]
                halves = [builder.load(vector_at(builder, p_arr.data, builder.add(at, i64(64 * h)), V16I32), align=1)
                          for h in range(2)]  # columns 0..15 and 16..31 of the panel
                if int4:  # low nibbles: k = 8g .. 8g+3; high nibbles: k = 8g+4 .. 8g+7
                    groups = [[builder.and_(v, nibble) for v in halves],
                              [builder.and_(builder.lshr(v, ir.Constant(V16I32, 4)), nibble) for v in halves]]
                else:
                    groups = [halves]
                for r in range(rows):
                    for s, u in enumerate(groups):  # word index p (int8) or 2g + s (int4) of row m + r
                        word = builder.add(a_rows[r], builder.add(builder.mul(loop.index, i64(len(groups))), i64(s)))
                        a_b = _splat(builder, builder.load(builder.gep(a_arr.data, [word])))  # A[m+r, 4 bytes]
                        for h in range(2):  # acc += sum_i u[n, 4w + i] A[m + r, 4w + i] for 16 columns n
                            acc = accs[2 * r + h]
                            builder.store(builder.call(dot, [builder.load(acc), u[h], a_b]), acc)
            for r in range(rows):
                row = builder.mul(builder.add(m_v, i64(r)), ldc)
                for h in range(2):
                    col = builder.add(builder.mul(q_v, i64(TILE_COLS)), i64(16 * h))  # c[m + r, 32q + 16h]
                    builder.store(builder.load(accs[2 * r + h]),
                                  vector_at(builder, c_arr.data, builder.add(row, col), V16I32), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tiles8 = {r: _make_tile_kernel(r, False) for r in (8, 4, 2, 1)}
_tiles4 = {r: _make_tile_kernel(r, True) for r in (8, 4, 2, 1)}
_t8_8, _t8_4, _t8_2, _t8_1 = (_tiles8[r] for r in (8, 4, 2, 1))
_t4_8, _t4_4, _t4_2, _t4_1 = (_tiles4[r] for r in (8, 4, 2, 1))


def row_tiles(m: int) -> tuple[np.ndarray, np.ndarray]:
    """(first row, row count) of the tiles covering M rows: tiles of 8, then one each of 4, 2, 1 as needed."""
    starts, sizes = list(range(0, m - m % TILE_ROWS, TILE_ROWS)), [TILE_ROWS] * (m // TILE_ROWS)
    at = m - m % TILE_ROWS
    for r in (4, 2, 1):
        if (m - at) >= r:
            starts.append(at)
            sizes.append(r)
            at += r
    return np.array(starts, np.int64), np.array(sizes, np.int64)


@njit(cache=True, nogil=True)
def _corrections(a, k, offset, starts, sizes, corr, t0, t1):
    """corr[m] = -offset * sum_{j < k} a[m, j] for the rows of tiles t0..t1, wrapped to int32 like the lanes."""
    for t in range(t0, t1):
        for m in range(starts[t], starts[t] + sizes[t]):
            s = np.int32(0)  # |row sum| <= 128 K < 2^24: exact in int32
            for j in range(k):
                s = np.int32(s + np.int32(a[m, j]))
            corr[m] = np.int32(np.int64(-offset) * np.int64(s))  # |value| <= 2^31: the int32 cast wraps it


@njit(cache=True)
def _tiles_int8(a32, panels, corr, c, m, r, q0, q1):
    """c[m:m+r, 32 q0 : 32 q1] with the r-row int8 micro-kernel (r in 8, 4, 2, 1)."""
    for q in range(q0, q1):
        if r == 8:
            _t8_8(a32, m, panels, q, corr, c)
        elif r == 4:
            _t8_4(a32, m, panels, q, corr, c)
        elif r == 2:
            _t8_2(a32, m, panels, q, corr, c)
        else:
            _t8_1(a32, m, panels, q, corr, c)


@njit(cache=True)
def _tiles_int4(a32, panels, corr, c, m, r, q0, q1):
    """c[m:m+r, 32 q0 : 32 q1] with the r-row int4 micro-kernel."""
    for q in range(q0, q1):
        if r == 8:
            _t4_8(a32, m, panels, q, corr, c)
        elif r == 4:
            _t4_4(a32, m, panels, q, corr, c)
        elif r == 2:
            _t4_2(a32, m, panels, q, corr, c)
        else:
            _t4_1(a32, m, panels, q, corr, c)


@njit(cache=True)
def _matmul(a, a32, k, offset, int4, panels, corr, c, starts, sizes, block):
    """c[:, :32 Q] = corr[:, None] + a @ u(panels).T on the calling thread, `block` panels at a time."""
    _corrections(a, k, offset, starts, sizes, corr, 0, starts.shape[0])
    for q0 in range(0, panels.shape[0], block):
        q1 = min(q0 + block, panels.shape[0])
        for t in range(starts.shape[0]):
            if int4:
                _tiles_int4(a32, panels, corr, c, starts[t], sizes[t], q0, q1)
            else:
                _tiles_int8(a32, panels, corr, c, starts[t], sizes[t], q0, q1)


@njit(cache=True, parallel=True)
def _matmul_parallel(a, a32, k, offset, int4, panels, corr, c, starts, sizes, block):
    """As _matmul, the row tiles of every block shared out over the Numba threads."""
    for t in prange(starts.shape[0]):
        _corrections(a, k, offset, starts, sizes, corr, t, t + 1)
    for q0 in range(0, panels.shape[0], block):
        q1 = min(q0 + block, panels.shape[0])
        for t in prange(starts.shape[0]):
            if int4:
                _tiles_int4(a32, panels, corr, c, starts[t], sizes[t], q0, q1)
            else:
                _tiles_int8(a32, panels, corr, c, starts[t], sizes[t], q0, q1)


@njit(cache=True, parallel=True)
def _pack_int8(b, out):
    """out[q, p, 64h + 4j + i] = b[32q + 16h + j, 4p + i] + 128 as uint8; out is zero-filled (padding 0)."""
    for q in prange(out.shape[0]):
        for c in range(min(TILE_COLS, b.shape[0] - TILE_COLS * q)):
            row, lane = b[TILE_COLS * q + c], 64 * (c // 16) + 4 * (c % 16)
            for k in range(b.shape[1]):
                out[q, k >> 2, lane + (k & 3)] = np.uint8(np.int32(row[k]) + OFFSET_INT8)


@njit(cache=True, parallel=True)
def _pack_int4(b_packed, k, out):
    """out[q, g, 64h + 4j + i] = (code(8g + i) + 8) | (code(8g + 4 + i) + 8) << 4 of column n = 32q + 16h + j."""
    for q in prange(out.shape[0]):
        for c in range(min(TILE_COLS, b_packed.shape[0] - TILE_COLS * q)):
            row, lane = b_packed[TILE_COLS * q + c], 64 * (c // 16) + 4 * (c % 16)
            for kk in range(k):
                byte = np.int32(row[kk >> 1])
                nib = (byte >> 4) if kk & 1 else (byte & 15)  # refq.quant.int4: low nibble = even k
                u = ((nib ^ 8) - 8) + OFFSET_INT4  # code + 8, in 0..15
                g, i = kk >> 3, kk & 7
                if i < 4:
                    out[q, g, lane + i] |= np.uint8(u)
                else:
                    out[q, g, lane + i - 4] |= np.uint8(u << 4)


def pack_int8(b: np.ndarray) -> np.ndarray:
    """int8 weights [N, K] -> the uint8 panels [ceil(N/32), ceil(K/4), 128] of the int8 micro-kernel."""
    n, k = b.shape
    out = np.zeros(((n + TILE_COLS - 1) // TILE_COLS, (k + 3) // 4, PANEL_BYTES), np.uint8)
    _pack_int8(np.ascontiguousarray(b), out)
    return out


def pack_int4(b_packed: np.ndarray, k: int) -> np.ndarray:
    """int4 weights packed as uint8 [N, ceil(K/2)] -> the uint8 panels [ceil(N/32), ceil(K/8), 128]."""
    n = b_packed.shape[0]
    out = np.zeros(((n + TILE_COLS - 1) // TILE_COLS, (k + 7) // 8, PANEL_BYTES), np.uint8)
    _pack_int4(np.ascontiguousarray(b_packed), int(k), out)
    return out


def _a_words(a: np.ndarray, words: int) -> np.ndarray:
    """int8 A [M, K] as int32 words [M, words] (4 codes each): a view when K = 4 words, else a padded copy."""
    if a.shape[1] != 4 * words:
        padded = np.zeros((a.shape[0], 4 * words), np.int8)  # [M, 4 words]; the pad never counts (u = 0 there)
        padded[:, : a.shape[1]] = a
        a = padded
    return a.view(np.int32)  # [M, 4 words] int8 -> [M, words] int32, little-endian


def _run(int4: bool, a, panels, n, k, words):
    """C [M, N] int32 from int8 A [M, K] and packed panels (int4 or int8)."""
    m = a.shape[0]
    corr = np.empty(m, np.int32)  # [M] -offset * rowsum(A)
    c = _empty_huge((m, TILE_COLS * panels.shape[0]), np.int32)  # [M, 32 Q]
    starts, sizes = row_tiles(m)
    block = max(1, BLOCK_BYTES // max(1, PANEL_BYTES * panels.shape[1]))
    small = 2 * m * c.shape[1] * max(k, 1) < THREADS_MIN_OPS
    matmul = _matmul if small or num_threads() == 1 else _matmul_parallel
    matmul(a, _a_words(a, words), k, OFFSET_INT4 if int4 else OFFSET_INT8, int4, panels, corr, c, starts, sizes,
           block)
    return c if c.shape[1] == n else np.ascontiguousarray(c[:, :n])  # [M, 32 Q] -> [M, N]


def require() -> None:
    """Refuse to run (instead of faulting on an illegal instruction) without AVX-512 VNNI."""
    if not AVAILABLE:
        raise RuntimeError("the vnni kernel needs an x86-64 CPU with AVX-512 F, BW and VNNI and Numba's JIT "
                           "compiling for the host; refq.kernels.dispatch picks another kernel elsewhere")


def gemm_int8_panels(a: np.ndarray, panels: np.ndarray, n: int, k: int) -> np.ndarray:
    """C = A @ B.T from int8 A [M, K] (C-contiguous) and B's panels (`pack_int8`) -> int32 [M, N]."""
    require()
    return _run(False, a, panels, n, k, panels.shape[1])


def gemm_int4_panels(a: np.ndarray, panels: np.ndarray, n: int, k: int) -> np.ndarray:
    """C = A @ B.T from int8 A [M, K] (C-contiguous) and int4 B's panels (`pack_int4`) -> int32 [M, N]."""
    require()
    return _run(True, a, panels, n, k, 2 * panels.shape[1])


def gemm_int8_vnni(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int8 [N, K] -> int32 [M, N]), packing B on the call (tests, one-off products)."""
    require()
    a, b = check_gemm_int8(a, b, "gemm_int8_vnni")
    return gemm_int8_panels(a, pack_int8(b), *b.shape)


def gemm_int4_vnni(a: np.ndarray, b_packed: np.ndarray, k: int) -> np.ndarray:
    """C = A @ B.T (int8 [M, K], int4 packed uint8 [N, ceil(K/2)] -> int32 [M, N]), packing B on the call."""
    require()
    a, b_packed = check_gemm_int4(a, b_packed, k, "gemm_int4_vnni")
    return gemm_int4_panels(a, pack_int4(b_packed, k), b_packed.shape[0], k)


def unpack_int8_ref(panels: np.ndarray, n: int, k: int) -> np.ndarray:
    """NumPy inverse of pack_int8: the unsigned codes u [N, K] (int64) the kernel multiplies."""
    q, p, _ = panels.shape
    u = panels.reshape(q, p, 2, 16, 4).transpose(0, 2, 3, 1, 4).reshape(32 * q, 4 * p)  # [32Q, 4P]
    return u[:n, :k].astype(np.int64)


def unpack_int4_ref(panels: np.ndarray, n: int, k: int) -> np.ndarray:
    """NumPy inverse of pack_int4: the unsigned codes u = code + 8 [N, K] (int64)."""
    q, g, _ = panels.shape
    x = panels.reshape(q, g, 2, 16, 4).transpose(0, 2, 3, 1, 4)  # [Q, 2, 16, G, 4]
    u = np.stack([x & 15, x >> 4], axis=4).reshape(32 * q, 8 * g)  # [32Q, 8G]: low group, then high group
    return u[:n, :k].astype(np.int64)


def gemm_offset_ref(a: np.ndarray, u: np.ndarray, offset: int) -> np.ndarray:
    """NumPy twin of the kernel's arithmetic: (A @ u.T - offset * rowsum(A)) modulo 2^32, as int32."""
    a64 = a.astype(np.int64)
    c = a64 @ u.T - offset * a64.sum(axis=1, keepdims=True)  # [M, K] @ [K, N] - [M, 1] -> [M, N]
    return ((c + 2**31) % 2**32 - 2**31).astype(np.int32)
