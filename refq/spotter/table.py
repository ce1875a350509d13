"""The spotter ablation of the paper's two claims, measured in miniature on a held-out synthetic test set.

Rows (docs/spotter.md T10, the paper's claims in miniature):
(a) joint vs separate: the joint model (one shared backbone for detection and recognition) against a
    detection-only model followed by a recognition-only model (two backbones): detection P/R/F,
    end-to-end F, word accuracy on GT boxes, parameters and images per second of the whole pipeline;
(b) FCR vs recurrent: recognition-only models with the fully convolutional recognizer and with a
    BiLSTM head: word accuracy, CER and milliseconds per word of the recognition branch (text pooling +
    recognizer + greedy decoding, features given);
(c) float vs int8: the joint model with every convolution on the int8 kernels (`quantized.py`).
The abstract claims FCR "dramatically improves inference speed" and sharing "reduces the computational
load" and improves end-to-end accuracy; the table reports what these small models show, not the paper's
numbers (not available to refq, docs/spotter.md).

References: Sui et al., ICPR 2018 (abstract: joint vs separate, FCR vs CRNN); docs/spotter.md, T10.
"""
from __future__ import annotations

import time

import numpy as np

from refq.autograd import Tensor, no_grad
from refq.models.ops import FLOAT_OPS, ModelOps
from refq.spotter import model as M
from refq.spotter.decode import recognize, spot_batch
from refq.spotter.evaluate import recognition_metrics
from refq.spotter.infer import evaluate_arrays, load_arrays, load_spotter, recognize_gt, score_spotted
from refq.spotter.quantized import quantize_spotter, weight_bytes


def spot_separate(det: tuple, rec: tuple, images, batch_size: int = 8) -> list[list[dict]]:
    """Two-model pipeline: boxes from a detection-only model, texts from a recognition-only model's own backbone."""
    (dp, dcfg), (rp, rcfg) = det, rec
    out = []
    for s in range(0, len(images), batch_size):
        chunk = [np.asarray(im) for im in images[s:s + batch_size]]
        found = spot_batch(dp, dcfg, chunk, drop_empty=False)
        boxes = np.array([r["box"] for recs in found for r in recs], np.float64).reshape(-1, 4)
        owner = np.array([b for b, recs in enumerate(found) for _ in recs], np.int64)
        with no_grad():
            feats = M.backbone(rp, Tensor(M.normalize_images(np.stack(chunk))))  # [B, C, h, w]
        texts, conf = recognize(rp, rcfg, feats, boxes, owner)
        k = 0
        for recs in found:
            kept = []
            for r in recs:
                if texts[k]:
                    kept.append({**r, "text": texts[k], "rec_score": float(conf[k]),
                                 "score": r["det_score"] * float(conf[k])})
                k += 1
            out.append(kept)
    return out


def recognizer_ms_per_word(params: dict, cfg: M.SpotterConfig, images, words, batch_size: int = 8,
                           ops: ModelOps = FLOAT_OPS) -> float:
    """Wall-clock milliseconds per GT word of the recognition branch alone (features precomputed)."""
    total, n_words = 0.0, 0
    for s in range(0, len(images), batch_size):
        sel = [(b, w) for b, ws in enumerate(words[s:s + batch_size]) for w in ws if not w.dnc]
        if not sel:
            continue
        with no_grad():
            feats = M.backbone(params, Tensor(M.normalize_images(np.stack(images[s:s + batch_size]))), ops)
        start = time.perf_counter()
        recognize(params, cfg, feats, np.array([w.box for _, w in sel], np.float64), np.array([b for b, _ in sel]),
                  ops=ops)
        total += time.perf_counter() - start
        n_words += len(sel)
    return 1000.0 * total / max(n_words, 1)


def _row(name: str, metrics: dict, params: dict, n_params: int, ops: ModelOps = FLOAT_OPS, **extra) -> dict:
    """One table row from `evaluate_arrays`-style metrics."""
    det, e2e, rec = metrics.get("detection"), metrics.get("end_to_end"), metrics.get("recognition")
    return {"model": name, "parameters": n_params, "weight_bytes": weight_bytes(params, ops),
            "det_p": det and det["precision"], "det_r": det and det["recall"], "det_f": det and det["hmean"],
            "e2e_f": e2e and e2e["hmean"], "word_acc": rec and rec["word_accuracy"], "cer": rec and rec["cer"],
            "images_per_second": metrics.get("images_per_second"), **extra}


def ablation(data_dir, joint=None, det=None, rec=None, lstm=None, int8: bool = True, limit: int | None = None,
             log=None) -> dict:
    """All rows that the given checkpoints allow (joint defaults to the shipped model); see the module doc."""
    log = log or (lambda msg: None)
    _, images, words = load_arrays(data_dir, limit)
    rows = []
    jp, jcfg, jman = load_spotter(joint)
    log("table: joint model")
    rows.append(_row("joint (shared backbone, FCR)", evaluate_arrays(jp, jcfg, images, words), jp, M.param_count(jp),
                     rec_ms_per_word=recognizer_ms_per_word(jp, jcfg, images, words), steps=jman.get("step")))
    if int8:
        log("table: joint model, int8")
        q_ops = quantize_spotter(jp, jcfg)
        rows.append(_row("joint, int8 convolutions", evaluate_arrays(jp, jcfg, images, words, ops=q_ops), jp,
                         M.param_count(jp), q_ops,
                         rec_ms_per_word=recognizer_ms_per_word(jp, jcfg, images, words, ops=q_ops),
                         steps=jman.get("step")))
    loaded = {}
    for key, path in (("det", det), ("rec", rec), ("lstm", lstm)):
        if path is not None:
            loaded[key] = load_spotter(path)
    if "det" in loaded and "rec" in loaded:
        log("table: separate detection + recognition models")
        (dp, dcfg, dman), (rp, rcfg, rman) = loaded["det"], loaded["rec"]
        start = time.perf_counter()
        spotted = spot_separate((dp, dcfg), (rp, rcfg), images)
        seconds = time.perf_counter() - start
        d, e = score_spotted(words, spotted)
        preds, gts = recognize_gt(rp, rcfg, images, words)
        metrics = {"detection": d.scores(), "end_to_end": e.scores(), "recognition": recognition_metrics(preds, gts),
                   "images_per_second": len(images) / seconds}
        both = {**{"det/" + k: v for k, v in dp.items()}, **{"rec/" + k: v for k, v in rp.items()}}
        rows.append(_row("separate (det-only + rec-only FCR)", metrics, both, M.param_count(both),
                         rec_ms_per_word=recognizer_ms_per_word(rp, rcfg, images, words),
                         steps=[dman.get("step"), rman.get("step")]))
    for key, name in (("rec", "recognition only, FCR (GT boxes)"), ("lstm", "recognition only, BiLSTM (GT boxes)")):
        if key in loaded:
            log(f"table: {name}")
            p, cfg, man = loaded[key]
            rows.append(_row(name, evaluate_arrays(p, cfg, images, words), p, M.param_count(p),
                             rec_ms_per_word=recognizer_ms_per_word(p, cfg, images, words),
                             recognizer_parameters=M.param_count(p, "rec."), steps=man.get("step")))
    return {"data": str(data_dir), "n_images": len(images), "rows": rows}


def _fmt(v, digits: int = 3) -> str:
    """A table cell: '-' for missing values, fixed decimals for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def to_markdown(result: dict) -> str:
    """The ablation as a markdown table."""
    head = ("model", "params", "KB", "det P", "det R", "det F", "e2e F", "word acc", "CER", "img/s", "rec ms/word")
    lines = [f"Held-out test set: {result['data']} ({result['n_images']} images)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = (r["model"], r["parameters"], r["weight_bytes"] // 1024, _fmt(r["det_p"]), _fmt(r["det_r"]),
                 _fmt(r["det_f"]), _fmt(r["e2e_f"]), _fmt(r["word_acc"]), _fmt(r["cer"]),
                 _fmt(r["images_per_second"], 1), _fmt(r.get("rec_ms_per_word"), 2))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
