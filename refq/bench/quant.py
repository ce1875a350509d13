"""Benchmark: the fused per-token activation quantizer against memory bandwidth, in the same run.

`quantize_per_token` (refq/kernels/quantize_act.py) reads a float32 [T, D] matrix and writes int8 codes
and one float32 scale per row: per row an absmax pass, then a scale-and-round pass (the row is still in
cache for the second pass when D is a few thousand). It can be no faster than streaming its bytes, so
the baseline is the same bytes moved by NumPy in the same run:

* `copy`: `np.copyto(out, x)`, a float32 -> float32 copy (reads 4 B, writes 4 B per element), the
  practical memory-bandwidth ceiling of this machine as NumPy reaches it;
* `numpy_twin`: the plain NumPy quantizer (`quantize_per_token_ref`), several passes with temporaries.
Figures: GB/s counted as bytes read + written (kernel: 4 B in, 1 B out per element; copy: 4 + 4), the
kernel's bandwidth as a fraction of the copy's, and its speed-up over the twin; the codes are checked
equal to the twin's. Interleaved rounds, best of N.

References: refq issue on performance (quantize-activations at memory-bandwidth speed); SmoothQuant /
LLM.int8() per-token dynamic quantization (Xiao et al. 2023; Dettmers et al. 2022).
"""
from __future__ import annotations

import sys

import numpy as np

from refq.bench import describe_machine, interleaved_times, machine_info

DEFAULT_SHAPES = ("256x768", "1024x4096", "4096x4096")


def add_arguments(parser) -> None:
    """Declare the benchmark options on an argparse parser."""
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES), metavar="TxD",
                        help=f"activation shapes T x D (default {' '.join(DEFAULT_SHAPES)})")
    parser.add_argument("--bits", type=int, default=8, help="code width (default 8)")
    parser.add_argument("--repeat", type=int, default=20, help="interleaved rounds (default 20)")
    parser.add_argument("--seed", type=int, default=0)


def parse_shape(text: str) -> tuple[int, int]:
    """'TxD' -> (T, D), both >= 1."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"shape {text!r} is not TxD with positive integers (e.g. 1024x4096)")
    return int(parts[0]), int(parts[1])


def bench_shape(t: int, d: int, bits: int, repeat: int, rng: np.random.Generator) -> dict:
    """Best-of-`repeat` times and bandwidths of the kernel, the NumPy twin and a float32 copy on one shape."""
    from refq.kernels import quantize_per_token, quantize_per_token_ref

    x = (rng.standard_normal((t, d)) * rng.uniform(0.1, 10.0, (t, 1))).astype(np.float32)  # [T, D]
    out = np.empty_like(x)  # [T, D] copy target
    q, s = quantize_per_token(x, bits)  # compile (or load the cache) outside the timed rounds
    q_ref, s_ref = quantize_per_token_ref(x, bits)
    exact = bool(np.array_equal(q, q_ref) and np.array_equal(s, s_ref))
    times = interleaved_times({"kernel": lambda: quantize_per_token(x, bits),
                               "numpy_twin": lambda: quantize_per_token_ref(x, bits),
                               "copy": lambda: np.copyto(out, x)}, repeat)
    best = {k: float(v.min()) for k, v in times.items()}
    n = t * d
    kernel_bytes = n * 5 + t * 4  # float32 in, int8 codes + float32 scales out
    gbs = {"kernel": kernel_bytes / best["kernel"] / 1e9, "numpy_twin": kernel_bytes / best["numpy_twin"] / 1e9,
           "copy": n * 8 / best["copy"] / 1e9}
    return {"t": t, "d": d, "bits": bits, "megabytes_in": n * 4 / 1e6, "kernel_ms": 1e3 * best["kernel"],
            "numpy_twin_ms": 1e3 * best["numpy_twin"], "copy_ms": 1e3 * best["copy"],
            "kernel_gbs": gbs["kernel"], "numpy_twin_gbs": gbs["numpy_twin"], "copy_gbs": gbs["copy"],
            "kernel_vs_copy_bandwidth": gbs["kernel"] / gbs["copy"],
            "kernel_speedup_vs_twin": best["numpy_twin"] / best["kernel"], "exact": exact}


def run(args) -> dict:
    if args.repeat < 1:
        raise ValueError(f"--repeat {args.repeat} must be at least 1")
    if not 2 <= args.bits <= 8:
        raise ValueError(f"--bits {args.bits} must be in 2..8")
    shapes = [parse_shape(s) for s in args.shapes]
    info = machine_info()
    print(f"machine: {describe_machine(info)}", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    records = []
    for t, d in shapes:
        print(f"quant: {t}x{d}", file=sys.stderr, flush=True)
        records.append(bench_shape(t, d, args.bits, args.repeat, rng))
    return {"machine": info, "records": records}


def format_table(result: dict) -> str:
    lines = [f"machine: {describe_machine(result['machine'])}",
             f"{'T':>6} {'D':>6} {'MB in':>7} {'kernel GB/s':>12} {'copy GB/s':>10} {'twin GB/s':>10} "
             f"{'kernel/copy':>12} {'vs twin':>8} {'exact':>6}"]
    for r in result["records"]:
        lines.append(f"{r['t']:6d} {r['d']:6d} {r['megabytes_in']:7.1f} {r['kernel_gbs']:12.2f} {r['copy_gbs']:10.2f} "
                     f"{r['numpy_twin_gbs']:10.2f} {r['kernel_vs_copy_bandwidth']:12.2f} "
                     f"{r['kernel_speedup_vs_twin']:8.1f} {str(r['exact']).lower():>6}")
    lines.append("GB/s = bytes read + written per second; copy = np.copyto of the same float32 matrix (the "
                 "memory-bandwidth baseline); twin = the plain NumPy quantizer.")
    return "\n".join(lines)
