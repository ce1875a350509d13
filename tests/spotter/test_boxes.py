"""Box geometry: IoU properties, polygon clipping vs the rectangle closed form, NMS and locality-aware NMS."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.spotter.boxes import (aabb_area, aabb_iou, aabb_to_quad, clip_polygon, is_axis_aligned, is_convex,
                                locality_aware_nms, nms, polygon_intersection_area, polygon_iou,
                                polygon_overlaps, polygon_signed_area, quad_to_aabb)


@st.composite
def boxes(draw, n_min=1, n_max=8, min_side=1):
    """[N, 4] float64 boxes with integer or half-integer corners and sides >= min_side."""
    n = draw(st.integers(n_min, n_max))
    out = []
    for _ in range(n):
        x0 = draw(st.integers(0, 200)) / 2
        y0 = draw(st.integers(0, 200)) / 2
        w = draw(st.integers(2 * min_side, 120)) / 2
        h = draw(st.integers(2 * min_side, 80)) / 2
        out.append([x0, y0, x0 + w, y0 + h])
    return np.array(out, dtype=np.float64)


@given(boxes(), boxes())
def test_iou_symmetric_and_bounded(a, b):
    iou = aabb_iou(a, b)
    assert iou.shape == (len(a), len(b))
    np.testing.assert_allclose(iou, aabb_iou(b, a).T, rtol=0, atol=1e-12)
    assert np.all((iou >= 0) & (iou <= 1))


@given(boxes())
def test_iou_with_itself_is_one(a):
    np.testing.assert_allclose(np.diag(aabb_iou(a, a)), 1.0, rtol=0, atol=1e-12)


@given(boxes(n_max=4), boxes(n_max=4), st.integers(0, 3), st.booleans())
def test_aabb_iou_equals_polygon_iou_for_rectangles(a, b, shift, reverse):
    qa, qb = aabb_to_quad(a), aabb_to_quad(b)
    qb = np.roll(qb, shift, axis=1)  # another starting vertex
    if reverse:
        qb = qb[:, ::-1]  # the other winding order
    iou, inter = polygon_overlaps(qa, qb)
    np.testing.assert_allclose(iou, aabb_iou(a, b), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose([polygon_iou(qa[0], qb[0])], [aabb_iou(a[:1], b[:1])[0, 0]], atol=1e-9)


def test_disjoint_and_touching_boxes_have_zero_iou():
    a = np.array([[0, 0, 10, 10]])
    assert aabb_iou(a, [[20, 20, 30, 30]])[0, 0] == 0.0
    assert aabb_iou(a, [[10, 0, 20, 10]])[0, 0] == 0.0  # shares an edge only
    assert aabb_iou(a, [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)


def test_shoelace_area_and_orientation():
    square = np.array([[0, 0], [4, 0], [4, 3], [0, 3]], dtype=float)
    assert polygon_signed_area(square) == 12.0
    assert polygon_signed_area(square[::-1]) == -12.0
    np.testing.assert_allclose(aabb_area([[0, 0, 4, 3]]), [12.0])


def test_clip_diamond_in_square():
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], dtype=float)
    diamond = np.array([[1, -1], [3, 1], [1, 3], [-1, 1]], dtype=float)  # |x-1| + |y-1| <= 2, area 8, holds the square
    assert polygon_intersection_area(diamond, square) == pytest.approx(4.0)
    assert polygon_iou(square, diamond) == pytest.approx(4.0 / 8.0)
    clipped = clip_polygon(diamond, square)
    assert np.all((clipped >= -1e-12) & (clipped <= 2 + 1e-12))


def test_rotated_quad_against_rectangle():
    rect = np.array([[0, 0], [4, 0], [4, 2], [0, 2]], dtype=float)
    tilted = np.array([[0, 0], [4, 1], [4, 3], [0, 2]], dtype=float)  # parallelogram, area 8
    # inside rect: the part of the parallelogram below y = 2, i.e. area 8 minus the triangle (0,2)-(4,2)-(4,3) (area 2)
    assert polygon_intersection_area(tilted, rect) == pytest.approx(6.0)
    assert not is_axis_aligned(tilted)[0]
    assert is_axis_aligned(rect)[0] and is_axis_aligned(rect[::-1])[0] and is_axis_aligned(np.roll(rect, 1, 0))[0]


def test_non_convex_pair_is_rejected():
    arrow = np.array([[0, 0], [4, 2], [0, 4], [1, 2]], dtype=float)
    assert not is_convex(arrow)
    assert polygon_signed_area(arrow) == pytest.approx(6.0)
    assert polygon_intersection_area(arrow, aabb_to_quad([[0, 0, 4, 4]])[0]) == pytest.approx(6.0)  # all inside
    with pytest.raises(ValueError, match="neither polygon is convex"):
        polygon_intersection_area(arrow, arrow + 1)


def test_quad_box_round_trip_and_bad_boxes():
    b = np.array([[1, 2, 5, 9], [0, 0, 3, 3]], dtype=float)
    np.testing.assert_array_equal(quad_to_aabb(aabb_to_quad(b)), b)
    with pytest.raises(ValueError, match="x1 >= x0"):
        aabb_iou([[5, 0, 1, 3]], b)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        aabb_iou(np.zeros((2, 3)), b)


@given(boxes(n_max=12), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_nms_subset_no_overlap_idempotent(b, thr, seed):
    scores = np.random.default_rng(seed).random(len(b))
    keep = nms(b, scores, thr)
    assert len(set(keep.tolist())) == len(keep) and set(keep.tolist()) <= set(range(len(b)))
    assert keep[0] == np.argmax(scores)
    assert np.all(np.diff(scores[keep]) <= 0)  # best first
    iou = aabb_iou(b[keep], b[keep])
    assert np.all(iou[~np.eye(len(keep), dtype=bool)] <= thr)
    again = nms(b[keep], scores[keep], thr)
    np.testing.assert_array_equal(again, np.arange(len(keep)))
    dropped = np.setdiff1d(np.arange(len(b)), keep)  # every dropped box overlaps a better kept one
    for d in dropped:
        better = keep[scores[keep] >= scores[d]]
        assert np.max(aabb_iou(b[d:d + 1], b[better])) > thr


def test_nms_hand_case():
    b = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=float)
    s = np.array([0.9, 0.95, 0.5, 0.1])
    np.testing.assert_array_equal(nms(b, s, 0.5), [1, 2])
    np.testing.assert_array_equal(nms(b, s, 0.99), [1, 0, 2])  # the exact duplicate (IoU 1) still goes
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], dtype=float)  # IoU exactly 0.5: kept, only IoU > thr drops
    np.testing.assert_array_equal(nms(half, [0.9, 0.8], 0.5), [0, 1])
    with pytest.raises(ValueError, match="3 scores"):
        nms(b, s[:3], 0.5)


def test_locality_aware_nms_merges_neighbours_by_score_weights():
    b = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [40, 0, 50, 10]], dtype=float)
    s = np.array([1.0, 3.0, 0.5])
    out, sums, counts = locality_aware_nms(b, s, 0.3)
    np.testing.assert_allclose(out, [[1.5, 0, 11.5, 10], [40, 0, 50, 10]])
    np.testing.assert_allclose(sums, [4.0, 0.5])
    np.testing.assert_array_equal(counts, [2, 1])


@given(boxes(n_max=12), st.floats(0.1, 0.9), st.integers(0, 2**31 - 1))
def test_locality_aware_nms_output_has_no_overlapping_pair(b, thr, seed):
    scores = np.random.default_rng(seed).random(len(b)) + 0.01
    out, sums, counts = locality_aware_nms(b, scores, thr)
    assert counts.sum() <= len(b) and len(out) <= len(b)
    assert sums.sum() <= scores.sum() + 1e-9
    iou = aabb_iou(out, out)
    assert np.all(iou[~np.eye(len(out), dtype=bool)] <= thr)


def test_locality_aware_nms_without_overlaps_is_plain_nms():
    b = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], dtype=float)
    s = np.array([0.2, 0.9, 0.5])
    out, sums, counts = locality_aware_nms(b, s, 0.2)
    np.testing.assert_array_equal(out, b[nms(b, s, 0.2)])
    np.testing.assert_array_equal(counts, [1, 1, 1])
    empty = locality_aware_nms(np.zeros((0, 4)), np.zeros(0), 0.2)
    assert [len(x) for x in empty] == [0, 0, 0]
