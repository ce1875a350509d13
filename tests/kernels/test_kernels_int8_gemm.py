"""int8 GEMMs (portable, AVX2 and VNNI kernels): bit-exact agreement with the int64 twin, the epilogue, input checks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba.core.errors import TypingError

from refq.kernels import avx2, int8_gemm, vnni
from refq.kernels.dispatch import gemm_int8, gemm_int8_dequant
from refq.kernels.int8_gemm import dequant_epilogue, gemm_int8_plain, gemm_int8_tiled
from refq.kernels.reference import (INT32_MAX, K_MAX_INT8, check_k_limit, dequant_epilogue_ref,
                                    gemm_int8_dequant_ref, gemm_int8_ref)
from tests.kernels.strategies import gemm_problems, scales

KERNELS = ((gemm_int8, gemm_int8_plain, gemm_int8_tiled) + ((avx2.gemm_int8_avx2,) if avx2.AVAILABLE else ())
           + ((vnni.gemm_int8_vnni,) if vnni.AVAILABLE else ()))


@given(problem=gemm_problems())
def test_kernels_equal_the_int64_reference(problem):
    a, b = problem
    ref = gemm_int8_ref(a, b)
    exact = a.astype(np.int64) @ b.astype(np.int64).T
    np.testing.assert_array_equal(ref, exact)
    for kernel in KERNELS:
        c = kernel(a, b)
        assert c.dtype == np.int32 and c.shape == (a.shape[0], b.shape[0])
        np.testing.assert_array_equal(c, ref, err_msg=f"{kernel.__name__} a{a.shape} b{b.shape}")


@pytest.mark.parametrize("nb", [2, 4, 6])
def test_every_panel_split_gives_the_same_result(rng, nb):
    a = rng.integers(-128, 128, size=(11, 37), dtype=np.int8)
    b = rng.integers(-128, 128, size=(13, 37), dtype=np.int8)
    c = np.empty((11, 13), np.int32)
    int8_gemm._gemm_int8_blocked(a, b, c, nb)
    np.testing.assert_array_equal(c, gemm_int8_ref(a, b))


def test_avx2_kernels_refuse_to_run_without_avx2(monkeypatch):
    monkeypatch.setattr(avx2, "AVAILABLE", False)
    with pytest.raises(RuntimeError, match="AVX2"):
        avx2.gemm_int8_avx2(np.zeros((1, 1), np.int8), np.zeros((1, 1), np.int8))
    with pytest.raises(RuntimeError, match="AVX2"):
        avx2.gemm_int4_avx2(np.zeros((1, 2), np.int8), np.zeros((1, 1), np.uint8), 2)


def test_large_outputs_start_on_a_huge_page_and_stay_exact(rng):
    small = avx2._empty_huge((3, 5), np.int32)
    assert small.shape == (3, 5) and small.dtype == np.int32
    big = avx2._empty_huge((512, 1040), np.int32)  # 2.1 MB
    assert big.shape == (512, 1040) and big.dtype == np.int32 and big.flags.c_contiguous and big.flags.writeable
    assert big.ctypes.data % avx2.HUGE_PAGE == 0
    if avx2.AVAILABLE:  # a product whose C is large enough for the huge-page path, padded (N = 1030) and not
        for n in (1024, 1030):
            a = rng.integers(-128, 128, size=(520, 9), dtype=np.int8)
            b = rng.integers(-128, 128, size=(n, 9), dtype=np.int8)
            c = avx2.gemm_int8_avx2(a, b)
            assert c.shape == (520, n) and c.flags.c_contiguous
            np.testing.assert_array_equal(c, gemm_int8_ref(a, b))


@pytest.mark.skipif(not avx2.AVAILABLE, reason="no AVX2 on this host")
def test_avx2_tile_rejects_strided_arrays():
    strided = np.zeros((4, 8), np.int32)[:, ::2]
    with pytest.raises(TypingError, match="C-contiguous"):
        avx2._matmul_panels(strided, np.zeros((1, 4, 32), np.int16), np.zeros((4, 16), np.int32), 1)


def test_strided_and_fortran_inputs_are_copied(rng):
    a = rng.integers(-128, 128, size=(9, 40), dtype=np.int8)
    b = rng.integers(-128, 128, size=(7, 20), dtype=np.int8)
    a_strided, b_fortran = a[:, ::2], np.asfortranarray(b)
    a_before = a.copy()
    np.testing.assert_array_equal(gemm_int8(a_strided, b_fortran), gemm_int8_ref(a_strided.copy(), b))
    np.testing.assert_array_equal(a, a_before)


@pytest.mark.parametrize("m, n, k", [(0, 3, 4), (3, 0, 4), (3, 4, 0), (0, 0, 0)])
def test_empty_shapes(m, n, k):
    a, b = np.zeros((m, k), np.int8), np.zeros((n, k), np.int8)
    for kernel in KERNELS:
        np.testing.assert_array_equal(kernel(a, b), np.zeros((m, n), np.int32))


def test_k_limit_constant_is_the_largest_safe_k():
    assert K_MAX_INT8 == 131071
    assert K_MAX_INT8 * 128 * 128 <= INT32_MAX < (K_MAX_INT8 + 1) * 128 * 128


@pytest.mark.parametrize("kernel", KERNELS)
def test_worst_case_at_the_k_limit_is_exact(kernel):
    a = np.full((1, K_MAX_INT8), -128, np.int8)
    assert int(kernel(a, a)[0, 0]) == K_MAX_INT8 * 16384


def test_k_past_the_limit_raises_without_allocating():
    k = K_MAX_INT8 + 1
    a, b = np.zeros((0, k), np.int8), np.zeros((0, k), np.int8)  # zero bytes
    for fn in KERNELS + (gemm_int8_ref,):
        with pytest.raises(ValueError, match=f"K={k}"):
            fn(a, b)
    with pytest.raises(ValueError, match=f"K={k}"):
        check_k_limit(k, K_MAX_INT8, "test")
    check_k_limit(K_MAX_INT8, K_MAX_INT8, "test")


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((2, 3), np.int16), np.zeros((2, 3), np.int8), "int16"),
    (np.zeros((2, 3), np.int8), np.zeros((2, 3), np.float32), "float32"),
    (np.zeros((2, 3), np.int8), np.zeros((2, 3), np.uint8), "uint8"),
    (np.zeros(3, np.int8), np.zeros((2, 3), np.int8), r"\(3,\)"),
    (np.zeros((2, 3), np.int8), np.zeros((1, 2, 3), np.int8), r"\(1, 2, 3\)"),
    (np.zeros((2, 3), np.int8), np.zeros((2, 5), np.int8), "K=5"),
    ([[1, 2]], np.zeros((2, 2), np.int8), "list"),
])
def test_bad_inputs_raise_value_error_naming_the_value(a, b, match):
    for fn in KERNELS + (gemm_int8_ref,):
        with pytest.raises(ValueError, match=match):
            fn(a, b)


@given(problem=gemm_problems(), data=st.data(), with_bias=st.booleans())
def test_dequant_is_the_float64_result_rounded_to_float32(problem, data, with_bias):
    a, b = problem
    a_scale, b_scale = data.draw(scales(a.shape[0])), data.draw(scales(b.shape[0]))
    bias = data.draw(scales(b.shape[0])) - np.float32(0.5) if with_bias else None
    y = gemm_int8_dequant(a, b, a_scale, b_scale, bias)
    exact = (a.astype(np.int64) @ b.astype(np.int64).T).astype(np.float64)
    y64 = exact * a_scale.astype(np.float64)[:, None] * b_scale.astype(np.float64)[None, :]
    if with_bias:
        y64 = y64 + bias.astype(np.float64)[None, :]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, y64.astype(np.float32))
    np.testing.assert_array_equal(y, gemm_int8_dequant_ref(a, b, a_scale, b_scale, bias))
    np.testing.assert_allclose(y, y64, rtol=2.0**-23, atol=0)


def test_epilogue_matches_its_twin_and_keeps_inputs(rng):
    c = rng.integers(-2**31, 2**31 - 1, size=(5, 6), dtype=np.int32)
    a_scale, b_scale = rng.random(5).astype(np.float32), rng.random(6).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    before = (c.copy(), a_scale.copy(), b_scale.copy(), bias.copy())
    np.testing.assert_array_equal(dequant_epilogue(c, a_scale, b_scale, bias),
                                  dequant_epilogue_ref(c, a_scale, b_scale, bias))
    for x, x0 in zip((c, a_scale, b_scale, bias), before):
        np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("name, value, match", [
    ("a_scale", np.ones(3, np.float64), "a_scale has dtype float64"),
    ("b_scale", np.ones(5, np.float32), r"b_scale has shape \(5,\)"),
    ("bias", np.ones((1, 4), np.float32), r"bias has shape \(1, 4\)"),
    ("a_scale", None, "a_scale has dtype NoneType"),
])
def test_bad_scales_raise_value_error_naming_the_value(name, value, match):
    a, b = np.ones((3, 2), np.int8), np.ones((4, 2), np.int8)
    kwargs = {"a_scale": np.ones(3, np.float32), "b_scale": np.ones(4, np.float32), "bias": None}
    kwargs[name] = value
    with pytest.raises(ValueError, match=match):
        gemm_int8_dequant(a, b, **kwargs)
