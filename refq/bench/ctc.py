"""Benchmark: batched Numba CTC loss + gradient against the plain float64 reference.

Default case from the performance issue: N = 32 sequences, T = 64 frames,
K = 100 classes, target lengths drawn uniformly from 10..20, float32 logits,
reduction 'mean'. Reports:

* `serial_ms` / `parallel_ms`: `ctc_loss_and_grad` on one thread and spread
  over Numba's threads (`parallel=False` / `True`), median and best of
  `repeat` calls, after an untimed compiling call; the two are timed in turn,
  round after round, so that both see the same machine load;
* `reference_ms`: the plain float64 Python reference (`ctc_reference`), one
  pass over the N samples;
* `max_abs_loss_diff`, `max_abs_grad_diff`: float64 Numba vs the reference.

On a shared, noisy machine the best-of-N numbers are the meaningful ones.

References:
    Graves et al., "Connectionist Temporal Classification", ICML 2006, Sec. 4 (CTC); docs/spotter.md, T9.
"""
from __future__ import annotations

import sys
import time

import numpy as np

DEFAULTS = {"n": 32, "t": 64, "k": 100, "min_len": 10, "max_len": 20, "repeat": 50, "seed": 0}


def add_arguments(parser) -> None:
    """Declare the benchmark options on an argparse parser."""
    parser.add_argument("--n", type=int, default=DEFAULTS["n"], help="batch size N (default 32)")
    parser.add_argument("--t", type=int, default=DEFAULTS["t"], help="frames per sequence T (default 64)")
    parser.add_argument("--k", type=int, default=DEFAULTS["k"], help="classes K including the blank (default 100)")
    parser.add_argument("--min-len", type=int, default=DEFAULTS["min_len"], help="shortest target (default 10)")
    parser.add_argument("--max-len", type=int, default=DEFAULTS["max_len"], help="longest target (default 20)")
    parser.add_argument("--repeat", type=int, default=DEFAULTS["repeat"], help="timed rounds (default 50)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the random batch")


def make_batch(rng: np.random.Generator, n: int, t: int, k: int, min_len: int, max_len: int):
    """Random float32 logits [N, T, K], padded labels [N, Lmax] (int32) and lengths [N] (int32)."""
    if min(n, t) < 1 or not 0 <= min_len <= max_len:
        raise ValueError(f"bench ctc: n={n}, t={t}, min_len={min_len}, max_len={max_len}; "
                         "need n, t >= 1 and 0 <= min_len <= max_len")
    if 2 * max_len + 1 > t:
        raise ValueError(f"bench ctc: max_len={max_len} needs T >= {2 * max_len + 1} frames, got T={t}")
    if k < 2:
        raise ValueError(f"bench ctc: k={k}; need a blank and at least one character")
    logits = rng.normal(scale=2.0, size=(n, t, k)).astype(np.float32)  # [N, T, K]
    label_lengths = rng.integers(min_len, max_len + 1, size=n).astype(np.int32)  # [N]
    labels = rng.integers(1, k, size=(n, max_len)).astype(np.int32)  # [N, Lmax]
    input_lengths = np.full(n, t, np.int32)  # [N]
    return logits, labels, input_lengths, label_lengths


def run(args) -> dict:
    """Time Numba CTC (loss + grad) serial and parallel, and the reference, on one random batch."""
    from refq.bench import describe_machine, machine_info
    from refq.spotter.ctc import ctc_loss_and_grad
    from refq.spotter.ctc_reference import ctc_reference

    opts = {name: getattr(args, name, default) for name, default in DEFAULTS.items()}
    if opts["repeat"] < 1:
        raise ValueError(f"bench ctc: repeat={opts['repeat']}, expected >= 1")
    rng = np.random.default_rng(opts["seed"])
    batch = make_batch(rng, opts["n"], opts["t"], opts["k"], opts["min_len"], opts["max_len"])
    info = machine_info()
    print(f"bench ctc: {describe_machine(info)}", file=sys.stderr)

    print("bench ctc: compiling the Numba kernels (cached after the first run)...", file=sys.stderr)
    start = time.perf_counter()
    for parallel in (False, True):
        ctc_loss_and_grad(*batch, reduction="mean", parallel=parallel)
    first_calls = time.perf_counter() - start
    times = {False: [], True: []}
    for _ in range(opts["repeat"]):
        for parallel in (False, True):
            start = time.perf_counter()
            ctc_loss_and_grad(*batch, reduction="mean", parallel=parallel)
            times[parallel].append(time.perf_counter() - start)

    print(f"bench ctc: running the plain reference on {opts['n']} samples...", file=sys.stderr)
    logits, labels, input_lengths, label_lengths = batch
    losses, grad = ctc_loss_and_grad(logits.astype(np.float64), labels, input_lengths, label_lengths,
                                     reduction="none")
    loss_diff = grad_diff = 0.0
    start = time.perf_counter()
    for i in range(opts["n"]):
        ref_loss, ref_grad = ctc_reference(logits[i].astype(np.float64), labels[i, : label_lengths[i]])
        loss_diff = max(loss_diff, abs(ref_loss - float(losses[i])))
        grad_diff = max(grad_diff, float(np.abs(ref_grad - grad[i]).max()))
    reference_time = time.perf_counter() - start

    serial, threaded = np.asarray(times[False]), np.asarray(times[True])
    return {
        "n": opts["n"], "t": opts["t"], "k": opts["k"], "min_len": opts["min_len"], "max_len": opts["max_len"],
        "repeat": opts["repeat"],
        "first_calls_s": first_calls,
        "serial_median_ms": 1e3 * float(np.median(serial)), "serial_best_ms": 1e3 * float(serial.min()),
        "parallel_median_ms": 1e3 * float(np.median(threaded)), "parallel_best_ms": 1e3 * float(threaded.min()),
        "reference_ms": 1e3 * reference_time,
        "speedup_vs_reference": reference_time / float(min(serial.min(), threaded.min())),
        "max_abs_loss_diff": float(loss_diff), "max_abs_grad_diff": float(grad_diff),
        "machine": info,
    }


def format_table(result: dict) -> str:
    """The human-readable report: machine line, case line, then one row per implementation."""
    from refq.bench import describe_machine

    r = result
    return "\n".join([
        f"machine: {describe_machine(r['machine'])}",
        f"CTC loss + grad, N={r['n']} T={r['t']} K={r['k']} L={r['min_len']}..{r['max_len']}, "
        f"float32, best/median of {r['repeat']}",
        f"{'numba serial':<16} {r['serial_best_ms']:>9.2f} ms  (median {r['serial_median_ms']:.2f})",
        f"{'numba parallel':<16} {r['parallel_best_ms']:>9.2f} ms  (median {r['parallel_median_ms']:.2f})",
        f"{'python reference':<16} {r['reference_ms']:>9.1f} ms  (one pass; "
        f"{r['speedup_vs_reference']:.0f}x slower than the best Numba)",
        f"max |loss diff| {r['max_abs_loss_diff']:.1e}, max |grad diff| {r['max_abs_grad_diff']:.1e} (float64)",
    ])
