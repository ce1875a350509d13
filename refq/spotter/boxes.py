"""Box geometry for the spotter: areas, IoU, polygon clipping, NMS and locality-aware NMS.

Conventions. An axis-aligned box (AABB) is (x0, y0, x1, y1) in continuous
pixel-edge coordinates, so its area is (x1 - x0) * (y1 - y0); an array of N
boxes has shape [N, 4]. A quadrilateral ("quad", the ICDAR 2015 format) is
four (x, y) vertices [4, 2], in either winding order.

* `aabb_iou` is the closed form for rectangles; `polygon_iou` is the general
  convex-polygon version (shoelace area + Sutherland-Hodgman clipping) that
  the ICDAR 2015 protocol uses for quads. For rectangles both agree, which the
  tests check.
* `nms` is standard greedy non-maximum suppression (Neubeck & Van Gool 2006):
  keep the best-scoring box, drop every box with IoU > threshold with it, repeat.
* `locality_aware_nms` is EAST's variant (Zhou et al. 2017, Sec. 3.5): dense
  per-pixel candidates arrive in raster order, so each one is first merged
  with the previous survivor when they overlap (coordinates averaged with the
  scores as weights, scores summed), then standard NMS runs on the merged set.

References:
    Sutherland & Hodgman, "Reentrant polygon clipping", CACM 1974.
    Neubeck & Van Gool, "Efficient non-maximum suppression", ICPR 2006.
    Zhou et al., "EAST: An Efficient and Accurate Scene Text Detector", CVPR 2017, Sec. 3.5.
    docs/spotter.md, T8 (decoding and NMS).
"""
from __future__ import annotations

import numpy as np


def _as_boxes(boxes, name: str) -> np.ndarray:
    """float64 [N, 4] copy of a box array; ValueError on the wrong shape or inverted boxes."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]  # [4] -> [1, 4]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name}: expected boxes of shape [N, 4], got {np.shape(boxes)}")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if np.any(bad):
        raise ValueError(f"{name}: boxes need x1 >= x0 and y1 >= y0, got {b[bad][:3].tolist()}")
    return b


def aabb_area(boxes) -> np.ndarray:
    """Areas of axis-aligned boxes: [N, 4] -> [N]."""
    b = _as_boxes(boxes, "aabb_area")
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # [N]


def aabb_intersection(a, b) -> np.ndarray:
    """Pairwise intersection areas: [N, 4], [M, 4] -> [N, M]."""
    a = _as_boxes(a, "aabb_intersection")
    b = _as_boxes(b, "aabb_intersection")
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])  # [N, M]
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])  # [N, M]
    return np.clip(w, 0.0, None) * np.clip(h, 0.0, None)  # [N, M]


def aabb_iou(a, b) -> np.ndarray:
    """Pairwise IoU = |a n b| / |a u b| of axis-aligned boxes: [N, 4], [M, 4] -> [N, M] (0 for empty unions)."""
    inter = aabb_intersection(a, b)  # [N, M]
    union = aabb_area(a)[:, None] + aabb_area(b)[None, :] - inter  # [N, M]
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def aabb_to_quad(boxes) -> np.ndarray:
    """Axis-aligned boxes as ICDAR quads, clockwise on screen from the top-left: [N, 4] -> [N, 4, 2]."""
    b = _as_boxes(boxes, "aabb_to_quad")
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]  # [N] each
    return np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1),
                     np.stack([x1, y1], 1), np.stack([x0, y1], 1)], axis=1)  # [N, 4, 2]


def quad_to_aabb(quads) -> np.ndarray:
    """The enclosing axis-aligned boxes of quads: [N, 4, 2] -> [N, 4]."""
    q = np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)  # [N, 4, 2]
    return np.concatenate([q.min(axis=1), q.max(axis=1)], axis=1)  # [N, 4]


def is_axis_aligned(quads) -> np.ndarray:
    """Per quad: True when every edge is horizontal or vertical and it fills its bounding box: [N, 4, 2] -> [N]."""
    q = np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)  # [N, 4, 2]
    e = np.roll(q, -1, axis=1) - q  # [N, 4, 2] edge vectors
    axis_edges = np.all((e[..., 0] == 0) | (e[..., 1] == 0), axis=1)  # [N]
    x, y = q[..., 0], q[..., 1]  # [N, 4] each
    area = 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))  # [N]
    box_area = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))  # [N]
    return axis_edges & (area == box_area)


def polygon_signed_area(poly) -> float:
    """Shoelace formula: 0.5 * sum(x_i y_{i+1} - x_{i+1} y_i); positive for counter-clockwise in (x right, y up)."""
    p = np.asarray(poly, dtype=np.float64)  # [V, 2]
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def is_convex(poly) -> bool:
    """True when every turn of the polygon goes the same way (collinear vertices allowed)."""
    p = np.asarray(poly, dtype=np.float64)  # [V, 2]
    e = np.roll(p, -1, axis=0) - p  # [V, 2] edge vectors
    cross = e[:, 0] * np.roll(e, -1, axis=0)[:, 1] - e[:, 1] * np.roll(e, -1, axis=0)[:, 0]  # [V]
    return bool(np.all(cross >= 0) or np.all(cross <= 0))


def clip_polygon(subject, clip) -> np.ndarray:
    """Sutherland-Hodgman: the part of `subject` inside the convex polygon `clip`, [V, 2], [4, 2] -> [V', 2]."""
    c = np.asarray(clip, dtype=np.float64)
    if polygon_signed_area(c) < 0:  # make the clip polygon counter-clockwise: inside = left of each edge
        c = c[::-1]
    out = [tuple(v) for v in np.asarray(subject, dtype=np.float64)]
    for i in range(len(c)):
        if not out:
            break
        a, b = c[i], c[(i + 1) % len(c)]
        side = [(b[0] - a[0]) * (v[1] - a[1]) - (b[1] - a[1]) * (v[0] - a[0]) for v in out]  # > 0: inside
        clipped = []
        for j in range(len(out)):
            cur, prev = out[j], out[j - 1]
            s_cur, s_prev = side[j], side[j - 1]
            if (s_cur >= 0) != (s_prev >= 0):  # the edge prev -> cur crosses the clip line
                t = s_prev / (s_prev - s_cur)
                clipped.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if s_cur >= 0:
                clipped.append(cur)
        out = clipped
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def polygon_intersection_area(p, q) -> float:
    """Area of the intersection of two polygons, at least one of which is convex."""
    if is_convex(q):
        return abs(polygon_signed_area(clip_polygon(p, q)))
    if is_convex(p):
        return abs(polygon_signed_area(clip_polygon(q, p)))
    raise ValueError(f"polygon_intersection_area: neither polygon is convex: {np.asarray(p).tolist()}, "
                     f"{np.asarray(q).tolist()}")


def polygon_iou(p, q) -> float:
    """IoU of two polygons (at least one convex); 0 when the union is empty."""
    inter = polygon_intersection_area(p, q)
    union = abs(polygon_signed_area(p)) + abs(polygon_signed_area(q)) - inter
    return inter / union if union > 0 else 0.0


def polygon_overlaps(gt, det) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise IoU and intersection areas of quads: [N, 4, 2], [M, 4, 2] -> ([N, M], [N, M])."""
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 4, 2)
    d = np.asarray(det, dtype=np.float64).reshape(-1, 4, 2)
    iou = np.zeros((len(g), len(d)))
    inter = np.zeros((len(g), len(d)))
    for i in range(len(g)):
        for j in range(len(d)):
            inter[i, j] = polygon_intersection_area(g[i], d[j])
            union = abs(polygon_signed_area(g[i])) + abs(polygon_signed_area(d[j])) - inter[i, j]
            iou[i, j] = inter[i, j] / union if union > 0 else 0.0
    return iou, inter


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of the kept boxes, best score first; a box is dropped when IoU > threshold."""
    b = _as_boxes(boxes, "nms")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"nms: {len(b)} boxes but {len(s)} scores")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"nms: iou_threshold={iou_threshold} is not in [0, 1]")
    order = np.argsort(-s, kind="stable")  # [N] best first, ties by input order
    keep = []
    while len(order):
        best = order[0]
        keep.append(best)
        iou = aabb_iou(b[best:best + 1], b[order[1:]])[0]  # [n - 1]
        order = order[1:][iou <= iou_threshold]
    return np.array(keep, dtype=np.intp)


def locality_aware_nms(boxes, scores, iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EAST's NMS: merge consecutive overlapping candidates, then NMS -> (boxes [K, 4], score sums [K], counts [K])."""
    b = _as_boxes(boxes, "locality_aware_nms")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"locality_aware_nms: {len(b)} boxes but {len(s)} scores")
    merged, sums, counts = [], [], []
    for box, score in zip(b, s):
        if merged and aabb_iou(merged[-1][None], box[None])[0, 0] > iou_threshold:
            total = sums[-1] + score
            # score-weighted average of the coordinates (EAST Sec. 3.5)
            merged[-1] = (merged[-1] * sums[-1] + box * score) / total if total > 0 else (merged[-1] + box) / 2
            sums[-1] = total
            counts[-1] += 1
        else:
            merged.append(box.copy())
            sums.append(score)
            counts.append(1)
    if not merged:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.intp)
    merged_b = np.array(merged)  # [K', 4]
    merged_s = np.array(sums)  # [K']
    keep = nms(merged_b, merged_s, iou_threshold)  # [K]
    return merged_b[keep], merged_s[keep], np.array(counts, dtype=np.intp)[keep]
