"""The integer GEMM contract in plain NumPy: input checks, overflow limits, and the reference twins.

Every Numba kernel in refq.kernels has a twin here and is tested to agree with it bit for bit.

Layout (nn.Linear): activations A [M, K] int8 row-major, weights B [N, K] (out x in), C = A @ B.T.

    C[m, n] = sum_k A[m, k] B[n, k]                                       int32 accumulator
    Y[m, n] = C[m, n] * a_scale[m] * b_scale[n] (+ bias[n])                dequant epilogue, float32

Overflow limits. The accumulator is int32, so a sum of K products must stay within 2^31 - 1:

* int8 x int8: the largest |product| is (-128)(-128) = 16384, so K <= floor((2^31 - 1) / 16384) = 131071.
* int8 x int4: the largest |product| is (-128)(-8) = 1024, so K <= floor((2^31 - 1) / 1024) = 2097151.

The twins accumulate in int64 (exact for any K that fits in memory) and then check that the result fits
int32; the kernels accumulate in int32 and rely on the K limit instead.

The epilogue twin computes c * a_scale * b_scale + bias in float64, left to right, and rounds once to
float32; the Numba epilogue performs the same float64 operations, so the two agree exactly and both are
the float64 result rounded to float32.

References: docs/aser.md, A2 (per-channel weight scales s_i, per-token activation scales s_t, RTN
y = Q_A(x) @ Q_W(W).T + b); Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018, Sec. 2.2 (int32 accumulation of int8 products).
"""
from __future__ import annotations

import numpy as np

from refq.quant.int4 import unpack_int4

INT32_MAX = 2**31 - 1
K_MAX_INT8 = INT32_MAX // (128 * 128)  # 131071
K_MAX_INT4 = INT32_MAX // (8 * 128)  # 2097151


def check_k_limit(k: int, k_max: int, fn: str) -> None:
    """Raise ValueError naming K when a K-term int32 accumulation could overflow (k > k_max)."""
    if k > k_max:
        raise ValueError(f"{fn}: K={k} exceeds {k_max}, the largest K whose int32 accumulator cannot overflow")


def check_matrix(x, name: str, dtype, fn: str) -> np.ndarray:
    """Return `x` as a C-contiguous 2-D array of `dtype` (copying if strided), or raise ValueError naming it."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{fn}: {name} is a {type(x).__name__}, expected a 2-D {np.dtype(dtype)} numpy array")
    if x.dtype != dtype:
        raise ValueError(f"{fn}: {name} has dtype {x.dtype}, expected {np.dtype(dtype)}")
    if x.ndim != 2:
        raise ValueError(f"{fn}: {name} has shape {x.shape}, expected a 2-D array")
    return np.ascontiguousarray(x)


def check_gemm_int8(a, b, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate int8 A [M, K] and B [N, K]; return them C-contiguous."""
    a = check_matrix(a, "a", np.int8, fn)
    b = check_matrix(b, "b", np.int8, fn)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{fn}: a has K={a.shape[1]} columns but b has K={b.shape[1]} (b is [N, K])")
    check_k_limit(a.shape[1], K_MAX_INT8, fn)
    return a, b


def check_int4_weights(b_packed, k, fn: str) -> np.ndarray:
    """Validate packed uint8 B [N, ceil(K/2)] for a K-column product; return it C-contiguous."""
    b_packed = check_matrix(b_packed, "b_packed", np.uint8, fn)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"{fn}: k={k!r}, expected a non-negative int")
    if b_packed.shape[1] != (k + 1) // 2:
        raise ValueError(f"{fn}: b_packed has {b_packed.shape[1]} bytes per row, but k={k} needs {(k + 1) // 2}")
    check_k_limit(k, K_MAX_INT4, fn)
    return b_packed


def check_gemm_int4(a, b_packed, k, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate int8 A [M, K] and packed uint8 B [N, ceil(K/2)]; return them C-contiguous."""
    a = check_matrix(a, "a", np.int8, fn)
    b_packed = check_int4_weights(b_packed, k, fn)
    if a.shape[1] != k:
        raise ValueError(f"{fn}: a has K={a.shape[1]} columns but k={k}")
    return a, b_packed


def check_scales(c_shape: tuple, a_scale, b_scale, bias, fn: str):
    """Validate float32 a_scale [M], b_scale [N] and optional bias [N]; return them C-contiguous."""
    m, n = c_shape
    out = []
    for name, x, size in (("a_scale", a_scale, m), ("b_scale", b_scale, n), ("bias", bias, n)):
        if x is None and name == "bias":
            out.append(None)
            continue
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{fn}: {name} has dtype {kind}, expected a float32 numpy array")
        if x.shape != (size,):
            raise ValueError(f"{fn}: {name} has shape {x.shape}, expected ({size},)")
        out.append(np.ascontiguousarray(x))
    return tuple(out)


def gemm_int8_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C = A @ B.T for int8 A [M, K], B [N, K], accumulated in int64 and checked to fit int32."""
    a, b = check_gemm_int8(a, b, "gemm_int8_ref")
    c = a.astype(np.int64) @ b.astype(np.int64).T  # [M, K] @ [K, N] -> [M, N] int64, exact
    assert c.size == 0 or np.abs(c).max() <= INT32_MAX, "K limit should have ruled out int32 overflow"
    return c.astype(np.int32)


def gemm_int4_ref(a: np.ndarray, b_packed: np.ndarray, k: int) -> np.ndarray:
    """C = A @ unpack_int4(B).T for int8 A [M, K] and int4 B packed along K as uint8 [N, ceil(K/2)]."""
    a, b_packed = check_gemm_int4(a, b_packed, k, "gemm_int4_ref")
    b = unpack_int4(b_packed, k)  # [N, ceil(K/2)] uint8 -> [N, K] int8 in [-8, 7]
    c = a.astype(np.int64) @ b.astype(np.int64).T  # [M, K] @ [K, N] -> [M, N] int64, exact
    assert c.size == 0 or np.abs(c).max() <= INT32_MAX, "K limit should have ruled out int32 overflow"
    return c.astype(np.int32)


def dequant_epilogue_ref(c: np.ndarray, a_scale: np.ndarray, b_scale: np.ndarray, bias=None) -> np.ndarray:
    """Y = C * a_scale[:, None] * b_scale[None, :] (+ bias), computed in float64 and rounded once to float32."""
    c = check_matrix(c, "c", np.int32, "dequant_epilogue_ref")
    a_scale, b_scale, bias = check_scales(c.shape, a_scale, b_scale, bias, "dequant_epilogue_ref")
    y = c.astype(np.float64) * a_scale.astype(np.float64)[:, None]  # [M, N] * [M, 1] -> [M, N]
    y = y * b_scale.astype(np.float64)[None, :]  # [M, N] * [1, N] -> [M, N]
    if bias is not None:
        y = y + bias.astype(np.float64)[None, :]  # [M, N] + [1, N] -> [M, N]
    return y.astype(np.float32)


def gemm_int8_dequant_ref(a, b, a_scale, b_scale, bias=None) -> np.ndarray:
    """Twin of gemm_int8_dequant: the int8 GEMM followed by the dequant epilogue."""
    return dequant_epilogue_ref(gemm_int8_ref(a, b), a_scale, b_scale, bias)


def gemm_int4_dequant_ref(a, b_packed, k, a_scale, b_scale, bias=None) -> np.ndarray:
    """Twin of gemm_int4_dequant: the int4 GEMM followed by the dequant epilogue."""
    return dequant_epilogue_ref(gemm_int4_ref(a, b_packed, k), a_scale, b_scale, bias)
