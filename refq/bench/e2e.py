"""Benchmark: float vs quantized end-to-end inference of refq's three models, same inputs, same run.

For every model the float forward and its quantized integer paths run on the same inputs, and each row
reports its time per batch (best and median of `repeat`), its throughput, its speed relative to float
(`speedup_vs_float` = float best time / row best time, above 1 = faster than float) and how closely its
outputs agree with the float ones:

* ViT (SARDFQ's quantized ViT, refq.sardfq.quant_vit): float `refq.models.vit.forward` vs the integer
  path of `QuantOps` (`ops.integer = True`: every linear layer on the Numba int8 GEMM, or the packed-int4
  one for W4) at W8A8 and W4A4. Quantizers fitted by `init_quantizers` (percentile-MSE) on 32 calibration
  images, no reconstruction (the ranges matter for agreement, not for speed). Inputs and calibration
  images are standard-normal noise in the model's normalised input space (the data-free starting point),
  `batch` images [B, C, H, W]. Agreement: fraction of equal argmax predictions, max |logit difference|
  and the relative logit error ||q - f|| / ||f||. Model: --vit-checkpoint, else the shipped
  refq/weights/vit_fmnist.npz, else (or with --vit-random) a seeded random `vit.init_params`.
* stories260K (llama2.c): float `refq.models.llama.forward` vs the same forward with the ASER linear
  hook `refq.aser.apply.QuantizedOps(layers, integer=True)` (per-token int8 activation codes x int8 or
  packed-int4 weight codes, `refq.aser.qlinear.forward_int`), RTN at W8A8 and W4A8. Input: `llama_batch`
  windows of `llama_tokens` tokens sampled from the float model itself (refq.aser.calibrate.generate_tokens,
  ASER's data-free "generated" calibration sampler). Agreement as for the ViT, on the next-token logits of
  every position. Needs --llama-checkpoint (skipped otherwise).
* spotter: `refq.spotter.decode.spot_batch` (detection, NMS, text pooling, recognition, CTC decoding) of
  the float model vs the int8 model of `refq.spotter.quantized.quantize_spotter` (every convolution as an
  im2col GEMM on the int8 kernels; what `refq spot run --int8` runs), on `spotter_images` scenes of the seeded
  synthetic generator (refq.spotter.synth.generate_scene). Agreement: word agreement (words found by both,
  same text, IoU >= 0.5, over the words found by either) and max |score-map probability difference|.
  Model: --spotter-checkpoint, else the shipped refq/weights/spotter.npz (skipped when absent).

Timing. Every function is called once untimed (Numba compilation, caches; its output gives the agreement
figures), then the float and quantized versions of one model are timed in turn, round after round, so
that all of them see the same machine load; on a shared, noisy machine the best-of-N numbers and the
ratios are the meaningful ones. All float work is float32. The integer kernels run on Numba's threads
(the machine line reports how many): when the cores are busy with other work, their parallel regions wait
for descheduled threads and the integer rows slow down out of proportion; NUMBA_NUM_THREADS=1 then shows
the single-thread ratios.

References: SARDFQ, arXiv:2412.16553 and I&S-ViT, arXiv:2311.10126 (the quantized ViT); ASER,
arXiv:2411.07762, and docs/aser.md, A2 (RTN, per-channel weights, per-token activations); Jacob et al., CVPR 2018,
Sec. 2 (integer inference); docs/spotter.md, T10 (float vs int8 spotter).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from refq.bench import interleaved_times

MODELS = ("vit", "llama", "spotter")
VIT_VARIANTS = ((8, 8), (4, 4))  # (wbits, abits) of the integer ViT rows
LLAMA_VARIANTS = ((8, 8), (4, 8))  # (wbits, abits) of the RTN integer rows
VIT_CALIB = 32  # calibration images of the ViT quantizers
MATCH_IOU = 0.5  # spotter word agreement: boxes overlapping at least this much
DEFAULTS = {"models": list(MODELS), "batch": 64, "repeat": 10, "seed": 0, "vit_checkpoint": None,
            "vit_random": False, "llama_checkpoint": None, "llama_batch": 1, "llama_tokens": None,
            "spotter_checkpoint": None, "spotter_images": 4, "spotter_size": 256}


def add_arguments(parser) -> None:
    """Declare the benchmark options on an argparse parser."""
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), metavar="MODEL",
                        help=f"models to run, any of {' '.join(MODELS)} (default: all)")
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"], help="ViT images per batch (default 64)")
    parser.add_argument("--repeat", type=int, default=DEFAULTS["repeat"],
                        help="timed rounds; best and median are reported (default 10)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of inputs and random weights")
    parser.add_argument("--vit-checkpoint", default=None,
                        help="refq ViT .npz or converted timm checkpoint (default: the shipped Fashion-MNIST ViT, "
                             "or random weights when it is absent)")
    parser.add_argument("--vit-random", action="store_true",
                        help="use a seeded random ViT (default config) even if the shipped weights exist")
    parser.add_argument("--llama-checkpoint", default=None,
                        help="llama2.c .bin checkpoint, e.g. stories260K.bin (the model is skipped without it)")
    parser.add_argument("--llama-batch", type=int, default=DEFAULTS["llama_batch"],
                        help="token sequences per batch (default 1)")
    parser.add_argument("--llama-tokens", type=int, default=None,
                        help="tokens per sequence (default: the model's seq_len)")
    parser.add_argument("--spotter-checkpoint", default=None,
                        help="spotter .npz (default: the shipped refq/weights/spotter.npz; skipped when absent)")
    parser.add_argument("--spotter-images", type=int, default=DEFAULTS["spotter_images"],
                        help="synthetic scenes per batch (default 4)")
    parser.add_argument("--spotter-size", type=int, default=DEFAULTS["spotter_size"],
                        help="side of the square synthetic scenes in pixels (default 256)")


# ---- timing and agreement -------------------------------------------------------------------------------

def logit_agreement(ref: np.ndarray, other: np.ndarray) -> dict:
    """Argmax agreement over the last axis, max |difference| and ||other - ref|| / ||ref|| of two logit arrays."""
    ref64, other64 = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    if ref64.shape != other64.shape or ref64.size == 0:
        raise ValueError(f"logit_agreement: shapes {ref64.shape} and {other64.shape}, expected equal non-empty")
    norm = float(np.linalg.norm(ref64))
    return {"argmax_agreement": float(np.mean(ref64.argmax(-1) == other64.argmax(-1))),
            "max_abs_logit_diff": float(np.abs(other64 - ref64).max()),
            "rel_logit_error": float(np.linalg.norm(other64 - ref64) / norm) if norm > 0 else float("nan")}


def timing_rows(variants: list[dict], times: dict[str, np.ndarray], items: int) -> list[dict]:
    """One row per variant (dicts with 'name' and agreement fields): best/median ms, items/s, speed vs 'float'."""
    float_best = float(times["float"].min())
    rows = []
    for v in variants:
        t = times[v["name"]]
        best = float(t.min())
        rows.append(dict(v, best_ms=1e3 * best, median_ms=1e3 * float(np.median(t)), per_second=items / best,
                         speedup_vs_float=float_best / best))
    return rows


def _check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"bench e2e: {name.replace('_', '-')}={value}, expected >= 1")


# ---- ViT ------------------------------------------------------------------------------------------------

def load_vit_model(checkpoint, random_weights: bool, rng: np.random.Generator):
    """(params, cfg, description): --vit-checkpoint, the shipped ViT, or seeded random weights."""
    from refq.models import vit
    from refq.pretrained import VIT_FMNIST

    if checkpoint is not None and random_weights:
        raise ValueError(f"bench e2e: --vit-checkpoint {checkpoint} and --vit-random exclude each other")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise ValueError(f"bench e2e: --vit-checkpoint {checkpoint} not found")
    if checkpoint is not None or (not random_weights and VIT_FMNIST.exists()):
        from refq.sardfq.pipeline import load_model

        params, cfg, _ = load_model(checkpoint)  # None: the shipped ViT
        return params, cfg, str(checkpoint) if checkpoint is not None else f"shipped {VIT_FMNIST.name}"
    cfg = vit.ViTConfig()
    reason = "--vit-random" if random_weights else f"{VIT_FMNIST.name} not found"
    return vit.init_params(cfg, rng), cfg, f"random weights ({reason})"


def bench_vit(params: dict, cfg, weights: str, batch: int, repeat: int, rng: np.random.Generator, log) -> dict:
    """Float ViT vs the integer QuantOps path at W8A8 and W4A4 on one batch of Gaussian-noise images."""
    from refq.autograd import Tensor, no_grad
    from refq.models import vit
    from refq.sardfq.quant_vit import QuantOps, init_quantizers

    shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
    calib = rng.standard_normal((VIT_CALIB,) + shape).astype(np.float32)  # [32, C, H, W]
    x = rng.standard_normal((batch,) + shape).astype(np.float32)  # [B, C, H, W]

    def logits(ops):
        def call():
            with no_grad():
                return vit.forward(params, cfg, Tensor(x), ops=ops).data  # [B, classes]
        return call

    functions = {"float": logits(vit.FLOAT_OPS)}
    for wbits, abits in VIT_VARIANTS:
        log(f"vit: fitting the W{wbits}A{abits} quantizers on {VIT_CALIB} calibration images")
        ops = init_quantizers(params, cfg, QuantOps(wbits, abits), calib)
        ops.integer = True
        functions[f"W{wbits}A{abits} int"] = logits(ops)
    log(f"vit: warm-up, then {repeat} interleaved rounds of {len(functions)} forwards of {batch} images")
    outputs = {name: fn() for name, fn in functions.items()}
    times = interleaved_times(functions, repeat)
    variants = [{"name": "float", "wbits": None, "abits": None, **logit_agreement(outputs["float"], outputs["float"])}]
    variants += [{"name": f"W{w}A{a} int", "wbits": w, "abits": a,
                  **logit_agreement(outputs["float"], outputs[f"W{w}A{a} int"])} for w, a in VIT_VARIANTS]
    return {"model": "vit", "status": "ok", "weights": weights, "batch": batch, "unit": "images",
            "input": f"{batch}x{'x'.join(map(str, shape))} standard-normal noise",
            "config": {"embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads,
                       "num_tokens": cfg.num_tokens, "num_classes": cfg.num_classes},
            "agreement": "argmax of the class logits, same images", "rows": timing_rows(variants, times, batch)}


# ---- stories260K (llama2.c) -----------------------------------------------------------------------------

def load_llama_model(checkpoint):
    """(params, LlamaConfig) of a llama2.c checkpoint; ValueError naming a missing file."""
    from refq.io.llama2c import read_checkpoint
    from refq.models.llama import LlamaConfig

    if not Path(checkpoint).is_file():
        raise ValueError(f"bench e2e: --llama-checkpoint {checkpoint} not found")
    params, config = read_checkpoint(checkpoint)
    return params, LlamaConfig.from_dict(config)


def bench_llama(params: dict, cfg, weights: str, batch: int, tokens: int | None, repeat: int,
                rng: np.random.Generator, log) -> dict:
    """Float llama forward vs RTN W8A8 / W4A8 on the integer kernels, on sequences sampled from the model."""
    from refq.aser.apply import QuantizedOps, llama_groups, llama_linear_weights, quantize_layers
    from refq.aser.calibrate import calibrate_llama, generate_tokens
    from refq.aser.settings import QuantSettings
    from refq.autograd import no_grad
    from refq.models import llama

    tokens = cfg.seq_len if tokens is None else tokens
    if tokens > cfg.seq_len:
        raise ValueError(f"bench e2e: llama-tokens={tokens} exceeds the model's seq_len {cfg.seq_len}")
    log(f"llama: sampling {batch} x {tokens} tokens from the float model")
    stream = generate_tokens(params, cfg, batch * tokens, rng)
    ids = stream[:batch * tokens].reshape(batch, tokens)  # [B, T]
    stats = calibrate_llama(params, cfg, ids[0])  # RTN reads no statistics; quantize_layers checks them
    weights_by_name = llama_linear_weights(params, cfg)

    def logits(ops):
        def call():
            with no_grad():
                return llama.forward(ids, params, cfg, ops).data  # [B, T, V]
        return call

    functions = {"float": logits(llama.FLOAT_OPS)}
    for wbits, abits in LLAMA_VARIANTS:
        layers = quantize_layers(weights_by_name, stats, "rtn", QuantSettings(wbits=wbits, abits=abits),
                                 llama_groups(cfg))
        functions[f"RTN W{wbits}A{abits} int"] = logits(QuantizedOps(layers, integer=True))
    log(f"llama: warm-up, then {repeat} interleaved rounds of {len(functions)} forwards")
    outputs = {name: fn() for name, fn in functions.items()}
    times = interleaved_times(functions, repeat)
    variants = [{"name": "float", "wbits": None, "abits": None, **logit_agreement(outputs["float"], outputs["float"])}]
    variants += [{"name": f"RTN W{w}A{a} int", "wbits": w, "abits": a,
                  **logit_agreement(outputs["float"], outputs[f"RTN W{w}A{a} int"])} for w, a in LLAMA_VARIANTS]
    return {"model": "llama", "status": "ok", "weights": weights, "batch": batch, "tokens": tokens,
            "unit": "tokens", "input": f"{batch}x{tokens} tokens sampled from the float model",
            "config": {"dim": cfg.dim, "hidden_dim": cfg.hidden_dim, "n_layers": cfg.n_layers,
                       "vocab_size": cfg.vocab_size},
            "agreement": "argmax of the next-token logits at every position",
            "rows": timing_rows(variants, times, batch * tokens)}


# ---- spotter --------------------------------------------------------------------------------------------

def word_agreement(ref: list[list[dict]], other: list[list[dict]], iou: float = MATCH_IOU) -> dict:
    """Words found by both (same image, same text, box IoU >= iou, one-to-one) over the words found by either."""
    from refq.spotter.boxes import aabb_iou

    if len(ref) != len(other):
        raise ValueError(f"word_agreement: {len(ref)} and {len(other)} images")
    matched = n_ref = n_other = 0
    for a, b in zip(ref, other):
        n_ref, n_other = n_ref + len(a), n_other + len(b)
        if not a or not b:
            continue
        overlap = aabb_iou(np.asarray([w["box"] for w in a]), np.asarray([w["box"] for w in b]))  # [Na, Nb]
        used = set()
        for i, word in enumerate(a):
            for j in np.argsort(-overlap[i]):
                if overlap[i, j] < iou:
                    break
                if j not in used and b[j]["text"] == word["text"]:
                    used.add(j)
                    matched += 1
                    break
    union = n_ref + n_other - matched
    return {"word_agreement": matched / union if union else 1.0, "words": n_other, "words_matched": matched}


def score_map(params: dict, cfg, images: list[np.ndarray], ops=None) -> np.ndarray:
    """Detection score probabilities [B, h, w] of the spotter on the (padded) images."""
    from refq.autograd import Tensor, no_grad
    from refq.spotter import model as M
    from refq.spotter.decode import pad_images

    from refq.models.ops import FLOAT_OPS

    ops = FLOAT_OPS if ops is None else ops
    padded, _ = pad_images(images)
    with no_grad():
        score_logits, _ = M.det_head(params, cfg, M.backbone(params, Tensor(M.normalize_images(padded)), ops), ops)
    return 1.0 / (1.0 + np.exp(-score_logits.data[:, 0].astype(np.float64)))  # [B, h, w]


def bench_spotter(params: dict, cfg, weights: str, n_images: int, size: int, repeat: int,
                  rng: np.random.Generator, log) -> dict:
    """Float vs int8 spotter, full pipeline (`spot_batch`) on seeded synthetic scenes."""
    from refq.spotter.decode import spot_batch
    from refq.spotter.quantized import quantize_spotter
    from refq.spotter.synth import generate_scene

    if size < 32:
        raise ValueError(f"bench e2e: spotter-size={size}, expected >= 32")
    log(f"spotter: generating {n_images} synthetic {size}x{size} scenes")
    images = [generate_scene(rng, size=(size, size))[0] for _ in range(n_images)]  # uint8 [H, W] each
    int8_ops = quantize_spotter(params, cfg)
    functions = {"float": lambda: spot_batch(params, cfg, images),
                 "int8": lambda: spot_batch(params, cfg, images, ops=int8_ops)}
    log(f"spotter: warm-up, then {repeat} interleaved rounds of float and int8 spotting")
    outputs = {name: fn() for name, fn in functions.items()}
    times = interleaved_times(functions, repeat)
    score_diff = float(np.abs(score_map(params, cfg, images, int8_ops) - score_map(params, cfg, images)).max())
    variants = [{"name": "float", "wbits": None, "abits": None, "max_abs_score_diff": 0.0,
                 **word_agreement(outputs["float"], outputs["float"])},
                {"name": "int8", "wbits": 8, "abits": 8, "max_abs_score_diff": score_diff,
                 **word_agreement(outputs["float"], outputs["int8"])}]
    return {"model": "spotter", "status": "ok", "weights": weights, "batch": n_images, "unit": "images",
            "input": f"{n_images} synthetic {size}x{size} scenes",
            "config": {"tasks": cfg.tasks, "recognizer": cfg.recognizer},
            "agreement": f"words found by both (same text, IoU >= {MATCH_IOU}) / words found by either",
            "rows": timing_rows(variants, times, n_images)}


# ---- run and report -------------------------------------------------------------------------------------

def run(args) -> dict:
    """One record per requested model (timing rows, or status 'skipped' with the reason), with the machine."""
    from refq.bench import describe_machine, machine_info

    opts = {name: getattr(args, name, default) for name, default in DEFAULTS.items()}
    _check_positive(repeat=opts["repeat"], batch=opts["batch"], llama_batch=opts["llama_batch"],
                    llama_tokens=opts["llama_tokens"], spotter_images=opts["spotter_images"])
    for name in opts["models"]:
        if name not in MODELS:
            raise ValueError(f"bench e2e: unknown model {name!r}, expected some of {MODELS}")

    def log(msg: str) -> None:
        print(f"bench e2e: {msg}", file=sys.stderr, flush=True)

    info = machine_info()
    log(describe_machine(info))
    records = []
    for name in dict.fromkeys(opts["models"]):
        rng = np.random.default_rng([opts["seed"], MODELS.index(name)])  # a model's inputs do not depend on the others
        if name == "vit":
            params, cfg, weights = load_vit_model(opts["vit_checkpoint"], opts["vit_random"], rng)
            records.append(bench_vit(params, cfg, weights, opts["batch"], opts["repeat"], rng, log))
        elif name == "llama":
            if opts["llama_checkpoint"] is None:
                records.append({"model": "llama", "status": "skipped",
                                "reason": "no --llama-checkpoint given (e.g. stories260K.bin)"})
                continue
            params, cfg = load_llama_model(opts["llama_checkpoint"])
            records.append(bench_llama(params, cfg, str(opts["llama_checkpoint"]), opts["llama_batch"],
                                       opts["llama_tokens"], opts["repeat"], rng, log))
        else:
            from refq.spotter.infer import SPOTTER_NPZ, load_spotter

            path = opts["spotter_checkpoint"]
            if path is None and not SPOTTER_NPZ.exists():
                records.append({"model": "spotter", "status": "skipped",
                                "reason": f"no spotter weights ({SPOTTER_NPZ.name} not found; "
                                          "pass --spotter-checkpoint)"})
                continue
            params, cfg, _ = load_spotter(path)
            weights = str(path) if path is not None else f"shipped {SPOTTER_NPZ.name}"
            records.append(bench_spotter(params, cfg, weights, opts["spotter_images"], opts["spotter_size"],
                                         opts["repeat"], rng, log))
    return {"repeat": opts["repeat"], "seed": opts["seed"], "models": records, "machine": info}


AGREEMENT_COLUMNS = {"vit": ("argmax_agreement", "max_abs_logit_diff", "argmax agree", "max|dlogit|"),
                     "llama": ("argmax_agreement", "max_abs_logit_diff", "argmax agree", "max|dlogit|"),
                     "spotter": ("word_agreement", "max_abs_score_diff", "word agree", "max|dscore|")}
TITLES = {"vit": "ViT", "llama": "stories260K (llama2.c)", "spotter": "spotter"}


def format_table(result: dict) -> str:
    """The human-readable report: machine line, then per model a title line and one row per variant."""
    from refq.bench import describe_machine

    lines = [f"machine: {describe_machine(result['machine'])}; best / median of {result['repeat']} "
             "interleaved rounds"]
    for record in result["models"]:
        name = record["model"]
        if record["status"] != "ok":
            lines.append(f"{TITLES[name]}: skipped: {record['reason']}")
            continue
        agree_key, diff_key, agree_title, diff_title = AGREEMENT_COLUMNS[name]
        lines.append(f"{TITLES[name]}: {record['weights']}; {record['input']}; agreement = {record['agreement']}")
        unit = f"{record['unit']}/s"
        lines.append(f"  {'':<14} {'best ms':>9} {'median ms':>10} {unit:>10} {'vs float':>8}"
                     f" {agree_title:>12} {diff_title:>11}")
        for row in record["rows"]:
            lines.append(f"  {row['name']:<14} {row['best_ms']:>9.2f} {row['median_ms']:>10.2f} "
                         f"{row['per_second']:>10.1f} {row['speedup_vs_float']:>7.2f}x"
                         f" {row[agree_key]:>12.4f} {row[diff_key]:>11.2e}")
    return "\n".join(lines)
