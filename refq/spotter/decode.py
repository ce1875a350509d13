"""From network outputs to words: score map -> boxes -> locality-aware NMS -> text pooling -> CTC decoding.

Detection (EAST Sec. 3.5 adapted to axis-aligned boxes, docs/spotter.md T8):
1. every feature pixel with score > `score_thresh` (0.8) proposes the box
   (cx - d_left, cy - d_top, cx + d_right, cy + d_bottom), c = its centre in image pixels;
2. candidates in raster order go through locality-aware NMS (IoU 0.2): runs of overlapping neighbours
   are merged with score weights, then standard NMS keeps the best merged box per word;
3. refq's additions: (a) step 2 runs separately on each 4-connected region of the thresholded score
   map, so candidates of two words whose positive regions do not touch are never merged into one box
   nor suppress each other (neighbouring words of a line are the detector's main failure otherwise);
   (b) each box's left and right edges are re-estimated from the candidate pixels nearest to them
   (`refine_edges`), since a pixel far from an edge of a long word cannot see it;
4. the box score is the mean pixel score of its merged candidates; boxes are clipped to the image;
5. refq's addition (c): boxes on one text line that overlap by at least half the line height are
   joined (`merge_line_fragments`). The score map dips over low punctuation inside a word
   ("$15,673", "$183.02"), which cuts its region in two, and each piece's geometry reaches into the
   other; two words of a line are separated by a space, and their boxes overlap less if at all.
   The threshold was chosen on the validation images (gap <= -0.5 x height; joining boxes that
   merely touch, gap <= 0, also joins neighbouring words and loses more than it gains).
Recognition: the kept boxes, widened by `cfg.rec_pad` x their height on both sides (as in training, so
that a box the detector drew a little short still holds the whole word), are pooled from the shared
features (`text_pool.py`), width-sorted into batches of similar width (little padding), and decoded
per column by greedy best path (default), prefix beam search, or a lexicon (exact CTC likelihood of
every lexicon word), see `ctc_decode.py`.
A word's record: box, text, det_score, rec_score and score = det_score * rec_score.

References:
    Zhou et al., "EAST", CVPR 2017, Sec. 3.5 (thresholding and locality-aware NMS).
    Graves et al., ICML 2006, Sec. 3.2 (best-path decoding). docs/spotter.md, T8.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from refq.autograd import Tensor, no_grad
from refq.models.ops import FLOAT_OPS, ModelOps
from refq.spotter import model as M
from refq.spotter.boxes import locality_aware_nms
from refq.spotter.ctc_decode import greedy_decode, lexicon_decode, prefix_beam_search
from refq.spotter.targets import pixel_centres

DECODERS = ("greedy", "beam", "lexicon")
SCORE_THRESH = 0.8
NMS_IOU = 0.2
LINE_MERGE_GAP = -0.5  # merge_line_fragments: join boxes whose gap is below this x their height (validation)
LINE_MIN_OVERLAP = 0.7  # ... whose vertical overlap is at least this fraction of the lower box
EDGE_BAND = 0.5  # refine_edges: pixels within half a box height of the nearest one vote for an edge
REC_BATCH = 32  # words per recognizer batch


def candidate_boxes(score: np.ndarray, geo: np.ndarray, stride: int, score_thresh: float = SCORE_THRESH):
    """Boxes [N, 4], scores [N] and distances [4, N] (t, r, b, l) of the pixels of score [h, w] above the threshold."""
    if score.ndim != 2 or geo.shape != (4,) + score.shape:
        raise ValueError(f"candidate_boxes: score {score.shape} and geo {geo.shape}, expected [h, w] and [4, h, w]")
    rows, cols = np.nonzero(score > score_thresh)  # raster order
    cy = pixel_centres(score.shape[0], stride)[rows]  # [N]
    cx = pixel_centres(score.shape[1], stride)[cols]  # [N]
    dist = geo[:, rows, cols].astype(np.float64)  # [4, N] (t, r, b, l)
    t, r, b, l = dist
    boxes = np.stack([cx - l, cy - t, cx + r, cy + b], axis=1)  # [N, 4]
    return boxes, score[rows, cols].astype(np.float64), dist


def refine_edges(boxes: np.ndarray, cand: np.ndarray, cand_scores: np.ndarray, dist: np.ndarray,
                 band: float = EDGE_BAND) -> np.ndarray:
    """Re-estimate each box's left (right) edge from its candidate pixels nearest to that edge; boxes [K, 4].

    A pixel sees about 120 px to each side, so the far edge of a long word is a guess from most of its
    pixels: x0 is the score-weighted mean of the candidates' x0 over the pixels whose d_left is within
    band * h of the smallest d_left inside the box (likewise x1 with d_right); y0 and y1 are the means
    over all the box's candidates. A box whose refinement degenerates is kept as it was.
    """
    centres = np.stack([cand[:, 0] + dist[3], cand[:, 1] + dist[0]], axis=1)  # [N, 2] pixel centres
    out = boxes.copy()
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        inside = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
        if not inside.any():
            continue
        c, w, d = cand[inside], cand_scores[inside], dist[:, inside]  # [n, 4], [n], [4, n]
        near_l = d[3] <= d[3].min() + band * (y1 - y0)  # [n]
        near_r = d[1] <= d[1].min() + band * (y1 - y0)  # [n]
        new = np.array([np.average(c[near_l, 0], weights=w[near_l]), np.average(c[:, 1], weights=w),
                        np.average(c[near_r, 2], weights=w[near_r]), np.average(c[:, 3], weights=w)])
        if new[2] - new[0] > 2.0 and new[3] - new[1] > 2.0:
            out[k] = new
    return out


def _fragment_pair(boxes: list, max_gap: float, min_overlap: float) -> tuple[int, int] | None:
    """The first pair (i < j) of boxes on one line that are close enough to be one word (see below), or None."""
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            height = min(a[3] - a[1], b[3] - b[1])
            v_overlap = min(a[3], b[3]) - max(a[1], b[1])
            gap = max(a[0], b[0]) - min(a[2], b[2])  # negative when they overlap horizontally
            if v_overlap >= min_overlap * height and gap <= max_gap * height:
                return i, j
    return None


def merge_line_fragments(boxes: np.ndarray, scores: np.ndarray, max_gap: float | None = LINE_MERGE_GAP,
                         min_overlap: float = LINE_MIN_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """Join boxes [K, 4] that are pieces of one word on a line; returns (boxes [K', 4], scores [K']).

    Two boxes are joined when their vertical overlap is at least `min_overlap` x the lower of the two
    heights and the horizontal gap between them (negative if they overlap) is at most `max_gap` x that
    height; the joined box is their union, its score the area-weighted mean. Repeated until no pair
    qualifies. max_gap=None: no merging. The inputs are not modified.
    """
    if max_gap is None or len(boxes) < 2:
        return boxes, scores
    boxes, scores = [b for b in np.asarray(boxes, np.float64)], list(np.asarray(scores, np.float64))
    areas = [float((b[2] - b[0]) * (b[3] - b[1])) for b in boxes]
    while (pair := _fragment_pair(boxes, max_gap, min_overlap)) is not None:
        i, j = pair
        total = areas[i] + areas[j]
        scores[i] = (scores[i] * areas[i] + scores[j] * areas[j]) / total if total > 0 else scores[i]
        boxes[i] = np.concatenate([np.minimum(boxes[i][:2], boxes[j][:2]), np.maximum(boxes[i][2:], boxes[j][2:])])
        areas[i] = total
        del boxes[j], scores[j], areas[j]
    return np.array(boxes).reshape(-1, 4), np.array(scores)


def detect_boxes(score: np.ndarray, geo: np.ndarray, stride: int, image_hw: tuple,
                 score_thresh: float = SCORE_THRESH, nms_iou: float = NMS_IOU,
                 merge_gap: float | None = LINE_MERGE_GAP) -> tuple[np.ndarray, np.ndarray]:
    """Final boxes [K, 4] (clipped to image_hw) and their mean pixel scores [K] of one image's maps."""
    cand, cand_scores, dist = candidate_boxes(score, geo, stride, score_thresh)  # raster order
    if len(cand) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    regions, n_regions = ndimage.label(score > score_thresh)  # 4-connected regions of the thresholded map
    region = regions[score > score_thresh]  # [N], same raster order as the candidates
    boxes, scores = [], []
    for r in range(1, n_regions + 1):
        sel = region == r
        merged, sums, counts = locality_aware_nms(cand[sel], cand_scores[sel], nms_iou)  # [k, 4], [k], [k]
        boxes.append(refine_edges(merged, cand[sel], cand_scores[sel], dist[:, sel]))
        scores.append(sums / counts)
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)  # [K, 4], [K]
    h, w = image_hw
    boxes = np.clip(boxes, 0.0, [w, h, w, h])
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 2.0) & ((boxes[:, 3] - boxes[:, 1]) >= 2.0)
    return merge_line_fragments(boxes[keep], scores[keep], merge_gap)


def width_batches(widths: np.ndarray, batch: int = REC_BATCH) -> list[np.ndarray]:
    """Indices of the words sorted by pooled width, cut into consecutive groups of at most `batch`."""
    order = np.argsort(widths, kind="stable")
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def pad_boxes(boxes: np.ndarray, pad: float) -> np.ndarray:
    """Boxes [R, 4] widened by pad x their height on the left and on the right."""
    grow = pad * (boxes[:, 3] - boxes[:, 1])  # [R]
    return boxes + np.stack([-grow, np.zeros_like(grow), grow, np.zeros_like(grow)], axis=1)


def recognize(p: dict, cfg: M.SpotterConfig, feats, boxes, batch_index, decoder: str = "greedy",
              lexicon=None, beam_width: int = 8, ops: ModelOps = FLOAT_OPS) -> tuple[list[str], np.ndarray]:
    """Texts and confidences of image-pixel boxes [R, 4] (read cfg.rec_pad x height wider) on [B, C, h, w] features."""
    if decoder not in DECODERS:
        raise ValueError(f"recognize: decoder={decoder!r}, expected one of {DECODERS}")
    if decoder == "lexicon" and not lexicon:
        raise ValueError("recognize: decoder='lexicon' needs a non-empty lexicon")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    texts, conf = [""] * len(boxes), np.zeros(len(boxes))
    if len(boxes) == 0:
        return texts, conf
    alphabet = cfg.alphabet
    boxes = pad_boxes(boxes, cfg.rec_pad)
    widths = M.roi_widths(cfg, boxes)  # [R]
    with no_grad():
        for idx in width_batches(widths):
            logits = M.recognizer(p, cfg, M.pool_rois(cfg, feats, boxes[idx], np.asarray(batch_index)[idx],
                                                      widths[idx]), widths[idx], ops).data  # [n, T, K]
            for row, i in enumerate(idx):
                frames = logits[row, :widths[i]]  # [W_i, K]
                ids, confidence, _ = greedy_decode(frames)
                if decoder == "beam":
                    best, logp = prefix_beam_search(frames, beam_width)[0]
                    ids, confidence = np.array(best, np.int32), float(np.exp(logp / max(len(frames), 1)))
                elif decoder == "lexicon":
                    word, logp = lexicon_decode(frames, lexicon, alphabet)
                    texts[i], conf[i] = word, float(np.exp(logp / max(len(word), 1)))
                    continue
                texts[i], conf[i] = alphabet.decode(ids), confidence
    return texts, conf


def pad_images(images) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """uint8 images (list or [B, H, W]) edge-padded to one common size, a multiple of 16; and their own sizes."""
    imgs = [np.asarray(im) for im in images]
    for k, im in enumerate(imgs):
        if im.dtype != np.uint8 or im.ndim != 2:
            raise ValueError(f"pad_images: image {k} has dtype {im.dtype} and shape {im.shape}, expected uint8 [H, W]")
    sizes = [im.shape for im in imgs]
    H = -(-max(s[0] for s in sizes) // 16) * 16
    W = -(-max(s[1] for s in sizes) // 16) * 16
    out = np.stack([np.pad(im, ((0, H - im.shape[0]), (0, W - im.shape[1])), mode="edge") for im in imgs])
    return out, sizes  # [B, H, W]


def spot_batch(p: dict, cfg: M.SpotterConfig, images, decoder: str = "greedy", lexicon=None,
               score_thresh: float = SCORE_THRESH, nms_iou: float = NMS_IOU,
               merge_gap: float | None = LINE_MERGE_GAP, drop_empty: bool = True,
               ops: ModelOps = FLOAT_OPS) -> list[list[dict]]:
    """Words of each grayscale uint8 image: [{'box', 'text', 'score', 'det_score', 'rec_score'}, ...] per image."""
    if not cfg.has_det:
        raise ValueError(f"spot_batch: a tasks={cfg.tasks!r} model has no detection head")
    if len(images) == 0:
        return []
    padded, sizes = pad_images(images)
    with no_grad():
        feats = M.backbone(p, Tensor(M.normalize_images(padded)), ops)  # [B, C, h, w]
        score_logits, geo = M.det_head(p, cfg, feats, ops)  # [B, 1, h, w], [B, 4, h, w]
    score = 1.0 / (1.0 + np.exp(-score_logits.data[:, 0].astype(np.float64)))  # [B, h, w]
    found = [detect_boxes(score[b], geo.data[b], cfg.stride, sizes[b], score_thresh, nms_iou, merge_gap)
             for b in range(len(sizes))]
    boxes = np.concatenate([f[0] for f in found])  # [R, 4]
    det_scores = np.concatenate([f[1] for f in found])  # [R]
    owner = np.concatenate([np.full(len(f[0]), b, np.int64) for b, f in enumerate(found)])  # [R] image index
    if cfg.has_rec:
        texts, rec_scores = recognize(p, cfg, feats, boxes, owner, decoder, lexicon, ops=ops)
    else:
        texts, rec_scores = [""] * len(boxes), np.ones(len(boxes))
    results = [[] for _ in sizes]
    for box, b, text, ds, rs in zip(boxes, owner, texts, det_scores, rec_scores):
        if drop_empty and cfg.has_rec and not text:
            continue
        results[b].append({"box": [round(float(v), 1) for v in box], "text": text, "score": float(ds * rs),
                           "det_score": float(ds), "rec_score": float(rs)})
    return results
