"""Run a trained spotter: load a checkpoint, spot words in images, and score it on a synthetic dataset.

`load_spotter()` reads refq/weights/spotter.npz (the shipped joint model; its manifest holds the config,
the training command, the seed and the history). `evaluate_arrays` reports, on ground-truth files in
the ICDAR 2015 layout (docs/spotter.md T7):

* detection P/R/F (IoU > 0.5, '###' = do not care) and end-to-end P/R/F (case-insensitive, one
  leading/trailing GT punctuation mark forgiven) of the full pipeline (`decode.spot_batch`);
* word accuracy, CER and 1 - NED of the recognizer alone on the ground-truth boxes (T7,
  lower case and [0-9a-z] only);
* images per second of the full pipeline (wall clock, batches of `batch_size` images);
* on request (`errors=True`), what the end-to-end score counted against the model: matched words read
  wrong, cared words no detection matched, and detections that matched no word (`end_to_end_errors`).

References: Karatzas et al., ICDAR 2015 (Robust Reading protocol); docs/spotter.md, T7 and T8.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from refq.autograd import Tensor, no_grad
from refq.io.npz import load_with_config
from refq.models.ops import FLOAT_OPS, ModelOps
from refq.pretrained import SPOTTER_NPZ
from refq.spotter import model as M
from refq.spotter.decode import recognize, spot_batch
from refq.spotter.evaluate import (Counts, detection_counts, end_to_end_counts, match_words, pairwise_overlaps,
                                   recognition_metrics, transcription_match)
from refq.spotter.synth import list_samples, load_sample



def load_spotter(path: str | Path | None = None) -> tuple[dict, M.SpotterConfig, dict]:
    """(params, config, manifest) of a refq spotter checkpoint; the shipped model by default."""
    return load_with_config(SPOTTER_NPZ if path is None else path, M.SpotterConfig, M.check_params, "spotter",
                            " (train one with `refq spot train`)")


def spot_images(params: dict, cfg: M.SpotterConfig, images, batch_size: int = 8, **kw) -> list[list[dict]]:
    """`decode.spot_batch` over a list of uint8 grayscale images, batch_size images at a time."""
    images = list(images)
    out = []
    for s in range(0, len(images), batch_size):
        out.extend(spot_batch(params, cfg, images[s:s + batch_size], **kw))
    return out


def load_arrays(data_dir, limit: int | None = None) -> tuple[list[str], list[np.ndarray], list[list]]:
    """Names, uint8 images and ground-truth words (`SynthWord`) of a dataset folder (first `limit` images)."""
    names = list_samples(data_dir)[:limit]
    samples = [load_sample(data_dir, n) for n in names]
    images = [np.asarray(s[0]) for s in samples]
    for n, im in zip(names, images):
        if im.dtype != np.uint8 or im.ndim != 2:
            raise ValueError(f"load_arrays: {n} has shape {im.shape} and dtype {im.dtype}; the spotter reads "
                             f"grayscale uint8 images (generate with `refq spot synth` without --rgb)")
    return names, images, [s[1] for s in samples]


def recognize_gt(params: dict, cfg: M.SpotterConfig, images, words, batch_size: int = 8,
                 ops: ModelOps = FLOAT_OPS) -> tuple[list[str], list[str]]:
    """Recognizer outputs on the cared ground-truth boxes, and the GT texts (same order)."""
    preds, gts = [], []
    for s in range(0, len(images), batch_size):
        chunk = [np.asarray(im) for im in images[s:s + batch_size]]
        sel = [(b, w) for b, ws in enumerate(words[s:s + batch_size]) for w in ws if not w.dnc]
        if not sel:
            continue
        with no_grad():
            feats = M.backbone(params, Tensor(M.normalize_images(np.stack(chunk))), ops)  # [B, C, h, w]
        texts, _ = recognize(params, cfg, feats, np.array([w.box for _, w in sel], np.float64),
                             np.array([b for b, _ in sel], np.int64), ops=ops)
        preds += texts
        gts += [w.text for _, w in sel]
    return preds, gts


def _image_arrays(ws, recs) -> tuple[np.ndarray, list[str], np.ndarray]:
    """GT boxes [N, 4], GT texts [N] and detected boxes [M, 4] of one image's GT words and spotted records."""
    gt_boxes = np.array([w.box for w in ws], np.float64).reshape(-1, 4)
    det_boxes = np.array([r["box"] for r in recs], np.float64).reshape(-1, 4)
    return gt_boxes, [w.text for w in ws], det_boxes


def score_spotted(words, spotted) -> tuple[Counts, Counts]:
    """Dataset-level detection and end-to-end counts of spotted records against GT words (per image lists)."""
    det, e2e = Counts(), Counts()
    for ws, recs in zip(words, spotted):
        gt_boxes, gt_texts, det_boxes = _image_arrays(ws, recs)
        det = det + detection_counts(gt_boxes, gt_texts, det_boxes)
        e2e = e2e + end_to_end_counts(gt_boxes, gt_texts, det_boxes, [r["text"] for r in recs])
    return det, e2e


def end_to_end_errors(words, spotted, names=None) -> dict:
    """Per-word end-to-end failures of spotted records against GT words (per image lists), as lists of dicts:
    'misread' (a matched word whose text fails the end-to-end rule), 'missed' (a cared GT word matched by no
    detection; best IoU of any detection) and 'false' (a cared detection matching no word; best IoU with a GT box).
    """
    names = names if names is not None else [str(i) for i in range(len(words))]
    out = {"misread": [], "missed": [], "false": []}
    for name, ws, recs in zip(names, words, spotted):
        gt_boxes, gt_texts, det_boxes = _image_arrays(ws, recs)
        m = match_words(gt_boxes, gt_texts, det_boxes)
        iou, _ = pairwise_overlaps(gt_boxes, det_boxes)  # [N, M]
        for g, d in m.pairs:
            if not transcription_match(gt_texts[g], recs[d]["text"]):
                out["misread"].append({"image": name, "gt": gt_texts[g], "text": recs[d]["text"],
                                       "iou": round(float(iou[g, d]), 3)})
        matched_gt, matched_det = {g for g, _ in m.pairs}, {d for _, d in m.pairs}
        for g in range(len(ws)):
            if g not in matched_gt and not m.gt_dnc[g]:
                out["missed"].append({"image": name, "gt": gt_texts[g],
                                      "best_iou": round(float(iou[g].max()), 3) if len(recs) else 0.0})
        for d in range(len(recs)):
            if d not in matched_det and not m.det_dnc[d]:
                out["false"].append({"image": name, "text": recs[d]["text"], "score": round(recs[d]["score"], 3),
                                     "best_iou": round(float(iou[:, d].max()), 3) if len(ws) else 0.0})
    return out


def evaluate_arrays(params: dict, cfg: M.SpotterConfig, images, words, batch_size: int = 8,
                    log=None, errors: bool = False, names=None, **spot_kw) -> dict:
    """Detection / end-to-end P/R/F, GT-box word accuracy and CER, and images per second (see module doc)."""
    log = log or (lambda msg: None)
    result = {"n_images": len(images), "tasks": cfg.tasks}
    if cfg.has_det:
        start = time.perf_counter()
        spotted = []
        for s in range(0, len(images), batch_size):
            spotted.extend(spot_batch(params, cfg, images[s:s + batch_size], **spot_kw))
            if (s // batch_size) % 10 == 9:
                log(f"eval: spotted {min(s + batch_size, len(images))}/{len(images)} images")
        seconds = time.perf_counter() - start
        det, e2e = score_spotted(words, spotted)
        result.update(detection=det.scores(), end_to_end=e2e.scores() if cfg.has_rec else None,
                      images_per_second=len(images) / seconds, seconds=seconds)
        if errors and cfg.has_rec:
            result["errors"] = end_to_end_errors(words, spotted, names)
    if cfg.has_rec:
        preds, gts = recognize_gt(params, cfg, images, words, batch_size, spot_kw.get("ops", FLOAT_OPS))
        result["recognition"] = recognition_metrics(preds, gts) if gts else None
    return result


def evaluate_dataset(params: dict, cfg: M.SpotterConfig, data_dir, limit: int | None = None,
                     verbose: bool = False, **kw) -> dict:
    """`evaluate_arrays` on the images and gt_img_*.txt files of a dataset folder."""
    names, images, words = load_arrays(data_dir, limit)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else None
    return {"data": str(data_dir), **evaluate_arrays(params, cfg, images, words, log=log, names=names, **kw)}
