"""Benchmarks behind `refq bench <name>`: one module per benchmark (`gemm`, ...).

A benchmark module defines `add_arguments(parser)` (its options), `run(args)` (a dict or a list of
dict records of numbers) and optionally `format_table(result)` (the human-readable report);
refq.commands.bench wires them to the command line and prints JSON with --json.
`machine_info` describes the host so that every report says where its numbers come from.
"""
from __future__ import annotations

import os
import platform
import time


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor(), else 'unknown'."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU model, logical core count, Numba threads and library versions."""
    import numba
    import numpy as np

    from refq.kernels.cpu import describe

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "numba_threads": numba.get_num_threads(),
            "numpy": np.__version__, "numba": numba.__version__, "simd": describe()}


def describe_machine(info: dict) -> str:
    """One line such as 'AMD EPYC (znver5: avx2 fma avx512f ...), 2 cores, 2 numba threads, numpy 2.4.6, numba 0.68.1'."""
    simd = f" ({info['simd']})" if info.get("simd") else ""
    return (f"{info['cpu']}{simd}, {info['cores']} cores, {info['numba_threads']} numba threads, "
            f"numpy {info['numpy']}, numba {info['numba']}")


def interleaved_times(functions: dict, repeat: int, pause: float = 0.0, burst: int = 1) -> dict:
    """Wall times (s) of each zero-argument function over `repeat` interleaved rounds: {name: float64 [repeat * burst]}.

    Interleaving (a, b, a, b, ...) lets every contender see the same machine load on a shared machine.
    In each round a contender gets `burst` timed calls in a row, after `pause` seconds of (untimed)
    sleep: the sleep lets the worker threads of the previous contender stop spinning (OpenBLAS and
    OpenMP pools busy-wait for a while after a parallel call), and the calls after the first of a burst
    run on warm caches and clocks, so that best-of-N compares each contender at its best.
    """
    import numpy as np

    if pause < 0:
        raise ValueError(f"interleaved_times: pause={pause} must be >= 0 seconds")
    if burst < 1:
        raise ValueError(f"interleaved_times: burst={burst} must be >= 1")
    times = {name: [] for name in functions}
    for _ in range(repeat):
        for name, fn in functions.items():
            if pause:
                time.sleep(pause)
            for _ in range(burst):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: np.asarray(t) for name, t in times.items()}
