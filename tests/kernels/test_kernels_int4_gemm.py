"""int8 x int4 GEMMs (portable, AVX2 and VNNI kernels): bit-exact agreement with the twins, epilogue, input checks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.kernels import avx2, int4_gemm, vnni
from refq.kernels.dispatch import gemm_int4, gemm_int4_dequant
from refq.kernels.int4_gemm import gemm_int4_plain, gemm_int4_tiled
from refq.kernels.reference import (INT32_MAX, K_MAX_INT4, gemm_int4_dequant_ref, gemm_int4_ref,
                                    gemm_int8_ref)
from refq.quant.int4 import pack_int4
from tests.kernels.strategies import gemm_problems, scales

KERNELS = ((gemm_int4, gemm_int4_plain, gemm_int4_tiled) + ((avx2.gemm_int4_avx2,) if avx2.AVAILABLE else ())
           + ((vnni.gemm_int4_vnni,) if vnni.AVAILABLE else ()))


@given(problem=gemm_problems(b_lo=-8, b_hi=7))
def test_kernels_equal_the_int64_reference(problem):
    a, b = problem
    k = a.shape[1]
    b_packed = pack_int4(b)
    exact = a.astype(np.int64) @ b.astype(np.int64).T
    np.testing.assert_array_equal(gemm_int4_ref(a, b_packed, k), exact)
    np.testing.assert_array_equal(gemm_int8_ref(a, b), exact)
    for kernel in KERNELS:
        c = kernel(a, b_packed, k)
        assert c.dtype == np.int32 and c.shape == (a.shape[0], b.shape[0])
        np.testing.assert_array_equal(c, exact, err_msg=f"{kernel.__name__} a{a.shape} b{b.shape}")


@pytest.mark.parametrize("nb", [2, 4, 6])
def test_every_panel_split_gives_the_same_result(rng, nb):
    a = rng.integers(-128, 128, size=(11, 37), dtype=np.int8)
    b = rng.integers(-8, 8, size=(13, 37), dtype=np.int8)
    c = np.empty((11, 13), np.int32)
    int4_gemm._gemm_int4_blocked(a, pack_int4(b), 37, c, nb)
    np.testing.assert_array_equal(c, gemm_int8_ref(a, b))


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_padding_nibble_of_an_odd_k_is_ignored(rng, kernel):
    a = rng.integers(-128, 128, size=(6, 5), dtype=np.int8)
    b = rng.integers(-8, 8, size=(17, 5), dtype=np.int8)
    b_packed = pack_int4(b)
    dirty = b_packed.copy()
    dirty[:, -1] |= np.uint8(0x90)  # a non-zero code in the unused high nibble of the last byte
    np.testing.assert_array_equal(kernel(a, dirty, 5), gemm_int8_ref(a, b))


@pytest.mark.parametrize("m, n, k", [(0, 3, 4), (3, 0, 5), (3, 4, 0)])
def test_empty_shapes(m, n, k):
    a, b_packed = np.zeros((m, k), np.int8), np.zeros((n, (k + 1) // 2), np.uint8)
    for kernel in KERNELS:
        np.testing.assert_array_equal(kernel(a, b_packed, k), np.zeros((m, n), np.int32))


def test_k_limit_constant_is_the_largest_safe_k():
    assert K_MAX_INT4 == 2097151
    assert K_MAX_INT4 * 8 * 128 <= INT32_MAX < (K_MAX_INT4 + 1) * 8 * 128


def test_k_past_the_limit_raises_without_allocating():
    k = K_MAX_INT4 + 1
    a, b_packed = np.zeros((0, k), np.int8), np.zeros((0, (k + 1) // 2), np.uint8)  # zero bytes
    for fn in KERNELS + (gemm_int4_ref,):
        with pytest.raises(ValueError, match=f"K={k}"):
            fn(a, b_packed, k)


@pytest.mark.parametrize("a, b_packed, k, match", [
    (np.zeros((2, 4), np.int8), np.zeros((3, 2), np.int8), 4, "b_packed has dtype int8"),
    (np.zeros((2, 4), np.uint8), np.zeros((3, 2), np.uint8), 4, "a has dtype uint8"),
    (np.zeros((2, 4), np.int8), np.zeros((3, 3), np.uint8), 4, "3 bytes per row, but k=4"),
    (np.zeros((2, 5), np.int8), np.zeros((3, 2), np.uint8), 4, "K=5 columns but k=4"),
    (np.zeros((2, 4), np.int8), np.zeros(6, np.uint8), 4, r"\(6,\)"),
    (np.zeros((2, 4), np.int8), np.zeros((3, 2), np.uint8), -4, "k=-4"),
    (np.zeros((2, 4), np.int8), np.zeros((3, 2), np.uint8), 4.0, "k=4.0"),
])
def test_bad_inputs_raise_value_error_naming_the_value(a, b_packed, k, match):
    for fn in KERNELS + (gemm_int4_ref,):
        with pytest.raises(ValueError, match=match):
            fn(a, b_packed, k)


@given(problem=gemm_problems(b_lo=-8, b_hi=7), data=st.data(), with_bias=st.booleans())
def test_dequant_is_the_float64_result_rounded_to_float32(problem, data, with_bias):
    a, b = problem
    k = a.shape[1]
    a_scale, b_scale = data.draw(scales(a.shape[0])), data.draw(scales(b.shape[0]))
    bias = data.draw(scales(b.shape[0])) if with_bias else None
    y = gemm_int4_dequant(a, pack_int4(b), k, a_scale, b_scale, bias)
    y64 = (a.astype(np.int64) @ b.astype(np.int64).T).astype(np.float64)
    y64 = y64 * a_scale.astype(np.float64)[:, None] * b_scale.astype(np.float64)[None, :]
    if with_bias:
        y64 = y64 + bias.astype(np.float64)[None, :]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, y64.astype(np.float32))
    np.testing.assert_array_equal(y, gemm_int4_dequant_ref(a, pack_int4(b), k, a_scale, b_scale, bias))
