"""MSR regions: disjoint 2x2 cells with distinct labels; gradients stay inside each region."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.sardfq.msr import MSRPlan, grid_boxes, msr_crops, sample_msr


@given(st.integers(1, 6), st.integers(2, 12), st.integers(0, 2 ** 32 - 1))
def test_sample_msr_regions_are_disjoint_cells_with_distinct_labels(k_msr, num_classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=5)
    plan = sample_msr(labels, k_msr, num_classes, 28, 28, rng)
    cells = {tuple(c) for c in grid_boxes(28, 28).tolist()}
    for b, y0 in enumerate(labels):
        rows = plan.batch_index == b
        m = int(rows.sum())
        assert 1 <= m <= min(k_msr, 4, num_classes - 1)
        boxes = [tuple(bx) for bx in plan.boxes[rows].tolist()]
        assert len(set(boxes)) == m and set(boxes) <= cells  # distinct grid cells never overlap
        ys = plan.labels[rows]
        assert len(set(ys.tolist())) == m and y0 not in ys.tolist()
        mask = np.zeros((28, 28), int)
        for x0, y0_, x1, y1 in boxes:
            mask[y0_:y1, x0:x1] += 1
        assert mask.max() == 1


def test_grid_boxes_tile_the_canvas():
    boxes = grid_boxes(28, 32)
    assert boxes.tolist() == [[0, 0, 16, 14], [16, 0, 32, 14], [0, 14, 16, 28], [16, 14, 32, 28]]
    with pytest.raises(ValueError, match="27x28"):
        grid_boxes(27, 28)


def test_msr_needs_a_second_class(rng):
    with pytest.raises(ValueError, match="num_classes=1"):
        sample_msr(np.zeros(2, int), 4, 1, 8, 8, rng)


def test_msr_crops_upsample_their_region(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    plan = MSRPlan(np.array([1, 0]), np.array([[4, 0, 8, 4], [0, 4, 4, 8]]), np.array([3, 4]))
    crops = msr_crops(Tensor(x), plan, (8, 8)).data
    assert crops.shape == (2, 3, 8, 8)
    want0 = F.resize_bilinear(x[1:2, :, 0:4, 4:8], (8, 8)).data[0]
    want1 = F.resize_bilinear(x[0:1, :, 4:8, 0:4], (8, 8)).data[0]
    np.testing.assert_allclose(crops[0], want0)
    np.testing.assert_allclose(crops[1], want1)


def test_patch_loss_gradient_reaches_only_its_region(rng):
    x = Tensor(rng.standard_normal((2, 1, 8, 8)), requires_grad=True)
    plan = sample_msr(np.array([0, 1]), 4, 10, 8, 8, rng)
    crops = msr_crops(x, plan, (8, 8))
    for r in range(len(plan)):
        x.grad = None
        F.sum(F.mul(F.getitem(crops, r), rng.standard_normal((1, 8, 8)))).backward()
        x0, y0, x1, y1 = plan.boxes[r]
        inside = np.zeros(x.shape, bool)
        inside[plan.batch_index[r], :, y0:y1, x0:x1] = True
        assert np.abs(x.grad[~inside]).max() == 0.0
        assert np.abs(x.grad[inside]).min() > 0.0  # every region pixel feeds the upsampled crop


def test_crop_and_resize_would_leak_across_regions(rng):
    # why msr_crops slices before resizing: crop_and_resize of the same box samples one pixel beyond it
    x = Tensor(rng.standard_normal((1, 1, 8, 8)), requires_grad=True)
    F.sum(F.crop_and_resize(x, np.array([[0.0, 0.0, 4.0, 4.0]]), np.array([0]), (8, 8))).backward()
    assert np.abs(x.grad[0, 0, 4, :4]).max() > 0  # row 4 lies in the neighbouring cell


def test_plan_for_images_shifts_indices():
    plan = MSRPlan(np.array([0, 1, 1, 2]), np.zeros((4, 4), np.intp), np.array([1, 2, 3, 4]))
    sub = plan.for_images(1, 3)
    assert sub.batch_index.tolist() == [0, 0, 1] and sub.labels.tolist() == [2, 3, 4]
