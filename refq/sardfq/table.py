"""The SARDFQ table of docs/sardfq.md: main results, the W4A4 ablation, seeds, runtime (`refq vit table`).

Rows (each cell: top-1 mean +- sample std over the seeds, on the Fashion-MNIST test set by default):
* FP32;
* W4A4 and W6A6 with calibration images from real training images, Gaussian noise, PSAQ-ViT and SARDFQ
  (the layout of the paper's main table);
* the W4A4 ablation of the paper's component table: SARDFQ with every subset of {APA, MSR, SL} ("none" = CE + 0.05 TV inversion).
Calibration images depend on (model, method, switches, seed) only, so W4A4 and W6A6 share them; they
are cached in memory and, with a cache directory, on disk; `run_all` hands every finished run to `save`
and skips the runs already in its records. Cached images and records carry a fingerprint of
the model's parameters (`model_fingerprint`), so runs of another checkpoint are never mixed in.

`sweep_alpha` instead tunes alpha1 of L_APA on held-out images: SARDFQ W4A4 top-1 on Fashion-MNIST
*training* images (`refq vit table --sweep-alpha` takes the last 2000 by default; never the test set). The
network has seen those images in training, but every alpha1 is scored on the same images and the
quantity compared is the quantized model's accuracy, which depends on alpha1 only through the
calibration images.

References: SARDFQ, arXiv:2412.16553 (the W4A4 / W6A6 table and the APA / MSR / SL ablation); docs/sardfq.md,
S6 (alpha1 search).
"""
from __future__ import annotations

import hashlib
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from refq.sardfq import pipeline
from refq.sardfq.synthesis import SynthConfig

MAIN_CALIBS = (("real", "Real images"), ("noise", "Gaussian noise"), ("psaq", "PSAQ-ViT"), ("sardfq", "SARDFQ"))
MAIN_BITS = ((4, 4), (6, 6))
ABLATION = tuple(itertools.product((False, True), repeat=3))  # (apa, msr, sl)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def configurations() -> list[dict]:
    """Every run of the table (per seed): the main grid, then the ablation rows not already in it."""
    runs = [{"calib": c, "wbits": w, "abits": a, "apa": True, "msr": True, "sl": True}
            for (w, a) in MAIN_BITS for c, _ in MAIN_CALIBS]
    runs += [{"calib": "sardfq", "wbits": 4, "abits": 4, "apa": apa, "msr": msr, "sl": sl}
             for apa, msr, sl in ABLATION if not (apa and msr and sl)]
    return runs


def subset(name: str) -> list[dict]:
    """The runs of one part of the table: 'all', 'main' (calibration x bits), 'w4a4', 'ablation', or
    'ablation-extra' (the ablation rows that are not also in the main grid)."""
    runs = configurations()
    if name == "ablation-extra":
        return runs[len(MAIN_BITS) * len(MAIN_CALIBS):]
    if name == "main":
        return runs[:len(MAIN_BITS) * len(MAIN_CALIBS)]
    if name == "w4a4":
        return runs[:len(MAIN_CALIBS)]
    if name == "ablation":
        return [r for r in runs if r["calib"] == "sardfq" and r["wbits"] == 4]
    return runs


def model_fingerprint(params: dict) -> str:
    """First 12 hex digits of the sha256 over every parameter's name, dtype, shape and bytes (sorted by name)."""
    digest = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:12]


def check_records(records: list, fingerprint: str, source: str) -> list:
    """`records` unchanged if every one was made with the model `fingerprint`, else ValueError naming `source`."""
    other = sorted({str(r.get("model")) for r in records if r.get("model") != fingerprint})
    if other:
        raise ValueError(f"{source}: records of model(s) {', '.join(other)} (None: written before refq recorded "
                         f"the model), but this model is {fingerprint}; use another --out-json or re-run them")
    return records


def run_key(run: dict, seed: int) -> str:
    """Identifier of one run, e.g. 'sardfq-W4A4-apa1-msr0-sl1-seed0'."""
    switches = f"-apa{int(run['apa'])}-msr{int(run['msr'])}-sl{int(run['sl'])}" if run["calib"] == "sardfq" else ""
    return f"{run['calib']}-W{run['wbits']}A{run['abits']}{switches}-seed{seed}"


class ImageCache:
    """Calibration images per (method, switches, seed), in memory and optionally as .npy files."""

    def __init__(self, params, cfg, sc: SynthConfig, real_pool, directory=None, log=_stderr):
        self.params, self.cfg, self.sc, self.real_pool, self.log = params, cfg, sc, real_pool, log
        self.model = model_fingerprint(params)
        self.directory = Path(directory) if directory else None
        self.memory: dict[str, tuple[np.ndarray, float]] = {}

    def get(self, run: dict, seed: int) -> tuple[np.ndarray, float]:
        """(images, synthesis seconds) for a run, synthesised on the first request."""
        sc = replace(self.sc, apa=run["apa"], msr=run["msr"], sl=run["sl"])
        key = (run_key({**run, "wbits": 0, "abits": 0}, seed).replace("-W0A0", "")
               + f"-b{sc.batch}-it{sc.iters}x{sc.rounds}-alpha{sc.alpha1:g}-model{self.model}")
        if key in self.memory:
            return self.memory[key]
        path = self.directory / f"{key}.npz" if self.directory else None
        if path is not None and path.exists():
            with np.load(path) as f:
                self.memory[key] = (f["images"], float(f["seconds"]))
            return self.memory[key]
        images, _, seconds = pipeline.calibration_images(self.params, self.cfg, run["calib"], sc,
                                                         np.random.default_rng([seed, 0]), self.real_pool, self.log)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, images=images, seconds=seconds)
        self.memory[key] = (images, seconds)
        return self.memory[key]


def run_all(params, cfg, eval_x, eval_y, cache: ImageCache, seeds, recon_iters: int, records: list,
            save=None, runs=None, log=_stderr) -> list:
    """Run every configuration for every seed (skipping keys already in records), calling save(records)
    after each run; returns the records."""
    done = {r["key"] for r in records}
    runs = configurations() if runs is None else runs
    for seed in seeds:
        for run in runs:
            key = run_key(run, seed)
            if key in done:
                continue
            log(f"table: {key}")
            images, synth_seconds = cache.get(run, seed)
            sc = replace(cache.sc, apa=run["apa"], msr=run["msr"], sl=run["sl"])
            record, _, _ = pipeline.run_config(params, cfg, run["calib"], run["wbits"], run["abits"], seed, eval_x,
                                               eval_y, sc, recon_iters=recon_iters, images=images, log=log)
            record["seconds"].update(synthesis=synth_seconds, synthesis_per_image=synth_seconds / len(images))
            record["key"], record["model"] = key, cache.model
            records.append(record)
            log(f"table: {key} top-1 {100 * record['top1']:.2f}%")
            if save is not None:
                save(records)
    return records


def _cell(records: list, **match) -> str:
    """'mean ± std' (percent, sample std over seeds) of the records matching every field, '–' if none."""
    vals = [100 * r["top1"] for r in records if all(r.get(k) == v for k, v in match.items())]
    if not vals:
        return "–"
    return f"{np.mean(vals):.2f} ± {np.std(vals, ddof=1):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"


def to_markdown(records: list, fp_top1: float, meta: dict) -> str:
    """The docs/sardfq.md table: main results, ablation, and a runtime line."""
    lines = ["| Calibration | W4A4 | W6A6 |", "|---|---|---|", f"| FP32 (no quantization) | {100 * fp_top1:.2f} | |"]
    full = {"apa": True, "msr": True, "sl": True}
    for calib, label in MAIN_CALIBS:
        sw = full if calib == "sardfq" else {"apa": False, "msr": False, "sl": False}
        cells = [_cell(records, calib=calib, wbits=w, abits=a, **sw) for w, a in MAIN_BITS]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += ["", "| APA | MSR | SL | W4A4 top-1 |", "|---|---|---|---|"]
    for apa, msr, sl in ABLATION:
        mark = ["✓" if on else "–" for on in (apa, msr, sl)]
        cell = _cell(records, calib="sardfq", wbits=4, abits=4, apa=apa, msr=msr, sl=sl)
        lines.append(f"| {mark[0]} | {mark[1]} | {mark[2]} | {cell} |")
    per_image = {}
    for calib, switches in (("psaq", {}), ("sardfq", full)):
        secs = [r["seconds"]["synthesis_per_image"] for r in records
                if r["calib"] == calib and all(r[k] == v for k, v in switches.items())]
        per_image[calib] = f"{np.mean(secs):.2f}" if secs else "–"
    lines += ["", f"Seeds {meta['seeds']}; {meta['n_eval']} evaluation images; synthesis {meta['synth_iters']} "
                  f"iterations on {meta['batch']} images (alpha1 = {meta['alpha1']:g}); reconstruction "
                  f"{meta['recon_iters']} steps per unit. Synthesis time per image: PSAQ-ViT {per_image['psaq']} s, "
                  f"SARDFQ {per_image['sardfq']} s; {_runtime(meta)}."]
    return "\n".join(lines) + "\n"


def _runtime(meta: dict) -> str:
    """'total 12.3 min', or, for a table merged from parallel parts, their times and the longest one."""
    parts = meta.get("part_seconds") or []
    if not parts:
        return f"total {meta['seconds'] / 60:.1f} min"
    each = " + ".join(f"{s / 60:.1f}" for s in parts)
    return (f"{each} min in {len(parts)} parallel parts (wall time {max(parts) / 60:.1f} min), "
            f"then {meta['seconds'] / 60:.1f} min to merge")


def sweep_alpha(params, cfg, alphas, seeds, sc: SynthConfig, heldout_x, heldout_y, recon_iters: int, log=_stderr) -> list:
    """SARDFQ W4A4 top-1 on held-out images for every alpha1 (and seed)."""
    out = []
    for alpha in alphas:
        for seed in seeds:
            record, _, _ = pipeline.run_config(params, cfg, "sardfq", 4, 4, seed, heldout_x, heldout_y,
                                               replace(sc, alpha1=alpha), recon_iters=recon_iters, log=log)
            out.append({"alpha1": alpha, "seed": seed, "heldout_top1": record["top1"]})
            log(f"alpha1 {alpha:g} seed {seed}: held-out W4A4 top-1 {100 * record['top1']:.2f}%")
    return out
