"""refq.kernels.threads: chunk bounds cover the range exactly once; chunked kernels equal one-thread runs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from refq.kernels import dequant_epilogue, dequant_epilogue_ref, quantize_per_token, quantize_per_token_ref
from refq.kernels.threads import chunk_bounds, run_chunks
from refq.spotter.ctc import ctc_loss_and_grad


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_chunk_bounds_partition_the_range(n, parts):
    bounds = chunk_bounds(n, parts)
    assert len(bounds) == max(1, min(parts, n))
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(hi == lo for (_, hi), (lo, _) in zip(bounds, bounds[1:]))  # contiguous, no gap or overlap
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and (n == 0 or min(sizes) >= 1)


@njit(nogil=True)
def _mark(out, lo, hi):
    for i in range(lo, hi):
        out[i] += i + 1


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 300), st.integers(1, 5))
def test_run_chunks_visits_every_index_once(n, threads):
    out = np.zeros(n, np.int64)
    run_chunks(_mark, n, out, threads=threads)
    np.testing.assert_array_equal(out, np.arange(1, n + 1))


def _fail(lo, hi):
    if lo > 0:
        raise ValueError(f"chunk {lo}..{hi}")


def test_run_chunks_reraises_a_worker_error():
    with pytest.raises(ValueError, match="chunk 5..10"):
        run_chunks(_fail, 10, threads=2)


def test_large_inputs_take_the_threaded_path_and_agree(rng):
    # sizes above the one-thread thresholds of the epilogue, the activation quantizer and the CTC batch
    c = rng.integers(-2**20, 2**20, size=(300, 257), dtype=np.int32)
    a_scale, b_scale = rng.random(300, dtype=np.float32), rng.random(257, dtype=np.float32)
    np.testing.assert_array_equal(dequant_epilogue(c, a_scale, b_scale), dequant_epilogue_ref(c, a_scale, b_scale))
    x = rng.standard_normal((700, 401)).astype(np.float32)
    for got, want in zip(quantize_per_token(x), quantize_per_token_ref(x)):
        np.testing.assert_array_equal(got, want)
    logits = rng.standard_normal((9, 40, 30)).astype(np.float32)
    labels = rng.integers(1, 30, size=(9, 12))
    lengths = (np.full(9, 40), np.full(9, 12))
    serial = ctc_loss_and_grad(logits, labels, *lengths, reduction="none", parallel=False)
    threaded = ctc_loss_and_grad(logits, labels, *lengths, reduction="none", parallel=True)
    for got, want in zip(threaded, serial):
        np.testing.assert_array_equal(got, want)
