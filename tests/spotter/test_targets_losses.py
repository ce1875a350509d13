"""Detection targets on hand-made boxes, the decode round trip, and the gradients of the dice and IoU losses."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.spotter.decode import candidate_boxes, detect_boxes, refine_edges
from refq.spotter.losses import aabb_iou_loss, dice_loss
from refq.spotter.targets import batch_targets, det_targets, shrink_boxes
from tests.gradcheck import check_grad


def test_targets_of_a_hand_made_box():
    # box 40 x 18 px at (10, 8); stride 4 centres at 2, 6, 10, ...; shrink 0.3 * 18 = 5.4 px per side
    t = det_targets([[10, 8, 50, 26]], [False], (8, 16), stride=4, shrink=0.3)
    rows, cols = np.nonzero(t.score)
    assert set(rows) == {3, 4} and set(cols) == set(range(4, 11))  # centres y in [13.4, 20.6), x in [15.4, 44.6)
    np.testing.assert_array_equal(t.geo[:, 4, 4], [18 - 8, 50 - 18, 26 - 18, 18 - 10])  # (t, r, b, l) from (18, 18)
    ring = t.mask == 0  # the ring between the shrunk and the full box is ignored
    full_rows, full_cols = {2, 3, 4, 5}, set(range(2, 12))  # centres y in [8, 26), x in [10, 50)
    expected = {(r, c) for r in full_rows for c in full_cols} - set(zip(rows, cols))
    assert set(zip(*np.nonzero(ring))) == expected
    assert np.all(t.geo[:, t.score == 0] == 0)


def test_dont_care_box_is_masked_and_has_no_positives():
    t = det_targets([[10, 8, 50, 26], [60, 40, 90, 52]], [False, True], (16, 24))
    assert t.mask[10:13, 15:22].sum() == 0 and t.mask[10:13, 22].min() == 1 and t.score[10:13, 15:22].sum() == 0
    assert t.score.sum() > 0


def test_a_tiny_word_still_gets_one_positive():
    t = det_targets([[20, 20, 26, 27]], [False], (16, 16))  # 6 x 7 px: the shrunk box holds no centre
    assert t.score.sum() == 1
    r, c = np.argwhere(t.score)[0]
    assert 20 <= (c + 0.5) * 4 < 26 and 20 <= (r + 0.5) * 4 < 27


@given(x0=st.integers(0, 150), y0=st.integers(0, 200), w=st.integers(6, 100), h=st.integers(7, 40))
def test_decoding_perfect_maps_returns_the_box(x0, y0, w, h):
    box = [x0, y0, x0 + w, y0 + h]
    t = det_targets([box], [False], (64, 64))
    cand, scores, dist = candidate_boxes(t.score, t.geo, 4, 0.5)
    np.testing.assert_allclose(cand, np.broadcast_to(box, cand.shape), atol=1e-4)
    boxes, det_scores = detect_boxes(t.score, t.geo, 4, (256, 256), 0.5)
    np.testing.assert_allclose(boxes, [box], atol=1e-4)
    np.testing.assert_allclose(det_scores, [1.0])


def test_edges_come_from_the_pixels_nearest_to_them():
    # one row of pixels inside the word (0, 0, 100, 20); a pixel misjudges an edge more than 40 px away by 10 px
    cx = np.arange(10.0, 91.0, 4.0)  # [N] pixel centres
    cy = np.full_like(cx, 10.0)
    left = np.where(cx > 40, cx - 10.0, cx)  # d_left estimates
    right = np.where(100 - cx > 40, 90.0 - cx, 100 - cx)  # d_right estimates
    dist = np.stack([cy, right, 20 - cy, left])  # [4, N] (t, r, b, l)
    cand = np.stack([cx - left, cy - 10, cx + right, cy + 10], axis=1)  # [N, 4]
    rough = cand.mean(axis=0, keepdims=True)  # what an average over all pixels gives
    assert abs(rough[0, 0] - 0) > 3 and abs(rough[0, 2] - 100) > 3
    np.testing.assert_allclose(refine_edges(rough, cand, np.ones(len(cx)), dist), [[0, 0, 100, 20]], atol=1e-9)


def test_words_with_separate_score_regions_stay_separate():
    # two words on one line whose pixels all believe the words form one 170 px box
    gt = np.array([[10, 20, 90, 40], [102, 20, 180, 40]], float)
    t = det_targets(gt, [False, False], (16, 64))
    geo = t.geo.copy()
    rows, cols = np.nonzero(t.score)
    in_a = cols * 4 + 2 < 96
    geo[1, rows[in_a], cols[in_a]] += 90.0  # word A's pixels reach to word B's right edge
    geo[3, rows[~in_a], cols[~in_a]] += 92.0  # word B's pixels reach to word A's left edge
    boxes, _ = detect_boxes(t.score, geo, 4, (64, 256), 0.5, merge_gap=None)
    assert len(boxes) == 2  # the score map splits them; the geometry alone would give one merged box
    joined, _ = detect_boxes(t.score, geo, 4, (64, 256), 0.5)
    assert len(joined) == 1  # boxes that overlap this much are taken for fragments of one word (decode step 5)


def test_shrink_moves_every_side_by_the_fraction_of_the_short_side():
    np.testing.assert_allclose(shrink_boxes([[0, 0, 100, 20]], 0.25), [[5, 5, 95, 15]])


def test_batch_targets_shapes():
    t = batch_targets([[[0, 0, 20, 10]], []], [[False], []], (8, 8))
    assert t.score.shape == (2, 1, 8, 8) and t.geo.shape == (2, 4, 8, 8) and t.mask.shape == (2, 1, 8, 8)
    assert t.score[1].sum() == 0 and t.mask[1].min() == 1


def test_dice_gradient(rng):
    y = (rng.random((2, 1, 3, 4)) < 0.4).astype(np.float64)
    m = (rng.random((2, 1, 3, 4)) < 0.8).astype(np.float64)
    check_grad(lambda z: dice_loss(F.sigmoid(z), y, m), [rng.standard_normal((2, 1, 3, 4))], rng, label="dice")


def test_iou_loss_gradient(rng):
    target = rng.uniform(1, 20, (2, 4, 3, 3))
    pos = rng.random((2, 1, 3, 3)) < 0.6
    pos[0, 0, 0, 0] = True
    pred = target + rng.uniform(-0.9, 5, target.shape) + 0.05  # away from min() ties
    check_grad(lambda p: aabb_iou_loss(p, target, pos), [pred], rng, label="iou", rtol=1e-4)


def test_losses_vanish_at_the_optimum():
    y = np.zeros((1, 1, 4, 4))
    y[0, 0, 1:3, 1:3] = 1
    assert float(dice_loss(Tensor(y), y, np.ones_like(y)).data) == pytest.approx(0.0, abs=1e-5)
    geo = np.full((1, 4, 4, 4), 7.0)
    assert float(aabb_iou_loss(Tensor(geo), geo, y > 0).data) == pytest.approx(0.0, abs=1e-7)
    assert float(aabb_iou_loss(Tensor(geo * 2), geo, y > 0).data) > 0.5


def test_iou_loss_without_positives_is_zero_with_zero_gradient():
    pred = Tensor(np.ones((1, 4, 2, 2)), requires_grad=True)
    loss = aabb_iou_loss(pred, np.ones((1, 4, 2, 2)), np.zeros((1, 1, 2, 2), bool))
    loss.backward()
    assert float(loss.data) == 0.0 and np.all(pred.grad == 0)


def test_line_fragments_are_joined_and_separate_words_are_not():
    from refq.spotter.decode import merge_line_fragments

    boxes = np.array([[10, 10, 60, 30],  # "$15,6"
                      [58, 11, 90, 29],  # ",673": overlaps the first by 2 px on the same line
                      [100, 10, 140, 30],  # the next word, 10 px (half a height) after the space
                      [62, 40, 90, 60]], np.float64)  # a word on the next line, below the fragment
    scores = np.array([0.9, 0.5, 0.8, 0.7])
    before = boxes.copy()
    merged, merged_scores = merge_line_fragments(boxes, scores, max_gap=0.0)
    np.testing.assert_array_equal(boxes, before)  # inputs untouched
    np.testing.assert_allclose(merged, [[10, 10, 90, 30], [100, 10, 140, 30], [62, 40, 90, 60]])
    area_a, area_b = 50 * 20, 32 * 18
    np.testing.assert_allclose(merged_scores, [(0.9 * area_a + 0.5 * area_b) / (area_a + area_b), 0.8, 0.7])
    joined, _ = merge_line_fragments(boxes, scores, max_gap=0.6)  # a gap of 0.5 heights now counts as a fragment
    np.testing.assert_allclose(joined, [[10, 10, 140, 30], [62, 40, 90, 60]])
    same, _ = merge_line_fragments(boxes, scores, max_gap=None)
    np.testing.assert_array_equal(same, boxes)
    default, _ = merge_line_fragments(boxes, scores)  # the shipped threshold: only heavy overlaps (-0.5 heights)
    np.testing.assert_array_equal(default, boxes)  # a 2 px overlap of 18 px high boxes is not enough
    fragments = np.array([[10, 10, 60, 30], [45, 11, 90, 29]], np.float64)  # overlap 15 px > 0.5 x 18 px
    np.testing.assert_allclose(merge_line_fragments(fragments, scores[:2])[0], [[10, 10, 90, 30]])
