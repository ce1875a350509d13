"""Losses of the joint spotter: dice on the score map, AABB IoU on the geometry, CTC on the pooled words.

* Dice (Milletari et al. 2016, Eq. 1; EAST-argman's classification loss), with the training mask m:
      L_cls = 1 - 2 sum(y p m) / (sum(y m) + sum(p m) + eps),   p = sigmoid(score logits)
* AABB IoU loss (Yu et al. 2016, UnitBox; EAST Eq. 6-8) on the positive pixels, distances (t, r, b, l):
      I = (min(t, t*) + min(b, b*)) (min(l, l*) + min(r, r*)),  U = A + A* - I,
      L_AABB = -log((I + 1) / (U + 1))            (the +1 smoothing of argman/EAST), averaged over positives
* Recognition: CTC on the per-column logits, 'mean' reduction (loss / label length, batch mean), docs/spotter.md T4.
* Joint loss (Sui et al. 2018 train both tasks together; weights: docs/spotter.md T4): L = w_cls L_cls + w_geo L_AABB + w_rec L_CTC. refq uses w_cls = 1 rather
  than argman's 0.01: with the dice loss alone on the score map it is the only signal for the
  background, and 0.01 made the score map lag far behind the geometry in short CPU runs.

References:
    Milletari et al., "V-Net", 3DV 2016, Eq. 1 (dice). Yu et al., "UnitBox", ACM MM 2016 (IoU loss).
    Zhou et al., "EAST", CVPR 2017, Sec. 3.4 (loss functions). Graves et al., ICML 2006 (CTC).
    Sui et al., ICPR 2018 (joint training). docs/spotter.md, T4.
"""
from __future__ import annotations

import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.spotter.ctc import ctc_loss

DICE_EPS = 1e-5


def dice_loss(prob, target, mask) -> Tensor:
    """1 - 2 sum(y p m) / (sum(y m) + sum(p m) + eps) of probabilities prob against target under mask (same shapes)."""
    prob = prob if isinstance(prob, Tensor) else Tensor(np.asarray(prob))
    target, mask = np.asarray(target, dtype=prob.dtype), np.asarray(mask, dtype=prob.dtype)
    if target.shape != prob.shape or mask.shape != prob.shape:
        raise ValueError(f"dice_loss: prob {prob.shape}, target {target.shape} and mask {mask.shape} differ")
    pm = prob * mask  # p m
    inter = (pm * target).sum()  # sum(y p m)
    denom = pm.sum() + (float((target * mask).sum()) + DICE_EPS)  # sum(p m) + sum(y m) + eps
    return 1.0 - inter * 2.0 / denom  # L_cls = 1 - 2 sum(y p m) / (sum(y m) + sum(p m) + eps), Milletari Eq. 1


def aabb_iou_loss(pred, target, positive) -> Tensor:
    """Mean over positive pixels of -log((I + 1) / (U + 1)) of pred vs target [B, 4, h, w] (t, r, b, l)."""
    pred = pred if isinstance(pred, Tensor) else Tensor(np.asarray(pred))
    target = np.asarray(target, dtype=pred.dtype)
    pos = np.asarray(positive, dtype=bool)
    want_pos = (pred.shape[0], 1) + pred.shape[2:] if pred.ndim == 4 else None
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 4 or pos.shape != want_pos:
        raise ValueError(f"aabb_iou_loss: pred {pred.shape}, target {target.shape}, positive {pos.shape}; "
                         f"expected [B, 4, h, w] twice and [B, 1, h, w]")
    n_pos = int(pos.sum())
    if n_pos == 0:
        return pred.sum() * 0.0  # no positives: zero loss, zero gradient
    idx = np.nonzero(pos[:, 0])  # 3 x [P] (b, i, j) of the positives
    p = pred.transpose(0, 2, 3, 1)[idx]  # [B, h, w, 4] -> [P, 4] predicted (t, r, b, l)
    t = target.transpose(0, 2, 3, 1)[idx]  # [P, 4] target (t*, r*, b*, l*)
    area_p = (p[:, 0] + p[:, 2]) * (p[:, 1] + p[:, 3])  # A: [P]
    area_t = (t[:, 0] + t[:, 2]) * (t[:, 1] + t[:, 3])  # A*: [P]
    h_i = F.minimum(p[:, 0], t[:, 0]) + F.minimum(p[:, 2], t[:, 2])  # [P]
    w_i = F.minimum(p[:, 1], t[:, 1]) + F.minimum(p[:, 3], t[:, 3])  # [P]
    inter = h_i * w_i  # I (EAST Eq. 7): [P]
    union = area_p + area_t - inter  # U = A + A* - I (EAST Eq. 8): [P]
    return -F.log((inter + 1.0) / (union + 1.0)).mean()  # L_AABB = -log((I + 1) / (U + 1)) (EAST Eq. 6)


def det_loss(score_logits, geo, targets, w_cls: float = 1.0, w_geo: float = 1.0) -> tuple[Tensor, dict]:
    """w_cls * dice + w_geo * IoU loss of the detection head against `DetTargets` (batched); (loss, parts)."""
    l_cls = dice_loss(F.sigmoid(score_logits), targets.score, targets.mask)  # [B, 1, h, w] -> []
    l_aabb = aabb_iou_loss(geo, targets.geo, targets.score > 0.5)  # [B, 4, h, w] -> []
    l_det = l_cls * w_cls + l_aabb * w_geo  # L_det = w_cls L_cls + w_geo L_AABB
    return l_det, {"dice": float(l_cls.data), "iou": float(l_aabb.data)}


def rec_loss(logits, labels, label_lengths, widths) -> Tensor:
    """CTC 'mean' loss of per-column logits [R, T, K] with input lengths = pooled widths (infeasible words count 0)."""
    return ctc_loss(logits, labels, np.asarray(widths, dtype=np.int64), np.asarray(label_lengths, dtype=np.int64),
                    reduction="mean", zero_infinity=True)
