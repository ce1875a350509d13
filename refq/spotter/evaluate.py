"""ICDAR 2015 scoring: detection and end-to-end P/R/F, plus word accuracy and CER of a recognizer.

Detection (ICDAR 2015 "IoU" protocol, docs/spotter.md T7). Per image:
1. A ground-truth word with transcription "###" is do-not-care (dnc).
2. A detection is dnc when, for some dnc GT region g, |d n g| / |d| > 0.5
   (AREA_PRECISION_CONSTRAINT); dnc detections are removed from the counts.
3. Matching is one-to-one and greedy in GT order, then detection order: a
   pair matches when neither side is matched yet, neither is dnc, and
   IoU > 0.5 (strict). There is no search for the best pairing.
4. P = matched / #det_care and R = matched / #GT_care, with the counts summed
   over the whole dataset (not averaged per image); F = 2PR / (P + R).
Consequences: a word detected as two halves gets no credit (each half has
IoU <= 0.5 with the word), so it costs one missed GT and two false
detections; two detections on one word give one match and one false
detection. (ICDAR 2013's DetEval would credit the split; it is not this protocol.)

End-to-end (ICDAR 2015): the same geometric matching; a matched pair is
*correct* only if the transcriptions match, and only correct pairs count.
A matched but misread pair still uses up both its GT word and its detection.
Transcriptions are compared after upper-casing both; then, on the GT side
only, one leading and/or one trailing character from SPECIAL_CHARACTERS may be
dropped: GT "HELLO!" matches "hello", GT "(ok)" matches "OK", but GT
"HE!LO" does not match "HELO" (inner punctuation must be read) and GT "HELLO"
does not match "HELLO!" (the detection's punctuation is never dropped).

Recognition on GT boxes (docs/spotter.md T7): word accuracy = #(pred == gt) / N
and CER = sum ED(pred, gt) / sum |gt| with Levenshtein ED, both after
`normalize_word` (default: lower case, keep [0-9a-z], the usual STR practice).

References:
    Karatzas et al., "ICDAR 2015 competition on Robust Reading", ICDAR 2015
    (the Robust Reading Competition scoring scripts define the rules above).
    Levenshtein, "Binary codes capable of correcting deletions, insertions
    and reversals", 1966.
    docs/spotter.md, T7.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from refq.spotter.boxes import (aabb_area, aabb_intersection, aabb_iou, aabb_to_quad, is_axis_aligned,
                                polygon_overlaps, polygon_signed_area, quad_to_aabb)
from refq.spotter.icdar import (DONT_CARE, list_gt_files, list_result_files, read_icdar_gt,
                                read_icdar_result)
from refq.spotter.text_metrics import levenshtein

IOU_CONSTRAINT = 0.5
AREA_PRECISION_CONSTRAINT = 0.5
SPECIAL_CHARACTERS = "!?.:,*\"()\u00b7[]/'"


def as_geometry(boxes) -> np.ndarray:
    """float64 boxes [N, 4] (axis-aligned) or quads [N, 4, 2]; quads that are axis-aligned become boxes."""
    a = np.asarray(boxes, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 4))
    if a.ndim == 2 and a.shape[1] == 4:
        return a
    if a.ndim == 2 and a.shape[1] == 8:
        a = a.reshape(-1, 4, 2)
    if a.ndim != 3 or a.shape[1:] != (4, 2):
        raise ValueError(f"as_geometry: expected boxes [N, 4] or quads [N, 4, 2], got shape {np.shape(boxes)}")
    return quad_to_aabb(a) if np.all(is_axis_aligned(a)) else a


def pairwise_overlaps(gt, det) -> tuple[np.ndarray, np.ndarray]:
    """IoU [N, M] and area precision |g n d| / |d| [N, M] of GT and detected boxes or quads."""
    g, d = as_geometry(gt), as_geometry(det)
    if g.ndim == 2 and d.ndim == 2:
        iou = aabb_iou(g, d)  # [N, M]
        inter = aabb_intersection(g, d)  # [N, M]
        det_area = aabb_area(d)  # [M]
    else:
        gq = aabb_to_quad(g) if g.ndim == 2 else g  # [N, 4, 2]
        dq = aabb_to_quad(d) if d.ndim == 2 else d  # [M, 4, 2]
        iou, inter = polygon_overlaps(gq, dq)  # [N, M] each
        det_area = np.array([abs(polygon_signed_area(q)) for q in dq]).reshape(-1)  # [M]
    precision = np.divide(inter, det_area[None, :], out=np.zeros_like(inter), where=det_area[None, :] > 0)
    return iou, precision


class Matching(NamedTuple):
    """Result of one image's geometric matching."""
    pairs: list[tuple[int, int]]  # (gt index, det index), in matching order
    gt_dnc: np.ndarray  # [N] bool
    det_dnc: np.ndarray  # [M] bool


def match_words(gt_boxes, gt_texts, det_boxes) -> Matching:
    """ICDAR 2015 one-to-one greedy matching (IoU > 0.5) with do-not-care removal."""
    gt_dnc = np.array([t == DONT_CARE for t in gt_texts], dtype=bool).reshape(-1)
    iou, precision = pairwise_overlaps(gt_boxes, det_boxes)  # [N, M] each
    if iou.shape[0] != len(gt_dnc):
        raise ValueError(f"match_words: {iou.shape[0]} GT boxes but {len(gt_dnc)} transcriptions")
    det_dnc = np.any(precision[gt_dnc] > AREA_PRECISION_CONSTRAINT, axis=0)  # [M]
    gt_used = gt_dnc.copy()
    det_used = det_dnc.copy()
    pairs = []
    for g in range(iou.shape[0]):
        for d in range(iou.shape[1]):
            if not gt_used[g] and not det_used[d] and iou[g, d] > IOU_CONSTRAINT:
                gt_used[g] = det_used[d] = True
                pairs.append((g, d))
    return Matching(pairs, gt_dnc, det_dnc)


def transcription_match(gt: str, det: str) -> bool:
    """ICDAR 2015 end-to-end rule: equal after upper-casing, forgiving one special char at each end of the GT."""
    gt, det = gt.upper(), det.upper()
    if gt == det:
        return True
    lead = len(gt) > 0 and gt[0] in SPECIAL_CHARACTERS
    trail = len(gt) > 0 and gt[-1] in SPECIAL_CHARACTERS
    return (lead and gt[1:] == det) or (trail and gt[:-1] == det) or (lead and trail and gt[1:-1] == det)


@dataclass(frozen=True)
class Counts:
    """Matched pairs and the numbers of care GT words and care detections (summable over images)."""
    matched: int = 0
    n_gt: int = 0
    n_det: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.matched + other.matched, self.n_gt + other.n_gt, self.n_det + other.n_det)

    def scores(self) -> dict:
        """Dataset-level P/R/F: 0 when a denominator is 0 (as the ICDAR script does)."""
        p = self.matched / self.n_det if self.n_det else 0.0
        r = self.matched / self.n_gt if self.n_gt else 0.0
        f = 2 * p * r / (p + r) if p + r > 0 else 0.0
        return {"precision": p, "recall": r, "hmean": f, "matched": self.matched, "n_gt_care": self.n_gt,
                "n_det_care": self.n_det}

    def sample_scores(self) -> dict:
        """One image's P/R by the ICDAR per-sample rules: no care GT gives R = 1 and P = 0 (1 without detections)."""
        if self.n_gt == 0:
            r, p = 1.0, (0.0 if self.n_det else 1.0)
        else:
            r, p = self.matched / self.n_gt, (self.matched / self.n_det if self.n_det else 0.0)
        return {"precision": p, "recall": r, "hmean": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def detection_counts(gt_boxes, gt_texts, det_boxes) -> Counts:
    """Detection counts of one image."""
    m = match_words(gt_boxes, gt_texts, det_boxes)
    return Counts(len(m.pairs), int((~m.gt_dnc).sum()), int((~m.det_dnc).sum()))


def end_to_end_counts(gt_boxes, gt_texts, det_boxes, det_texts) -> Counts:
    """End-to-end counts of one image: matched = geometric matches whose transcriptions match."""
    det_texts = list(det_texts)
    m = match_words(gt_boxes, gt_texts, det_boxes)
    if len(det_texts) != len(m.det_dnc):
        raise ValueError(f"end_to_end_counts: {len(m.det_dnc)} detections but {len(det_texts)} transcriptions")
    correct = sum(transcription_match(gt_texts[g], det_texts[d]) for g, d in m.pairs)
    return Counts(int(correct), int((~m.gt_dnc).sum()), int((~m.det_dnc).sum()))


def normalize_word(text: str, mode: str = "alnum") -> str:
    """'alnum': lower case, only [0-9a-z]; 'lower': lower case; 'exact': unchanged."""
    if mode == "alnum":
        return re.sub(r"[^0-9a-z]", "", text.lower())
    if mode == "lower":
        return text.lower()
    if mode == "exact":
        return text
    raise ValueError(f"normalize_word: unknown mode {mode!r}, expected 'alnum', 'lower' or 'exact'")


def recognition_metrics(preds, gts, mode: str = "alnum") -> dict:
    """Word accuracy, CER = sum ED / sum |gt| and 1 - NED of predictions against GT words (after normalize_word)."""
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts) or not gts:
        raise ValueError(f"recognition_metrics: need equally many (>= 1) predictions and GT words, "
                         f"got {len(preds)} and {len(gts)}")
    p = [normalize_word(s, mode) for s in preds]
    g = [normalize_word(s, mode) for s in gts]
    dist = [levenshtein(a, b) for a, b in zip(p, g)]
    total = sum(len(b) for b in g)
    if total == 0:
        raise ValueError(f"recognition_metrics: all {len(g)} GT words are empty after normalize_word mode={mode!r}")
    ned = [d / max(len(a), len(b)) if max(len(a), len(b)) else 0.0 for d, a, b in zip(dist, p, g)]
    return {"word_accuracy": sum(a == b for a, b in zip(p, g)) / len(g), "cer": sum(dist) / total,
            "one_minus_ned": 1.0 - sum(ned) / len(ned), "n_words": len(g)}


def _records_to_arrays(records, source: str) -> tuple[np.ndarray, list[str]]:
    """Prediction records ({'box' or 'poly', 'text'}) as geometry and transcriptions."""
    geoms, texts = [], []
    for k, rec in enumerate(records):
        if "poly" in rec:
            geoms.append(np.asarray(rec["poly"], dtype=np.float64).reshape(4, 2))
        elif "box" in rec:
            geoms.append(aabb_to_quad(np.asarray(rec["box"], dtype=np.float64).reshape(1, 4))[0])
        else:
            raise ValueError(f"{source}: prediction {k} has neither 'box' nor 'poly': {rec}")
        texts.append(str(rec.get("text", "")))
    return as_geometry(np.array(geoms).reshape(-1, 4, 2)), texts


def load_predictions(path) -> dict[str, list[dict]]:
    """{'img_1': [{'poly' or 'box', 'text'}, ...]} from a folder of res_img_{i}.txt or a JSON file."""
    path = Path(path)
    if path.is_dir():
        files = list_result_files(path)
        if not files:
            raise ValueError(f"load_predictions: no res_img_<i>.txt result files in {path}")
        return {name: [{"poly": w.quad.tolist(), "text": w.text} for w in read_icdar_result(p)]
                for name, p in files.items()}
    if not path.is_file():
        raise ValueError(f"load_predictions: {path} is neither a result folder nor a JSON file")
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        data = data["images"]
    if isinstance(data, list):
        if not all(isinstance(item, dict) and "image" in item and "words" in item for item in data):
            raise ValueError(f"load_predictions: {path}: a list must hold {{'image': ..., 'words': [...]}} items")
        return {Path(item["image"]).stem: item["words"] for item in data}
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        return {Path(name).stem: words for name, words in data.items()}
    raise ValueError(f"load_predictions: {path}: expected {{name: [words]}} or [{{'image', 'words'}}]")


def evaluate_folder(gt_dir, predictions: dict[str, list[dict]]) -> dict:
    """Detection and end-to-end scores of predictions {'img_i': [records]} against the GT files of gt_dir."""
    gt_files = list_gt_files(gt_dir)
    unknown = sorted(set(predictions) - set(gt_files))
    if unknown:
        raise ValueError(f"evaluate_folder: predictions for images without ground truth in {gt_dir}: {unknown[:5]}")
    det_total, e2e_total, per_image = Counts(), Counts(), []
    has_text = False
    for name, gt_path in gt_files.items():
        gt = read_icdar_gt(gt_path)
        gt_geom = as_geometry(np.array([w.quad for w in gt]).reshape(-1, 4, 2))
        gt_texts = [w.text for w in gt]
        det_geom, det_texts = _records_to_arrays(predictions.get(name, []), f"{name}")
        has_text |= any(det_texts)
        det = detection_counts(gt_geom, gt_texts, det_geom)
        e2e = end_to_end_counts(gt_geom, gt_texts, det_geom, det_texts)
        det_total, e2e_total = det_total + det, e2e_total + e2e
        per_image.append({"image": name, "detection": det.sample_scores(), "end_to_end": e2e.sample_scores()})
    return {"n_images": len(gt_files), "detection": det_total.scores(),
            "end_to_end": e2e_total.scores() if has_text else None, "per_image": per_image}
