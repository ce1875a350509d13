"""Benchmark: the Numba int8 and int4 GEMMs against NumPy float32 matmul on the same machine, same run.

For each shape M x N x K (C = A @ B.T, A [M, K], B [N, K]) it reports, counting 2 M N K operations:

* `numpy_f32_gflops`: NumPy float32 A @ B.T (BLAS), the yardstick;
* `int8_gops`, `int4_gops`: refq.kernels.gemm_packed on int8 and int4 weights packed once beforehand
  (`pack_int8`, `pack_int4`; the one-off packing time is `pack_int8_ms`, `pack_int4_ms`), on the kernel
  refq.kernels.select() picks for this CPU (vnni, avx2 or portable; REFQ_GEMM_KERNEL or --kernel
  force one); `kernel` names it and the machine record lists the CPU features it saw;
* the ratios `int8_vs_numpy`, `int4_vs_numpy`, `int4_vs_int8`;
* `exact`: both kernel results equal the int64 NumPy twins (gemm_int8_ref, gemm_int4_ref).

Timing. Each function is called once untimed (Numba compilation, BLAS thread start-up), then the three
take turns, round after round: each turn sleeps --pause seconds (untimed, so that the previous
contender's threads have stopped spinning), then times --burst calls in a row; the best of all timed
calls is kept. Interleaving and best-of-N make the ratios meaningful on a shared, noisy machine, where
absolute numbers are not.

Inputs are uniform random codes (int8 in [-128, 127], int4 in [-8, 7]) from a seeded Generator.
The int64 reference is slow at large sizes (NumPy integer matmul has no BLAS): a few seconds at 1024,
tens of seconds at 2048; progress goes to stderr.

References: Goto & van de Geijn, ACM TOMS 34(3), 2008 (GEMM performance as 2 M N K / time).
"""
from __future__ import annotations

import re
import sys

import numpy as np

from refq.bench import interleaved_times

DEFAULT_SIZES = (512, 1024, 2048)
MAX_MATRIX_ELEMENTS = 1 << 26  # per operand or result (the int64 reference result is then 512 MiB at most)
KERNELS = ("auto", "vnni", "avx2", "portable")
_SHAPE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def add_arguments(parser) -> None:
    """Declare the benchmark options on an argparse parser."""
    parser.add_argument("--sizes", type=int, nargs="+", default=None, metavar="S",
                        help=f"square shapes M = N = K = S (default: {' '.join(map(str, DEFAULT_SIZES))} "
                             "when --shapes is not given)")
    parser.add_argument("--shapes", nargs="+", default=None, metavar="MxNxK",
                        help="extra shapes, e.g. 197x768x192 (M tokens, N outputs, K inputs)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds; the best is reported (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--pause", type=float, default=0.2,
                        help="seconds of (untimed) sleep before each contender's turn, so that the threads of "
                             "the previous contender (OpenBLAS, Numba) are idle again; matters with 2+ threads "
                             "(default 0.2)")
    parser.add_argument("--burst", type=int, default=3,
                        help="timed calls in a row per turn (the first absorbs the wake-up; default 3)")
    parser.add_argument("--kernel", choices=KERNELS, default="auto",
                        help="auto: what refq.kernels.select() picks (REFQ_GEMM_KERNEL, else vnni on AVX-512 VNNI "
                             "CPUs, avx2 on AVX2 CPUs, else portable); vnni: the vpdpbusd kernels; avx2: the "
                             "vpmaddwd kernels; portable: the plain-Numba kernels (any CPU)")


def parse_shape(text: str) -> tuple[int, int, int]:
    """'MxNxK' -> (M, N, K), or ValueError naming the text."""
    match = _SHAPE.match(text)
    if match is None:
        raise ValueError(f"bench gemm: shape {text!r} is not of the form MxNxK (e.g. 197x768x192)")
    m, n, k = (int(g) for g in match.groups())
    if min(m, n, k) < 1:
        raise ValueError(f"bench gemm: shape {text!r} has a zero dimension")
    return check_shape((m, n, k), repr(text))


def check_shape(shape: tuple[int, int, int], what: str) -> tuple[int, int, int]:
    """The shape, or ValueError when one of its matrices would hold more than MAX_MATRIX_ELEMENTS."""
    m, n, k = shape
    largest = max(m * k, n * k, m * n)
    if largest > MAX_MATRIX_ELEMENTS:
        raise ValueError(f"bench gemm: shape {what} needs a matrix of {largest:,} elements, more than the "
                         f"{MAX_MATRIX_ELEMENTS:,} this benchmark allows (e.g. sizes up to 8192)")
    return shape


def shapes_from_args(args) -> list[tuple[int, int, int]]:
    """The (M, N, K) list: --sizes as squares, then --shapes; the default sizes when neither is given."""
    sizes = args.sizes if args.sizes is not None or args.shapes is not None else DEFAULT_SIZES
    shapes = []
    for s in sizes or ():
        if s < 1:
            raise ValueError(f"bench gemm: size {s} must be >= 1")
        shapes.append(check_shape((s, s, s), f"--sizes {s}"))
    shapes.extend(parse_shape(text) for text in args.shapes or ())
    return shapes


def best_of(functions: dict, repeat: int, pause: float = 0.0, burst: int = 1) -> dict:
    """Best wall time (s) of each zero-argument function over `repeat` interleaved rounds of `burst` calls."""
    return {name: float(t.min()) for name, t in interleaved_times(functions, repeat, pause, burst).items()}


def kernel_name(kernel: str) -> str:
    """The kernel --kernel means on this host (ValueError if the CPU cannot run it)."""
    from refq.kernels import select

    return select(None if kernel == "auto" else kernel)


def bench_shape(m: int, n: int, k: int, repeat: int, rng: np.random.Generator, kernel: str = "auto",
                log=None, pause: float = 0.0, burst: int = 1) -> dict:
    """Time NumPy float32, int8 and int4 GEMMs on one random M x N x K problem; check exactness."""
    import time

    from refq.kernels import gemm_int4_ref, gemm_int8_ref, gemm_packed, pack_int4, pack_int8
    from refq.quant.int4 import pack_int4 as pack_nibbles

    name = kernel_name(kernel)

    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)  # [M, K] activations
    b8 = rng.integers(-128, 128, size=(n, k), dtype=np.int8)  # [N, K] int8 weights
    b4 = pack_nibbles(rng.integers(-8, 8, size=(n, k), dtype=np.int8))  # [N, K] -> [N, ceil(K/2)] uint8
    a_f32, b_f32 = a.astype(np.float32), b8.astype(np.float32)  # same values, float32
    pack_int8(b8[:1], name), pack_int4(b4[:1], k, name)  # compile the packers before timing them
    t0 = time.perf_counter()
    w8 = pack_int8(b8, name)  # once per weight matrix, as a quantized layer does
    t1 = time.perf_counter()
    w4 = pack_int4(b4, k, name)
    t2 = time.perf_counter()
    functions = {"numpy_f32": lambda: a_f32 @ b_f32.T, "int8": lambda: gemm_packed(a, w8),
                 "int4": lambda: gemm_packed(a, w4)}
    results = {name: fn() for name, fn in functions.items()}  # warm-up: compile, start BLAS threads
    best = best_of(functions, repeat, pause, burst)
    if log:
        log(f"{m}x{n}x{k}: checking against the int64 NumPy reference")
    exact_int8 = bool(np.array_equal(results["int8"], gemm_int8_ref(a, b8)))
    exact_int4 = bool(np.array_equal(results["int4"], gemm_int4_ref(a, b4, k)))
    ops = 2.0 * m * n * k
    rate = {name: ops / t / 1e9 for name, t in best.items()}
    return {
        "m": m, "n": n, "k": k, "repeat": repeat, "pause_s": pause, "burst": burst, "kernel": name,
        "numpy_f32_gflops": rate["numpy_f32"], "int8_gops": rate["int8"], "int4_gops": rate["int4"],
        "int8_vs_numpy": best["numpy_f32"] / best["int8"], "int4_vs_numpy": best["numpy_f32"] / best["int4"],
        "int4_vs_int8": best["int8"] / best["int4"],
        "pack_int8_ms": 1e3 * (t1 - t0), "pack_int4_ms": 1e3 * (t2 - t1),
        "exact_int8": exact_int8, "exact_int4": exact_int4, "exact": exact_int8 and exact_int4,
    }


def run(args) -> list[dict]:
    """One record per shape (fields above), each tagged with the machine description."""
    from refq.bench import describe_machine, machine_info

    shapes = shapes_from_args(args)
    if args.repeat < 1:
        raise ValueError(f"bench gemm: repeat={args.repeat}, expected >= 1")
    if not 0 <= args.pause < float("inf"):
        raise ValueError(f"bench gemm: pause={args.pause}, expected a finite number >= 0 of seconds")
    if args.burst < 1:
        raise ValueError(f"bench gemm: burst={args.burst}, expected >= 1")
    kernel_name(args.kernel)  # fail early on a kernel this CPU cannot run
    info = machine_info()
    rng = np.random.default_rng(args.seed)

    def log(msg: str) -> None:
        print(f"bench gemm: {msg}", file=sys.stderr, flush=True)

    log(describe_machine(info))
    records = []
    for i, (m, n, k) in enumerate(shapes):
        log(f"[{i + 1}/{len(shapes)}] {m}x{n}x{k}: timing {args.repeat} rounds")
        records.append(dict(bench_shape(m, n, k, args.repeat, rng, args.kernel, log, args.pause, args.burst),
                            machine=info))
    return records


def format_table(records: list[dict]) -> str:
    """The human-readable report: machine line, then one row per shape."""
    from refq.bench import describe_machine

    lines = []
    if records:
        lines.append(f"machine: {describe_machine(records[0]['machine'])}; kernel: {records[0]['kernel']}")
    lines.append(f"{'M':>5} {'N':>5} {'K':>5}  {'f32 GFLOP/s':>11} {'int8 GOP/s':>10} {'int4 GOP/s':>10}"
                 f"  {'int8/f32':>8} {'int4/f32':>8} {'int4/int8':>9}  exact")
    for r in records:
        lines.append(f"{r['m']:>5} {r['n']:>5} {r['k']:>5}  {r['numpy_f32_gflops']:>11.1f} {r['int8_gops']:>10.1f} "
                     f"{r['int4_gops']:>10.1f}  {r['int8_vs_numpy']:>8.2f} {r['int4_vs_numpy']:>8.2f} "
                     f"{r['int4_vs_int8']:>9.2f}  {str(r['exact']).lower()}")
    return "\n".join(lines)
