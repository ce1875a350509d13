"""Training targets of the dense AABB detection head: score, geometry and training mask per feature pixel.

For a feature map of stride s, pixel (i, j) stands for the image point c = ((j + 0.5) s, (i + 0.5) s)
(pixel-edge coordinates, as the boxes). For every ground-truth box (x0, y0, x1, y1):

* shrunk box: every side moved inwards by r = shrink * min(w, h) (EAST Sec. 3.3.1 and FOTS shrink the
  polygon by 0.3 of the shortest adjacent edge, which for a rectangle is min(w, h));
* score = 1 at pixels whose centre lies in the shrunk box (the positives); if the shrunk box holds no
  centre (words a few pixels high), the pixel nearest the box centre is the positive, so every cared
  word has at least one;
* geometry at a positive pixel = distances from c to the box's four sides, (d_top, d_right, d_bottom,
  d_left) = (cy - y0, x1 - cx, y1 - cy, cx - x0), in image pixels;
* mask = 0 ("don't care") on the ring between the shrunk and the full box and on the whole of every
  "###" box; 1 elsewhere (background included). The score loss uses the mask, the geometry loss only the
  positive pixels.

References:
    Zhou et al., "EAST", CVPR 2017, Sec. 3.3.1 (label generation: shrunk score map, AABB distances).
    Liu et al., "FOTS", CVPR 2018 (don't-care regions ignored). docs/spotter.md, T1.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DetTargets(NamedTuple):
    """Per-pixel targets of one image: score [h, w], geometry [4, h, w], mask [h, w]; all float32."""
    score: np.ndarray
    geo: np.ndarray
    mask: np.ndarray


def pixel_centres(n: int, stride: int) -> np.ndarray:
    """Image coordinates (n,) of the centres of n feature pixels along one axis."""
    return (np.arange(n) + 0.5) * stride


def shrink_boxes(boxes, shrink: float) -> np.ndarray:
    """Boxes [N, 4] with every side moved inwards by shrink * min(w, h): -> float64 [N, 4]."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    r = shrink * np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])  # [N]
    return b + np.stack([r, r, -r, -r], axis=1)  # [N, 4]


def det_targets(boxes, dont_care, out_hw: tuple, stride: int = 4, shrink: float = 0.3) -> DetTargets:
    """Score, geometry and mask targets of one image from its boxes [N, 4] (image pixels) and dnc flags [N]."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    dnc = np.asarray(dont_care, dtype=bool).reshape(-1)
    if len(dnc) != len(b):
        raise ValueError(f"det_targets: {len(b)} boxes but {len(dnc)} don't-care flags")
    if np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
        raise ValueError(f"det_targets: boxes need x1 > x0 and y1 > y0, got {b[:3].tolist()}")
    if not 0.0 <= shrink < 0.5:
        raise ValueError(f"det_targets: shrink={shrink} must be in [0, 0.5)")
    h, w = out_hw
    cy, cx = pixel_centres(h, stride), pixel_centres(w, stride)  # [h], [w]
    score = np.zeros((h, w), np.float32)
    geo = np.zeros((4, h, w), np.float32)
    mask = np.ones((h, w), np.float32)
    inner = shrink_boxes(b, shrink)  # [N, 4]
    for (x0, y0, x1, y1), (u0, v0, u1, v1), ignore in zip(b, inner, dnc):
        rows = (cy >= y0) & (cy < y1)  # [h] inside the full box
        cols = (cx >= x0) & (cx < x1)  # [w]
        mask[np.ix_(rows, cols)] = 0.0
        if ignore:
            continue
        prow = (cy >= v0) & (cy < v1)  # [h] inside the shrunk box
        pcol = (cx >= u0) & (cx < u1)  # [w]
        if not prow.any():
            prow = np.arange(h) == np.clip(np.argmin(np.abs(cy - 0.5 * (y0 + y1))), 0, h - 1)
        if not pcol.any():
            pcol = np.arange(w) == np.clip(np.argmin(np.abs(cx - 0.5 * (x0 + x1))), 0, w - 1)
        region = np.ix_(prow, pcol)
        score[region] = 1.0
        mask[region] = 1.0
        gy, gx = cy[prow][:, None], cx[pcol][None, :]  # [hp, 1], [1, wp]
        geo[0][region] = np.broadcast_to(gy - y0, (prow.sum(), pcol.sum()))
        geo[1][region] = np.broadcast_to(x1 - gx, (prow.sum(), pcol.sum()))
        geo[2][region] = np.broadcast_to(y1 - gy, (prow.sum(), pcol.sum()))
        geo[3][region] = np.broadcast_to(gx - x0, (prow.sum(), pcol.sum()))
    return DetTargets(score, geo, mask)


def batch_targets(batch_boxes, batch_dnc, out_hw: tuple, stride: int = 4, shrink: float = 0.3) -> DetTargets:
    """`det_targets` of B images stacked: score [B, 1, h, w], geometry [B, 4, h, w], mask [B, 1, h, w]."""
    per = [det_targets(b, d, out_hw, stride, shrink) for b, d in zip(batch_boxes, batch_dnc)]
    return DetTargets(np.stack([t.score for t in per])[:, None], np.stack([t.geo for t in per]),
                      np.stack([t.mask for t in per])[:, None])
