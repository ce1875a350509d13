"""Run a `nogil` Numba kernel over contiguous chunks of a range, one chunk per thread.

refq's kernels that split rows (or samples) over threads are written as
`kernel(..., lo, hi)`: do rows [lo, hi). `run_chunks` calls such a kernel once
for the whole range when one thread is asked for, or once per chunk on a small
pool of Python threads otherwise. The kernel is compiled with `nogil=True`,
so the chunks really run at the same time.

Why not `prange`: every `parallel=True` function goes through Numba's parfor
compilation (about half a second each, cold), and the serial twin that small
inputs need (waking threads costs more than tiny work) is a second full
compilation of the same loop body. A chunked kernel is compiled once and
serves both. The AVX2 GEMM (`refq.kernels.avx2`) keeps `prange` for packing B
and for the product: moved onto this pool, both measured slower at small
shapes with two threads (at 256^3, 1.2-1.3x float32 instead of 1.8x).

The number of threads is Numba's, `numba.config.NUMBA_NUM_THREADS` (set by
the NUMBA_NUM_THREADS environment variable; default: all cores).

References: Numba documentation, "Releasing the GIL" (`nogil=True`) and
"Notes on caching"; refq issue on performance (compile-time target).
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numba


def num_threads() -> int:
    """Threads the chunked kernels use: Numba's configured thread count."""
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refq-kernel")


def chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (lo, hi) ranges covering [0, n), sizes differing by at most one, none empty."""
    assert n >= 0 and parts >= 1
    parts = max(1, min(parts, n))
    edges = [n * i // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


def run_chunks(kernel, n: int, *args, threads: int | None = None) -> None:
    """kernel(*args, lo, hi) over chunks of [0, n): one chunk per thread, the first on the calling thread."""
    threads = num_threads() if threads is None else threads
    bounds = chunk_bounds(n, threads)
    if len(bounds) == 1:
        kernel(*args, 0, n)
        return
    futures = [_pool(len(bounds) - 1).submit(kernel, *args, lo, hi) for lo, hi in bounds[1:]]
    kernel(*args, *bounds[0])
    for future in futures:
        future.result()  # re-raises a kernel's exception
