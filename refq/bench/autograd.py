"""Benchmark: the refq autograd against the same ViT computation written directly in NumPy, same run.

Each case times one step of the ViT of refq.models.vit on the autograd (a graph of Tensors, as in
refq.models.vit_train and refq.sardfq.synthesis) and of its plain NumPy twin refq.bench.vit_numpy
(hand-written backward, no graph), both float32 on the same random images, labels and parameters:

* `vit_train_step`: forward + backward of the mean cross-entropy w.r.t. every parameter (the input
  needs no gradient), batch 128, the shipped config (ViTConfig() defaults: 28x28, patch 4, dim 96,
  depth 6, 3 heads). The autograd side is refq.models.vit_train's step: zero_grad,
  F.cross_entropy(vit.forward(...)), loss.backward(). The optimizer step (AdamW) is excluded from
  both sides: it is the same NumPy code either way.
* `input_grad_step`: the gradient w.r.t. the input images only, parameters frozen (plain arrays, as
  refq.sardfq.synthesis passes them), batch 32: the network part of a SARDFQ synthesis step. The
  SARDFQ losses (APA, MSR crops, soft labels, TV) and the Adam update are *not* in the NumPy twin,
  which has only the network's forward and backward with a cross-entropy on the logits. To say how
  much of a real synthesis step that covers, the case also runs refq.sardfq.synthesis.synthesize
  (SynthConfig defaults at this batch, `SHARE_ITERS` iterations of one round) and times the autograd
  network forward + backward alone on the same number of images (the batch plus its MSR regions):
  `network_share` = that time / the time of one synthesis iteration (medians; approximate).
* `small_shapes`: the train step of a tiny ViT (batch 8, dim 32, depth 2, 2 heads, 28x28, patch 4),
  where a fixed per-op Python cost of the graph would show.

Reported per case: best and median wall time of each side over `repeat` rounds, the ratio
autograd / numpy (of the bests, and of the medians), and `max_rel_grad_diff`, the largest
max|g_autograd - g_numpy| / max|g_numpy| over the gradient arrays (every parameter, or the input),
which checks that both sides compute the same thing.

Timing: each side is called once untimed (warm-up), then the two are timed in turn, round after
round, so that both see the same machine load; on a shared, noisy machine the best-of-N numbers
and the ratios are the meaningful ones. Both sides use the same BLAS and its threads: set
OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS / MKL_NUM_THREADS) before starting Python to choose them;
the report names the variables that were set.

References: refq issue #7 (autograd within 1.5x of plain NumPy); Dosovitskiy et al., ICLR 2021 (ViT).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from refq.bench import interleaved_times

CASES = ("vit_train_step", "input_grad_step", "small_shapes")
DEFAULT_BATCH = {"vit_train_step": 128, "input_grad_step": 32, "small_shapes": 8}
DEFAULT_REPEAT = {"vit_train_step": 5, "input_grad_step": 10, "small_shapes": 50}
SMALL_CONFIG = {"embed_dim": 32, "depth": 2, "num_heads": 2}
SHARE_ITERS = 3
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def add_arguments(parser) -> None:
    """Declare the benchmark options on an argparse parser."""
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), metavar="CASE",
                        help=f"cases to run (default: all of {' '.join(CASES)})")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size of every case (default: 128 train step, 32 input gradient, 8 small shapes)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed rounds of every case (default: 5 train step, 10 input gradient, 50 small shapes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random parameters, images and labels")
    parser.add_argument("--no-share", action="store_true",
                        help="skip the SARDFQ synthesis step that input_grad_step times to measure the network's share")
    parser.epilog = ("Threads: both sides share NumPy's BLAS; set OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS / "
                     "MKL_NUM_THREADS) before starting Python to choose its thread count.")


def blas_threads() -> dict:
    """The BLAS thread variables set in the environment (name -> value); {} when none is set."""
    return {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}


def describe_threads(threads: dict) -> str:
    """'OPENBLAS_NUM_THREADS=1' or 'BLAS default (no thread variable set)'."""
    return " ".join(f"{k}={v}" for k, v in threads.items()) or "BLAS default (no thread variable set)"


def case_config(case: str):
    """The ViTConfig of a case: the shipped defaults, or the tiny one of small_shapes."""
    from refq.models.vit import ViTConfig

    if case not in CASES:
        raise ValueError(f"bench autograd: case {case!r}, expected one of {CASES}")
    return ViTConfig(**SMALL_CONFIG) if case == "small_shapes" else ViTConfig()


def make_inputs(cfg, batch: int, rng: np.random.Generator):
    """Random float32 parameters (vit.init_params), images [B, C, H, W] ~ N(0, 1) and int labels [B]."""
    from refq.models import vit

    if batch < 1:
        raise ValueError(f"bench autograd: batch={batch}, expected >= 1")
    params = vit.init_params(cfg, rng)
    x = rng.standard_normal((batch, cfg.in_chans, cfg.img_size, cfg.img_size)).astype(np.float32)
    labels = rng.integers(0, cfg.num_classes, size=batch)  # [B]
    return params, x, labels


def autograd_step(params: dict, cfg, x: np.ndarray, labels: np.ndarray, train: bool):
    """A zero-argument function: one autograd forward + backward, returning (loss, grads dict).

    train: gradients w.r.t. every parameter (as refq.models.vit_train); else w.r.t. the input only,
    with frozen parameters passed as plain arrays (as refq.sardfq.synthesis), keyed 'input'.
    """
    from refq.autograd import Tensor
    from refq.autograd import functional as F
    from refq.models import vit

    tensors = vit.as_tensors(params, requires_grad=True)

    def train_step():
        for t in tensors.values():
            t.zero_grad()
        loss = F.cross_entropy(vit.forward(tensors, cfg, Tensor(x)), labels)
        loss.backward()
        return loss.item(), {k: t.grad for k, t in tensors.items()}

    def input_step():
        xt = Tensor(x, requires_grad=True)
        loss = F.cross_entropy(vit.forward(params, cfg, xt), labels)
        loss.backward()
        return loss.item(), {"input": xt.grad}

    return train_step if train else input_step


def numpy_step(params: dict, cfg, x: np.ndarray, labels: np.ndarray, train: bool):
    """The same step as autograd_step on the plain NumPy twin refq.bench.vit_numpy."""
    from refq.bench import vit_numpy

    def step():
        loss, grads, dx = vit_numpy.loss_and_grads(params, cfg, x, labels, param_grads=train, input_grad=not train)
        return loss, grads if train else {"input": dx}

    return step


def max_rel_difference(a: dict, b: dict) -> float:
    """max over the keys of b of max|a - b| / max|b| (0 where b is all zero and a equals it)."""
    if set(a) != set(b):
        raise ValueError(f"bench autograd: gradient keys differ: {sorted(set(a) ^ set(b))[:5]}")
    worst = 0.0
    for k, ref in b.items():
        diff = float(np.abs(a[k].astype(np.float64) - ref).max())
        scale = float(np.abs(ref).max())
        worst = max(worst, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf")))
    return worst


def sardfq_share(params: dict, cfg, batch: int, seed: int) -> dict:
    """Median time of one SARDFQ synthesis iteration and of the autograd network forward + backward
    (input gradient) on as many images as that iteration feeds the network (the batch + MSR regions)."""
    from refq.sardfq.synthesis import SynthConfig, synthesize

    sc = SynthConfig(batch=batch, iters=SHARE_ITERS, rounds=1, log_every=SHARE_ITERS)
    result = synthesize(params, cfg, sc, np.random.default_rng(seed), log=lambda msg: None)
    images = batch + len(result.plan)
    step_s = result.seconds / SHARE_ITERS
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((images, cfg.in_chans, cfg.img_size, cfg.img_size)).astype(np.float32)
    network = autograd_step(params, cfg, x, rng.integers(0, cfg.num_classes, size=images), train=False)
    network()  # warm-up
    network_s = float(np.median(interleaved_times({"network": network}, SHARE_ITERS)["network"]))
    return {"sardfq_images": images, "sardfq_step_ms": 1e3 * step_s, "network_ms": 1e3 * network_s,
            "network_share": network_s / step_s}


def bench_case(case: str, batch: int, repeat: int, seed: int, share: bool = False, log=None) -> dict:
    """Time one case, autograd vs NumPy, and compare their losses and gradients."""
    if repeat < 1:
        raise ValueError(f"bench autograd: repeat={repeat}, expected >= 1")
    cfg = case_config(case)
    params, x, labels = make_inputs(cfg, batch, np.random.default_rng(seed))
    train = case != "input_grad_step"
    functions = {"autograd": autograd_step(params, cfg, x, labels, train),
                 "numpy": numpy_step(params, cfg, x, labels, train)}
    results = {name: fn() for name, fn in functions.items()}  # warm-up, and the values compared below
    if log:
        log(f"{case}: B={batch}, timing {repeat} interleaved rounds")
    times = interleaved_times(functions, repeat)
    best = {name: float(t.min()) for name, t in times.items()}
    median = {name: float(np.median(t)) for name, t in times.items()}
    record = {
        "case": case, "batch": batch, "img_size": cfg.img_size, "patch_size": cfg.patch_size,
        "embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads, "tokens": cfg.num_tokens,
        "grads": "params" if train else "input", "repeat": repeat,
        "autograd_best_ms": 1e3 * best["autograd"], "autograd_median_ms": 1e3 * median["autograd"],
        "numpy_best_ms": 1e3 * best["numpy"], "numpy_median_ms": 1e3 * median["numpy"],
        "ratio": best["autograd"] / best["numpy"], "ratio_median": median["autograd"] / median["numpy"],
        "loss_abs_diff": abs(results["autograd"][0] - results["numpy"][0]),
        "max_rel_grad_diff": max_rel_difference(results["autograd"][1], results["numpy"][1]),
    }
    if share:
        if log:
            log(f"{case}: timing {SHARE_ITERS} SARDFQ synthesis iterations for the network's share")
        record.update(sardfq_share(params, cfg, batch, seed))
    return record


def run(args) -> list[dict]:
    """One record per case (fields above), each tagged with the machine and the BLAS thread variables."""
    from refq.bench import describe_machine, machine_info

    for name in ("batch", "repeat"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"bench autograd: {name}={value}, expected >= 1")
    info, threads = machine_info(), blas_threads()

    def log(msg: str) -> None:
        print(f"bench autograd: {msg}", file=sys.stderr, flush=True)

    log(f"{describe_machine(info)}; BLAS threads: {describe_threads(threads)}")
    records = []
    for case in getattr(args, "cases", None) or CASES:
        batch = args.batch if args.batch is not None else DEFAULT_BATCH[case]
        repeat = args.repeat if args.repeat is not None else DEFAULT_REPEAT[case]
        share = case == "input_grad_step" and not getattr(args, "no_share", False)
        record = bench_case(case, batch, repeat, args.seed, share, log)
        records.append(dict(record, machine=info, blas_threads=threads))
    return records


def format_table(records: list[dict]) -> str:
    """The human-readable report: machine line, what is timed, one row per case, the SARDFQ share."""
    from refq.bench import describe_machine

    lines = []
    if records:
        lines.append(f"machine: {describe_machine(records[0]['machine'])}; "
                     f"BLAS threads: {describe_threads(records[0]['blas_threads'])}")
    lines.append("ViT forward + backward of the mean cross-entropy, float32; autograd vs plain NumPy, interleaved, "
                 "best (median) of N rounds; no optimizer step")
    lines.append(f"{'case':<16} {'B':>4} {'D':>3} {'L':>2} {'H':>2} {'grads':<6} {'N':>3}  "
                 f"{'autograd ms':>17} {'numpy ms':>17}  {'ratio':>11}  {'rel grad diff':>13}")
    for r in records:
        lines.append(f"{r['case']:<16} {r['batch']:>4} {r['embed_dim']:>3} {r['depth']:>2} {r['num_heads']:>2} "
                     f"{r['grads']:<6} {r['repeat']:>3}  "
                     f"{r['autograd_best_ms']:>8.2f} ({r['autograd_median_ms']:>6.1f}) "
                     f"{r['numpy_best_ms']:>8.2f} ({r['numpy_median_ms']:>6.1f})  "
                     f"{r['ratio']:>5.2f} ({r['ratio_median']:.2f})  {r['max_rel_grad_diff']:>13.1e}")
    for r in records:
        if "network_share" in r:
            lines.append(f"input_grad_step: the NumPy twin has the network only, not the SARDFQ losses (APA, MSR, "
                         f"SL, TV) nor Adam; the network forward + backward on the {r['sardfq_images']} images of one "
                         f"SARDFQ iteration ({r['network_ms']:.0f} ms) is {100 * r['network_share']:.0f}% of that "
                         f"iteration ({r['sardfq_step_ms']:.0f} ms, autograd, median).")
    return "\n".join(lines)
