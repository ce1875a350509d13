"""`refq bench ...`: performance benchmarks, one sub-subcommand per module of refq.bench.

    refq bench gemm [--sizes 512 1024 2048] [--shapes MxNxK ...] [--repeat N] [--json]

Each benchmark module provides `add_arguments(parser)`, `run(args)` and optionally `format_table(result)`
(see refq.bench). Adding a benchmark is one entry in BENCHMARKS.
"""
from __future__ import annotations

import importlib
import json

# name -> (one-line help, description)
BENCHMARKS = {
    "gemm": ("Numba int8/int4 GEMMs vs NumPy float32 matmul",
             "Throughput of refq's Numba int8 and int4 GEMMs (C = A @ B.T, weights [N, K]) next to NumPy "
             "float32 matmul measured in the same run (interleaved, best of N), with exactness against the "
             "int64 NumPy reference."),
    "ctc": ("Numba CTC loss+grad vs the plain reference",
            "Time of refq's Numba CTC loss and gradient (serial and parallel over the batch) on a random batch, "
            "next to the plain float64 reference implementation measured in the same run."),
    "autograd": ("refq autograd vs the same ViT step in plain NumPy",
                 "Time of a ViT training step (forward + backward), the input-gradient step of SARDFQ synthesis "
                 "and a tiny-shape training step on refq's autograd, next to the same computation written "
                 "directly in NumPy (refq.bench.vit_numpy) measured in the same run (interleaved, best and median "
                 "of N), with the largest relative difference between their gradients."),
    "compile": ("Numba compile time of every kernel, empty cache vs warm cache",
                "Import plus first call of every refq Numba kernel in a fresh process with an empty "
                "NUMBA_CACHE_DIR (full compilation), then again in a second process that finds the cache."),
    "quant": ("fused per-token activation quantizer vs memory bandwidth",
              "Bandwidth of refq's Numba per-token int8 activation quantizer next to a float32 copy of the same "
              "matrix (the memory-bandwidth baseline) and the plain NumPy quantizer, measured in the same run, "
              "with the codes checked equal to the NumPy twin's."),
    "e2e": ("float vs quantized end-to-end inference: ViT, stories260K, spotter",
            "Float vs integer-path inference of the quantized ViT (W8A8, W4A4), stories260K (RTN W8A8, W4A8; "
            "needs --llama-checkpoint) and the text spotter (int8), on the same inputs in the same run "
            "(interleaved, best and median of N): ms per batch, throughput, speed vs float and agreement "
            "with the float outputs."),
}


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="performance benchmarks (kernels vs NumPy)",
                              description="Benchmarks of refq's kernels. Run `refq bench NAME --help`.")
    sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    for name, (help_text, description) in BENCHMARKS.items():
        b = sub.add_parser(name, help=help_text, description=description)
        importlib.import_module(f"refq.bench.{name}").add_arguments(b)
        b.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
        b.set_defaults(func=_run, bench_name=name)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _run(args) -> int:
    module = importlib.import_module(f"refq.bench.{args.bench_name}")
    result = module.run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    elif hasattr(module, "format_table"):
        print(module.format_table(result))
    else:
        records = result if isinstance(result, list) else [result]
        for record in records:
            print("  ".join(f"{key}={value}" for key, value in record.items()))
    return 0
