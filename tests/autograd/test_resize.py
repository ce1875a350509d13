"""resize_bilinear (PyTorch align_corners=False semantics) and crop_and_resize (zero-padded box sampling)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refq.autograd import Tensor, functional as F


def lerp_taps(s, n, clamp):
    """[(index, weight), ...] of 1-D linear interpolation at position s over n pixels."""
    if clamp:
        s = max(s, 0.0)
        i0 = min(math.floor(s), n - 1)
        return [(i0, 1.0 - (s - i0)), (min(i0 + 1, n - 1), s - i0)]
    i0 = math.floor(s)
    return [(i, wt) for i, wt in ((i0, 1.0 - (s - i0)), (i0 + 1, s - i0)) if 0 <= i < n]


def sample_naive(img, ys, xs, clamp):
    """[C, H, W] sampled at every (ys[i], xs[j]) one output pixel at a time."""
    out = np.zeros((img.shape[0], len(ys), len(xs)))
    for i, sy in enumerate(ys):
        for j, sx in enumerate(xs):
            for yi, wy in lerp_taps(sy, img.shape[1], clamp):
                for xi, wx in lerp_taps(sx, img.shape[2], clamp):
                    out[:, i, j] += wy * wx * img[:, yi, xi]
    return out


def resize_naive(x, h, w):
    ys = [(i + 0.5) * x.shape[2] / h - 0.5 for i in range(h)]
    xs = [(j + 0.5) * x.shape[3] / w - 0.5 for j in range(w)]
    return np.stack([sample_naive(img, ys, xs, clamp=True) for img in x])


def crop_naive(x, boxes, batch_index, h, w):
    out = []
    for (x0, y0, x1, y1), b in zip(boxes, batch_index):
        ys = [y0 + (i + 0.5) * (y1 - y0) / h - 0.5 for i in range(h)]
        xs = [x0 + (j + 0.5) * (x1 - x0) / w - 0.5 for j in range(w)]
        out.append(sample_naive(x[b], ys, xs, clamp=False))
    return np.stack(out)


def test_resize_known_values():
    row = np.array([[[[0.0, 1.0, 2.0]]]])  # [1, 1, 1, 3]
    np.testing.assert_allclose(F.resize_bilinear(row, (1, 5)).data[0, 0, 0], [0.0, 0.4, 1.0, 1.6, 2.0])
    np.testing.assert_allclose(F.resize_bilinear(row, (1, 2)).data[0, 0, 0], [0.25, 1.75])
    np.testing.assert_allclose(F.resize_bilinear(row[..., :2], (1, 4)).data[0, 0, 0], [0.0, 0.25, 0.75, 1.0])


@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=4, max_dims=4, max_side=5), elements=st.floats(-9, 9, width=32)))
def test_resize_to_the_same_size_is_the_identity(x):
    y = F.resize_bilinear(x, x.shape[2:]).data
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x)


@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=4, max_dims=4, max_side=4), elements=st.floats(-9, 9)),
       size=st.tuples(st.integers(1, 7), st.integers(1, 7)))
def test_resize_matches_per_pixel_reference(x, size):
    np.testing.assert_allclose(F.resize_bilinear(x, size).data, resize_naive(x, *size), atol=1e-12)


@given(c=st.floats(-5, 5), hw=st.tuples(st.integers(1, 6), st.integers(1, 6)), size=st.tuples(st.integers(1, 9), st.integers(1, 9)))
def test_resize_keeps_constant_images(c, hw, size):
    np.testing.assert_allclose(F.resize_bilinear(np.full((1, 2) + hw, c), size).data, c, atol=1e-12)


def test_crop_of_the_whole_map_is_the_identity_and_half_size_is_avg_pool(rng):
    x = rng.standard_normal((2, 3, 4, 6))
    whole = np.array([[0.0, 0.0, 6.0, 4.0], [0.0, 0.0, 6.0, 4.0]])
    np.testing.assert_allclose(F.crop_and_resize(x, whole, np.array([1, 0]), (4, 6)).data, x[::-1], atol=1e-12)
    np.testing.assert_allclose(F.crop_and_resize(x, whole, np.array([0, 1]), (2, 3)).data,
                               F.avg_pool2d(x, 2).data, atol=1e-12)


@given(data=st.data())
def test_crop_and_resize_matches_per_sample_reference(data):
    d = data.draw
    B, C, H, W = d(st.integers(1, 2)), d(st.integers(1, 2)), d(st.integers(1, 6)), d(st.integers(1, 6))
    x = d(hnp.arrays(np.float64, (B, C, H, W), elements=st.floats(-9, 9)))
    R = d(st.integers(1, 3))
    coord = st.floats(-2.0, 8.0, allow_subnormal=False)
    boxes = np.array([[d(coord) for _ in range(4)] for _ in range(R)])
    index = np.array([d(st.integers(0, B - 1)) for _ in range(R)])
    h, w = d(st.integers(1, 5)), d(st.integers(1, 5))
    np.testing.assert_allclose(F.crop_and_resize(x, boxes, index, (h, w)).data, crop_naive(x, boxes, index, h, w),
                               atol=1e-12)


def test_crop_agrees_with_resize_of_the_slice_away_from_the_slice_edges(rng):
    x = rng.standard_normal((1, 2, 12, 12))
    down = F.crop_and_resize(x, np.array([[2.0, 4.0, 10.0, 8.0]]), np.array([0]), (2, 4)).data
    np.testing.assert_allclose(down, F.resize_bilinear(x[:, :, 4:8, 2:10], (2, 4)).data, atol=1e-12)
    up = F.crop_and_resize(x, np.array([[2.0, 4.0, 6.0, 8.0]]), np.array([0]), (8, 8)).data
    np.testing.assert_allclose(up[..., 1:-1, 1:-1], F.resize_bilinear(x[:, :, 4:8, 2:6], (8, 8)).data[..., 1:-1, 1:-1],
                               atol=1e-12)


def test_crop_outside_the_map_is_zero_and_gradients_of_shared_images_add(rng):
    x = Tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)
    outside = F.crop_and_resize(x, np.array([[10.0, 10.0, 14.0, 12.0]]), np.array([0]), (2, 2))
    np.testing.assert_array_equal(outside.data, 0.0)
    box = np.array([[0.5, 0.2, 3.1, 2.9]])
    F.sum(F.crop_and_resize(x, np.concatenate([box, box]), np.array([0, 0]), (3, 3))).backward()
    twice = x.grad
    x.zero_grad()
    F.sum(F.crop_and_resize(x, box, np.array([0]), (3, 3))).backward()
    np.testing.assert_allclose(twice, 2 * x.grad)
    assert np.all(x.grad[:, :, 3, :] == 0.0)  # row 3 is never reached by samples in rows [0.2, 2.9]


@pytest.mark.parametrize("call, match", [
    (lambda: F.resize_bilinear(np.zeros((2, 3, 4)), (2, 2)), r"x has shape \(2, 3, 4\)"),
    (lambda: F.resize_bilinear(np.zeros((1, 1, 4, 4)), (0, 2)), r"size=\(0, 2\)"),
    (lambda: F.crop_and_resize(np.zeros((1, 1, 4, 4)), np.zeros((2, 3)), np.zeros(2, int), (2, 2)), r"\(2, 3\)"),
    (lambda: F.crop_and_resize(np.zeros((1, 1, 4, 4)), np.zeros((1, 4)), np.array([1]), (2, 2)), "batch_index 1"),
    (lambda: F.crop_and_resize(np.zeros((1, 1, 4, 4)), np.zeros((1, 4)), np.array([0.0]), (2, 2)), "dtype float64"),
    (lambda: F.crop_and_resize(np.zeros((1, 1, 4, 4)), np.full((1, 4), np.nan), np.array([0]), (2, 2)), "finite"),
])
def test_bad_arguments_raise_value_error_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
