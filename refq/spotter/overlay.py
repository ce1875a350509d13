"""Draw spotted words on an image: boxes, transcriptions and scores, colour-coded against GT.

Without ground truth every predicted box is drawn in blue. With ground truth
(a list of `SynthWord`-like (box, text, dnc) tuples) the image is scored with
the ICDAR 2015 end-to-end rules of `evaluate.py`:

* green: detection matched to a GT word and read correctly;
* red: a false detection, or a matched detection that was misread
  (the label then shows "pred | gt");
* grey: detection ignored because it lies on a do-not-care ("###") region;
* orange (thin): GT word that no detection matched (a miss).

The image is upscaled (default x2) so that labels stay legible on 256 px scenes.

References:
    docs/spotter.md, T7 (boxes colour-coded against GT, with text and score
    labels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from refq.spotter.evaluate import match_words, transcription_match

GREEN, RED, GREY, ORANGE, BLUE = (40, 200, 60), (230, 40, 40), (150, 150, 150), (255, 150, 0), (40, 110, 255)


def _record(word) -> dict:
    """A prediction as a dict with 'box' and 'text' (and optional scores) from a dict or a (box, text, ...) tuple."""
    if isinstance(word, dict):
        if "box" not in word:
            raise ValueError(f"draw_overlay: prediction {word} has no 'box'")
        return word
    return {"box": list(word[0]), "text": str(word[1])}


def _label(rec: dict) -> str:
    """'text 0.93' with the detection (or recognition) score when present."""
    score = rec.get("rec_score", rec.get("det_score"))
    return rec.get("text", "") if score is None else f"{rec.get('text', '')} {float(score):.2f}"


def draw_overlay(image, words, out_png, gt=None, scale: int = 2) -> Path:
    """Save an RGB PNG of image (uint8 [H, W] or [H, W, 3]) with the predicted words drawn; returns the path."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"draw_overlay: image has dtype {img.dtype} and shape {img.shape}, expected uint8 [H, W(, 3)]")
    if scale < 1:
        raise ValueError(f"draw_overlay: scale={scale} must be at least 1")
    canvas = Image.fromarray(img).convert("RGB")
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=6 * scale)
    recs = [_record(w) for w in words]
    colours = [BLUE] * len(recs)
    labels = [_label(r) for r in recs]
    if gt is not None:
        gt = list(gt)
        gt_boxes = np.array([g[0] for g in gt], dtype=np.float64).reshape(-1, 4)
        gt_texts = [g[1] for g in gt]
        det_boxes = np.array([r["box"] for r in recs], dtype=np.float64).reshape(-1, 4)
        m = match_words(gt_boxes, gt_texts, det_boxes)
        colours = [GREY if m.det_dnc[d] else RED for d in range(len(recs))]
        matched_gt = set()
        for g, d in m.pairs:
            matched_gt.add(g)
            if transcription_match(gt_texts[g], recs[d].get("text", "")):
                colours[d] = GREEN
            else:
                labels[d] = f"{labels[d]} | {gt_texts[g]}"
        for g, box in enumerate(gt_boxes):
            if g not in matched_gt and not m.gt_dnc[g]:
                draw.rectangle(tuple(box * scale), outline=ORANGE, width=1)
    for rec, colour, label in zip(recs, colours, labels):
        x0, y0, x1, y1 = (float(v) * scale for v in rec["box"])
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        if label:
            height = draw.textbbox((0, 0), label, font=font)[3] + 3
            ty = y0 - height if y0 >= height else y1 + 2  # above the box, or below it at the top edge
            draw.rectangle(draw.textbbox((x0, ty), label, font=font), fill=colour)
            draw.text((x0, ty), label, fill=(255, 255, 255), font=font)
    out = Path(out_png)
    canvas.save(out)
    return out
