"""Benchmark: Numba compile time of every refq kernel, with an empty cache and with a warm one.

Every jitted function in refq is declared `cache=True`: the first call compiles it and writes the
machine code to Numba's cache, later processes load it. Where the cache lives (Numba's rules):
`NUMBA_CACHE_DIR` if set; else the `__pycache__` folder next to each source file (refq/kernels/__pycache__,
...) when it is writable; else a per-user folder (`~/.cache/numba` style, see Numba's docs on caching).
Deleting it is always safe: the next call recompiles.

The benchmark runs the same script twice in fresh Python processes with `NUMBA_CACHE_DIR` pointing at a
new empty folder: `cold` = import + first call of every kernel with nothing cached (full compilation),
`warm` = the same in a second process that finds the cache. Kernels: int8 and int4 GEMMs (the AVX2
path where available, else the tiled one, plus the tiled and plain ones), the dequant epilogue, per-token
activation quantization, the quantized ViT's zero-point epilogue, the CTC loss and gradient (one kernel
serves the serial and the threaded call, see refq.kernels.threads), the CTC scores of lexicon words, the
float32 activation quantizers, and the float32 GELU forward and backward. The LLVM-IR AVX2 micro-kernel
is built at import in both cases (it is not cached).

References: Numba documentation, "Notes on caching"; refq issue on performance (compile-time target).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from refq.bench import describe_machine, machine_info

_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
from refq.kernels import (dequant_epilogue, gemm_int4, gemm_int4_plain, gemm_int4_tiled, gemm_int8, gemm_int8_plain,
                          gemm_int8_tiled, quantize_per_token)
from refq.quant.int4 import pack_int4
from refq.quant.qlinear import QLinear, Static, forward as qlinear_forward
from refq.spotter.ctc import ctc_log_likelihoods, ctc_loss_and_grad
from refq.kernels.gelu import gelu_f32, gelu_grad_f32
from refq.kernels.fake_quant import log2_fake_quant_f32, quantize_rows_f32, uniform_fake_quant_f32
t1 = time.perf_counter()
times = {}
rng = np.random.default_rng(0)
a = rng.integers(-128, 128, (5, 7)).astype(np.int8)
b = rng.integers(-8, 8, (3, 7)).astype(np.int8)
calls = {
    "gemm_int8": lambda: gemm_int8(a, b),
    "gemm_int8_tiled": lambda: gemm_int8_tiled(a, b),
    "gemm_int8_plain": lambda: gemm_int8_plain(a, b),
    "gemm_int4": lambda: gemm_int4(a, pack_int4(b), 7),
    "gemm_int4_tiled": lambda: gemm_int4_tiled(a, pack_int4(b), 7),
    "gemm_int4_plain": lambda: gemm_int4_plain(a, pack_int4(b), 7),
    "dequant_epilogue": lambda: dequant_epilogue(gemm_int8(a, b), np.ones(5, np.float32), np.ones(3, np.float32)),
    "quantize_per_token": lambda: quantize_per_token(rng.standard_normal((4, 8)).astype(np.float32)),
    "qlinear (zero points)": lambda: qlinear_forward(QLinear(b, np.ones(3, np.float32), 8, Static(0.1, 1),
                                                             zero=np.ones(3, np.int32)), np.ones((5, 7), np.float32)),
    "ctc_loss_and_grad (serial, threaded)": lambda: [
        ctc_loss_and_grad(rng.standard_normal((2, 6, 4)).astype(np.float32), np.array([1, 2, 3]),
                          np.array([6, 6]), np.array([2, 1]), parallel=parallel) for parallel in (False, True)],
    "ctc_log_likelihoods": lambda: ctc_log_likelihoods(np.log(np.full((6, 4), 0.25)), np.array([1, 2, 3]),
                                                       np.array([2, 1])),
    "quantizers_f32 (fake, log2, codes)": lambda: (uniform_fake_quant_f32(np.ones(8, np.float32), 0.5, 0, -8, 7),
                                                   log2_fake_quant_f32(np.full(8, 0.3, np.float32), 4),
                                                   quantize_rows_f32(np.ones((2, 4), np.float32), 0.5, 0, -8, 7)),
    "gelu_f32 (+ grad)": lambda: gelu_grad_f32(np.ones(8, np.float32), np.ones(8, np.float32),
                                               *gelu_f32(np.ones(8, np.float32))[1:]),
}
for name, call in calls.items():
    t = time.perf_counter()
    call()
    times[name] = time.perf_counter() - t
print(json.dumps({"import_s": t1 - t0, "first_calls_s": times, "total_s": time.perf_counter() - t0}))
"""


def add_arguments(parser) -> None:
    """Declare the benchmark options on an argparse parser."""
    parser.add_argument("--cache-dir", default=None,
                        help="NUMBA_CACHE_DIR for the two runs (default: a new temporary folder, removed after)")


def _run_once(cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"compile benchmark subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    """Cold (empty cache) and warm (cached) import + first-call times, in fresh processes."""
    start = time.perf_counter()
    if args.cache_dir:
        cold, warm = _run_once(args.cache_dir), _run_once(args.cache_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="refq-numba-cache-") as d:
            cold, warm = _run_once(d), _run_once(d)
    return {"machine": machine_info(), "cold": cold, "warm": warm, "seconds": time.perf_counter() - start}


def format_table(result: dict) -> str:
    cold, warm = result["cold"], result["warm"]
    lines = [f"machine: {describe_machine(result['machine'])}",
             f"{'kernel':38s} {'cold s':>8s} {'warm s':>8s}",
             f"{'import refq kernels':38s} {cold['import_s']:8.2f} {warm['import_s']:8.2f}"]
    for name in cold["first_calls_s"]:
        lines.append(f"{name:38s} {cold['first_calls_s'][name]:8.2f} {warm['first_calls_s'][name]:8.2f}")
    lines.append(f"{'total (import + first calls)':38s} {cold['total_s']:8.2f} {warm['total_s']:8.2f}")
    lines.append("cold: empty NUMBA_CACHE_DIR (full compilation); warm: a second process finding the cache.")
    return "\n".join(lines)
