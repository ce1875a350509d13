"""Text pooling: finite-difference gradient, zero padding without gradient, widths monotone in aspect ratio."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refq.autograd import Tensor
from refq.autograd import functional as F
from refq.spotter.text_pool import column_mask, pooled_widths, text_pool
from tests.gradcheck import check_grad

BOXES = np.array([[3.0, 2.0, 30.0, 13.0], [0.0, 5.5, 17.0, 20.0], [-3.0, 1.0, 9.0, 7.0]])  # image pixels
BATCH = np.array([0, 1, 1])
WIDTHS = np.array([5, 3, 4])


def test_gradient_matches_finite_differences(rng):
    x = rng.standard_normal((2, 3, 6, 9))  # [B, C, h, w] features of stride 4
    check_grad(lambda t: text_pool(t, BOXES, BATCH, WIDTHS, stride=4, pool_h=4), [x], rng, label="text_pool")


def test_padding_cells_are_zero_and_pass_no_gradient(rng):
    x = Tensor(rng.standard_normal((2, 3, 6, 9)), requires_grad=True)
    out = text_pool(x, BOXES, BATCH, WIDTHS, stride=4, pool_h=4)  # [3, 3, 4, 5]
    assert out.shape == (3, 3, 4, 5)
    pad = column_mask(WIDTHS, np.float64) == 0  # [3, 1, 1, 5]
    pad = np.broadcast_to(pad, out.shape)
    assert np.all(out.data[pad] == 0.0)
    g = rng.standard_normal(out.shape)
    out.backward(np.where(pad, 0.0, g))
    grad_valid = x.grad.copy()
    x.zero_grad()
    text_pool(x, BOXES, BATCH, WIDTHS, stride=4, pool_h=4).backward(g)  # now with gradient on the padding too
    np.testing.assert_array_equal(x.grad, grad_valid)


def test_equals_crop_and_resize_at_the_same_width(rng):
    x = rng.standard_normal((2, 4, 7, 10)).astype(np.float32)
    for r in range(len(BOXES)):
        pooled = text_pool(x, BOXES[r:r + 1], BATCH[r:r + 1], WIDTHS[r:r + 1], stride=4, pool_h=4).data
        ref = F.crop_and_resize(x, BOXES[r:r + 1] / 4.0, BATCH[r:r + 1], (4, int(WIDTHS[r]))).data
        np.testing.assert_allclose(pooled, ref, rtol=1e-6, atol=1e-6)


def test_identity_map_reads_the_box():
    # features equal to the x coordinate of each feature pixel centre: the pooled cells read their own x
    xs = np.broadcast_to((np.arange(16) + 0.5) * 4.0, (1, 1, 8, 16)).astype(np.float64)
    box = np.array([[8.0, 4.0, 40.0, 20.0]])
    pooled = text_pool(xs, box, np.array([0]), np.array([8]), stride=4, pool_h=4).data[0, 0]  # [4, 8]
    np.testing.assert_allclose(pooled, np.broadcast_to(8.0 + (np.arange(8) + 0.5) * 4.0, (4, 8)))


@given(h=st.floats(4, 60), w1=st.floats(1, 300), w2=st.floats(1, 300), aspect=st.floats(0.25, 2.0))
def test_width_is_monotone_in_aspect_ratio(h, w1, w2, aspect):
    lo, hi = sorted((w1, w2))
    boxes = np.array([[0, 0, lo, h], [10, 5, 10 + hi, 5 + h]])
    small, large = pooled_widths(boxes, 8, aspect, 4, 96)
    assert 4 <= small <= large <= 96


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match="boxes need x1 > x0"):
        text_pool(np.zeros((1, 2, 4, 4)), [[5.0, 0.0, 5.0, 4.0]], [0], [3], stride=4)
    with pytest.raises(ValueError, match="batch_index"):
        text_pool(np.zeros((1, 2, 4, 4)), [[0.0, 0.0, 5.0, 4.0]], [1], [3], stride=4)
    with pytest.raises(ValueError, match="w_min"):
        pooled_widths([[0, 0, 10, 5]], 8, 0.75, 10, 4)
