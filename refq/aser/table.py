"""The README's ASER tables, as records and markdown lines (`refq lm table` prints them).

For each model (stories260K: perplexity, lower is better; MiniLM: mean cosine similarity to the FP
embeddings, higher is better), three tables:
  1. methods x settings W8A8 / W4A8 / W4A6 / W4A16, at the model's headline rank (stories260K r = 4,
     MiniLM r = 16), with the low-rank overhead and the mean layer-wise relative output error at W4A8;
  2. rank sweep 0 / 4 / 8 / 16 / 32 at W4A8 for LoRC, L2QER and ASER (+ the overhead of each rank);
  3. ablation at W4A8: RTN, ER only, AS only (rank 0), ER + AS (ASER), and variants (diagonal whitening,
     outlier masking, quantized low-rank input, GPTQ base), and for stories260K data-free calibration.
Progress goes to stderr. Everything is deterministic (the only randomness, the data-free sampler,
uses seed 0). Run with OPENBLAS_NUM_THREADS=1 to time it honestly on a shared machine.

References: ASER, AAAI 2025 (its reported trends: ASER < L2QER < LoRC < SmoothQuant in perplexity at W4A8,
Activation Smoothing adds to Error Reconstruction (its Table 2), a rank ablation (its Table 4)); docs/aser.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from refq.aser.settings import QuantSettings

SETTINGS = (("W8A8", 8, 8), ("W4A8", 4, 8), ("W4A6", 4, 6), ("W4A16", 4, None))
METHODS = ("rtn", "smoothquant", "gptq", "lorc", "l2qer", "aser")
RANKS = (0, 4, 8, 16, 32)
HEADLINE_RANK = {"stories260k": 4, "minilm": 16}
ABLATIONS = (("RTN (no AS, no ER)", "rtn", {}), ("ER only", "aser", {"smooth": False}),
             ("AS only (rank 0)", "aser", {"rank": 0}), ("ER + AS (ASER)", "aser", {}),
             ("ASER, diagonal whitening", "aser", {"whitening": "diag"}),
             ("ASER, outlier channels masked in Q_A", "aser", {"mask_outlier_acts": True}),
             ("ASER, low-rank branch reads Q_A(x)", "aser", {"lr_input_quantized": True}),
             ("ASER on GPTQ weights", "aser", {"base": "gptq"}))


def default_assets() -> Path:
    """REFQ_ASSETS, else shared/assets next to the checkout (as the tests assume)."""
    return Path(os.environ.get("REFQ_ASSETS", Path(__file__).resolve().parents[3] / "shared" / "assets"))


def settings_for(method: str, wbits: int, abits, r: int, **changes) -> QuantSettings:
    """The table's settings for one cell: rank r only where a method has a low-rank branch; then `changes`."""
    lowrank = method in ("lorc", "l2qer", "aser")
    return QuantSettings(wbits=wbits, abits=abits, rank=r if lowrank else None).with_(**changes)


def run_model(model: str, prepare, run_cell, metric: str, rank: int) -> tuple[dict, list[str]]:
    """All records and markdown lines of one model (a cell that appears twice is computed once)."""
    cache = {}

    def run(method, settings):
        if (method, settings) not in cache:
            cache[method, settings] = run_cell(method, settings)
        return cache[method, settings]

    records = {"main": [], "ranks": [], "ablation": []}
    lines = [f"### {model}: {metric} (FP {prepare['fp']})", "",
             "| method | " + " | ".join(name for name, _, _ in SETTINGS) + " | overhead | layer err (W4A8) |",
             "|---" * (len(SETTINGS) + 3) + "|"]
    for method in METHODS:
        cells, w4a8 = [], None
        for name, wbits, abits in SETTINGS:
            rec = run(method, settings_for(method, wbits, abits, rank))
            records["main"].append({"setting": name, "rank": rank, **rec})
            cells.append(f"{rec[metric]:.4f}")
            w4a8 = rec if name == "W4A8" else w4a8
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {w4a8['overhead_pct']:.1f}% | "
                     f"{w4a8['layer_err_mean']:.4f} |")
    lines += ["", f"Rank sweep at W4A8 ({metric}; overhead in parentheses)", "",
              "| method | " + " | ".join(f"r={r}" for r in RANKS) + " |", "|---" * (len(RANKS) + 1) + "|"]
    for method in ("lorc", "l2qer", "aser"):
        cells = []
        for r in RANKS:
            rec = run(method, settings_for(method, 4, 8, r))
            records["ranks"].append({"setting": "W4A8", "rank": r, **rec})
            cells.append(f"{rec[metric]:.4f} ({rec['overhead_pct']:.1f}%)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"Ablation at W4A8, rank {rank}", "", f"| variant | {metric} | layer err |", "|---|---|---|"]
    for label, method, changes in ABLATIONS:
        rec = run(method, settings_for(method, 4, 8, rank, **changes))
        records["ablation"].append({"variant": label, "rank": rank, **rec})
        lines.append(f"| {label} | {rec[metric]:.4f} | {rec['layer_err_mean']:.4f} |")
    return records, lines


def stories260k(assets: Path) -> tuple[dict, list[str]]:
    """Tables for stories260K (text calibration, plus a data-free calibration row set)."""
    from refq.aser.experiment import prepare_llama, run_llama

    args = (assets / "llama2c/stories260K.bin", assets / "llama2c/tok512.bin", assets / "text/tinystories_excerpt.txt")
    exp = prepare_llama(*args, verbose=True)
    rank = HEADLINE_RANK["stories260k"]
    records, lines = run_model("stories260K", {"fp": f"{exp.fp['ppl']:.4f}"},
                               lambda m, s: run_llama(exp, m, s, verbose=True), "ppl", rank)
    generated = prepare_llama(*args, calib="generated", seed=0, verbose=True)
    lines += ["", f"Data-free calibration (text sampled from the FP model, seed 0, {generated.calib_ids.size} "
                  f"tokens) at W4A8, rank {rank}", "", "| method | ppl (text calib.) | ppl (generated calib.) |",
              "|---|---|---|"]
    records["generated"] = []
    for method in METHODS:
        rec = run_llama(generated, method, settings_for(method, 4, 8, rank), verbose=True)
        records["generated"].append({"setting": "W4A8", "rank": rank, **rec})
        text_rec = next(r for r in records["main"] if r["method"] == method and r["setting"] == "W4A8")
        lines.append(f"| {method} | {text_rec['ppl']:.4f} | {rec['ppl']:.4f} |")
    records["fp"] = exp.fp
    return records, lines


def minilm(assets: Path) -> tuple[dict, list[str]]:
    """Tables for all-MiniLM-L6-v2 (calibrated on refq's sentences + the story sentences)."""
    from refq.aser.experiment import prepare_minilm, run_minilm

    exp = prepare_minilm(story_text=assets / "text/tinystories_excerpt.txt", verbose=True)
    records, lines = run_model("all-MiniLM-L6-v2", {"fp": "1.0000"},
                               lambda m, s: run_minilm(exp, m, s, verbose=True), "cosine_mean",
                               HEADLINE_RANK["minilm"])
    return records, lines
