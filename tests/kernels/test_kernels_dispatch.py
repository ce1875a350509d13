"""Kernel dispatch (refq.kernels.dispatch): every kernel this CPU runs agrees bit for bit, REFQ_GEMM_KERNEL
forces one, a kernel the CPU lacks is a clear ValueError, and packed weights are reused as they are."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from refq.kernels import avx2, dispatch, vnni
from refq.kernels.dispatch import gemm_packed, pack_int4, pack_int8, select
from refq.kernels.reference import gemm_int4_ref, gemm_int8_ref
from refq.quant.int4 import pack_int4 as pack_nibbles
from tests.kernels.strategies import gemm_problems

RUNNABLE = [k for k in dispatch.KERNELS if dispatch.available(k)]
ALL = [pytest.param(k, marks=pytest.mark.skipif(not dispatch.available(k), reason=f"this CPU cannot run {k}"))
       for k in dispatch.KERNELS]


@pytest.mark.parametrize("kernel", ALL)
@settings(deadline=None, max_examples=40)
@given(problem=gemm_problems())
def test_packed_int8_equals_the_int64_reference(kernel, problem):
    a, b = problem
    w = pack_int8(b, kernel)
    assert w.kernel == kernel and w.shape == b.shape
    np.testing.assert_array_equal(gemm_packed(a, w), gemm_int8_ref(a, b))


@pytest.mark.parametrize("kernel", ALL)
@settings(deadline=None, max_examples=40)
@given(problem=gemm_problems(b_lo=-8, b_hi=7))
def test_packed_int4_equals_the_int64_reference(kernel, problem):
    a, b = problem
    packed = pack_nibbles(b)
    w = pack_int4(packed, a.shape[1], kernel)
    np.testing.assert_array_equal(gemm_packed(a, w), gemm_int4_ref(a, packed, a.shape[1]))


@pytest.mark.parametrize("kernel", ALL)
def test_one_packing_serves_many_activations_and_inputs_are_kept(kernel, rng):
    b = rng.integers(-128, 128, size=(40, 24), dtype=np.int8)
    b_copy = b.copy()
    w = pack_int8(b, kernel)
    data = w.data.copy()
    for m in (1, 7, 9, 33):
        a = rng.integers(-128, 128, size=(m, 24), dtype=np.int8)
        a_copy = a.copy()
        np.testing.assert_array_equal(gemm_packed(a, w), gemm_int8_ref(a, b))
        np.testing.assert_array_equal(a, a_copy)
    np.testing.assert_array_equal(b, b_copy)
    np.testing.assert_array_equal(w.data, data)


def test_auto_picks_the_fastest_kernel_this_cpu_runs(monkeypatch):
    monkeypatch.delenv(dispatch.ENV, raising=False)
    expected = "vnni" if vnni.AVAILABLE else "avx2" if avx2.AVAILABLE else "portable"
    assert select() == expected == select("auto")
    for vnni_on, avx2_on, want in ((True, True, "vnni"), (False, True, "avx2"), (False, False, "portable")):
        monkeypatch.setattr(vnni, "AVAILABLE", vnni_on)
        monkeypatch.setattr(avx2, "AVAILABLE", avx2_on)
        assert select() == want


@pytest.mark.parametrize("kernel", RUNNABLE)
def test_the_environment_variable_forces_a_kernel(monkeypatch, rng, kernel):
    monkeypatch.setenv(dispatch.ENV, kernel.upper())
    assert select() == kernel
    a = rng.integers(-128, 128, size=(5, 12), dtype=np.int8)
    assert pack_int8(a).kernel == kernel
    np.testing.assert_array_equal(dispatch.gemm_int8(a, a), gemm_int8_ref(a, a))


def test_a_kernel_this_cpu_lacks_is_a_value_error_naming_the_features(monkeypatch):
    monkeypatch.setattr(vnni, "AVAILABLE", False)
    monkeypatch.setenv(dispatch.ENV, "vnni")
    with pytest.raises(ValueError, match="'vnni' cannot run here.*avx512vnni"):
        select()
    with pytest.raises(ValueError, match="'vnni' cannot run here"):
        pack_int8(np.zeros((2, 2), np.int8))
    monkeypatch.setenv(dispatch.ENV, "sse9")
    with pytest.raises(ValueError, match="REFQ_GEMM_KERNEL='sse9': unknown GEMM kernel"):
        select()
    with pytest.raises(ValueError, match="kernel='nope'"):
        select("nope")


def test_the_fast_kernels_refuse_to_run_without_their_features(monkeypatch):
    monkeypatch.setattr(vnni, "AVAILABLE", False)
    with pytest.raises(RuntimeError, match="AVX-512"):
        vnni.gemm_int8_vnni(np.zeros((1, 4), np.int8), np.zeros((1, 4), np.int8))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3), np.int8), "a has K=3 columns but the weights have K=4"),
    (np.zeros((2, 4), np.int16), "a has dtype int16"),
])
def test_gemm_packed_rejects_bad_activations(bad, match):
    w = pack_int8(np.zeros((3, 4), np.int8), "portable")
    with pytest.raises(ValueError, match=match):
        gemm_packed(bad, w)
    with pytest.raises(ValueError, match="expected PackedWeights"):
        gemm_packed(np.zeros((2, 4), np.int8), np.zeros((3, 4), np.int8))


def test_vnni_panels_are_the_documented_layout_and_its_twin_agrees(rng):
    """The offset identity the VNNI kernel relies on, in NumPy: A @ (B + o).T - o rowsum(A) = A @ B.T."""
    a = rng.integers(-128, 128, size=(9, 21), dtype=np.int8)
    b8 = rng.integers(-128, 128, size=(35, 21), dtype=np.int8)
    b4 = rng.integers(-8, 8, size=(35, 21), dtype=np.int8)
    p8, p4 = vnni.pack_int8(b8), vnni.pack_int4(pack_nibbles(b4), 21)
    assert p8.shape == (2, 6, 128) and p4.shape == (2, 3, 128)
    assert p8[0, 2, 64 + 4 * 2 + 1] == np.uint8(int(b8[16 + 2, 9]) + 128)  # n = 18: half 1, lane 2; k = 9: quad 2, byte 1
    assert p8[1, 0, 4 * 2] == np.uint8(int(b8[32 + 2, 0]) + 128)  # n = 34: panel 1, half 0, lane 2
    u8, u4 = vnni.unpack_int8_ref(p8, 35, 21), vnni.unpack_int4_ref(p4, 35, 21)
    np.testing.assert_array_equal(u8, b8.astype(np.int64) + 128)
    np.testing.assert_array_equal(u4, b4.astype(np.int64) + 8)
    np.testing.assert_array_equal(vnni.gemm_offset_ref(a, u8, 128), gemm_int8_ref(a, b8))
    np.testing.assert_array_equal(vnni.gemm_offset_ref(a, u4, 8), gemm_int8_ref(a, b4))
    assert (p8[:, 5].reshape(2, 32, 4)[:, :, 1:] == 0).all()  # k = 21..23 of the last quad: zero padding
    assert (p8[1, :, 4 * 3:64] == 0).all()  # columns 35..47 do not exist: zero padding


def test_row_tiles_cover_every_row_once():
    for m in range(0, 40):
        starts, sizes = vnni.row_tiles(m)
        rows = np.concatenate([np.arange(s, s + r) for s, r in zip(starts, sizes)]) if m else np.zeros(0)
        np.testing.assert_array_equal(rows, np.arange(m))
        assert set(sizes.tolist()) <= {8, 4, 2, 1}


@pytest.mark.skipif(not vnni.AVAILABLE, reason="no AVX-512 VNNI on this CPU")
@pytest.mark.parametrize("threads_min_ops", [0, 1 << 62])
def test_vnni_threaded_and_single_thread_paths_agree(monkeypatch, rng, threads_min_ops):
    monkeypatch.setattr(vnni, "THREADS_MIN_OPS", threads_min_ops)  # 0: always threaded; huge: never
    for m, n, k in ((1, 1, 1), (13, 70, 33), (197, 96, 64), (67, 45, 130)):
        a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
        b = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
        b4 = rng.integers(-8, 8, size=(n, k), dtype=np.int8)
        np.testing.assert_array_equal(vnni.gemm_int8_vnni(a, b), gemm_int8_ref(a, b))
        np.testing.assert_array_equal(vnni.gemm_int4_vnni(a, pack_nibbles(b4), k), gemm_int8_ref(a, b4))
