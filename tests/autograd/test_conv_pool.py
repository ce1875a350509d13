"""conv2d and pooling against naive loop references; col2im fast path against the plain loop; bad arguments."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refq.autograd import Tensor, functional as F
from refq.autograd.ops_conv import col2im, col2im_plain


def conv2d_naive(x, w, b, stride, padding, dilation, groups):
    """Direct cross-correlation, one output element at a time."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    B, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho, Wo = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((B, O, Ho, Wo))
    for n in range(B):
        for o in range(O):
            c0 = (o // (O // groups)) * Cg
            for i in range(Ho):
                for j in range(Wo):
                    acc = 0.0 if b is None else b[o]
                    for c in range(Cg):
                        for u in range(kh):
                            for v in range(kw):
                                acc += w[o, c, u, v] * xp[n, c0 + c, i * sh + u * dh, j * sw + v * dw]
                    out[n, o, i, j] = acc
    return out


def pool_naive(x, kernel, stride, padding, reduce, fill):
    """Pooling by looping over output cells."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    Ho, Wo = (xp.shape[2] - kh) // sh + 1, (xp.shape[3] - kw) // sw + 1
    out = np.zeros(x.shape[:2] + (Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = reduce(xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw], axis=(2, 3))
    return out


@given(data=st.data())
def test_conv2d_equals_naive_loops(data):
    d = data.draw
    groups, cg, og = d(st.integers(1, 3)), d(st.integers(1, 2)), d(st.integers(1, 2))
    kernel, stride = (d(st.integers(1, 3)), d(st.integers(1, 3))), (d(st.integers(1, 2)), d(st.integers(1, 2)))
    padding, dilation = (d(st.integers(0, 2)), d(st.integers(0, 1))), (d(st.integers(1, 2)), d(st.integers(1, 2)))
    hw = [max(1, dl * (k - 1) + 1 - 2 * p) + d(st.integers(0, 3)) for k, p, dl in zip(kernel, padding, dilation)]
    vals = st.floats(-2, 2, allow_subnormal=False)
    x = d(hnp.arrays(np.float64, (d(st.integers(1, 2)), groups * cg, *hw), elements=vals))
    w = d(hnp.arrays(np.float64, (groups * og, cg, *kernel), elements=vals))
    b = d(st.one_of(st.none(), hnp.arrays(np.float64, (groups * og,), elements=vals)))
    got = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups).data
    np.testing.assert_allclose(got, conv2d_naive(x, w, b, stride, padding, dilation, groups), atol=1e-12)


def test_conv2d_patch_embedding_is_a_reshaped_matmul(rng):
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((5, 3, 4, 4))
    patches = x.reshape(2, 3, 2, 4, 2, 4).transpose(0, 2, 4, 1, 3, 5).reshape(2, 4, 48)  # [B, N, C*p*p]
    expected = (patches @ w.reshape(5, 48).T).transpose(0, 2, 1).reshape(2, 5, 2, 2)
    np.testing.assert_allclose(F.conv2d(x, w, stride=4).data, expected, atol=1e-12)


@given(data=st.data())
def test_col2im_fast_path_equals_plain_loop(data):
    d = data.draw
    kh, kw = d(st.integers(1, 4)), d(st.integers(1, 4))
    Ho, Wo = d(st.integers(1, 3)), d(st.integers(1, 3))
    padded = (Ho * kh + d(st.integers(0, 2)), Wo * kw + d(st.integers(0, 2)))  # leftover rows are never read
    gwin = d(hnp.arrays(np.float64, (2, 2, Ho, Wo, kh, kw), elements=st.floats(-1, 1)))
    np.testing.assert_array_equal(col2im(gwin, padded, (kh, kw), (1, 1)), col2im_plain(gwin, padded, (kh, kw), (1, 1)))


@given(data=st.data())
def test_pools_equal_naive_loops(data):
    d = data.draw
    kernel = (d(st.integers(1, 3)), d(st.integers(1, 3)))
    stride = (d(st.integers(1, 3)), d(st.integers(1, 3)))
    padding = (d(st.integers(0, kernel[0] // 2)), d(st.integers(0, kernel[1] // 2)))
    hw = [max(1, k - 2 * p) + d(st.integers(0, 4)) for k, p in zip(kernel, padding)]
    x = d(hnp.arrays(np.float64, (2, 2, *hw), elements=st.floats(-5, 5)))
    np.testing.assert_allclose(F.max_pool2d(x, kernel, stride, padding).data,
                               pool_naive(x, kernel, stride, padding, np.max, -np.inf))
    np.testing.assert_allclose(F.avg_pool2d(x, kernel, stride, padding).data,
                               pool_naive(x, kernel, stride, padding, np.mean, 0.0), atol=1e-12)


def test_height_only_max_pool_and_argmax_routing():
    x = np.array([[[[1.0, 5.0], [4.0, 2.0], [0.0, 3.0], [6.0, -1.0]]]])  # [1, 1, 4, 2]
    t = F.max_pool2d(x, (2, 1))
    np.testing.assert_array_equal(t.data, [[[[4.0, 5.0], [6.0, 3.0]]]])
    xt = Tensor(x, requires_grad=True)
    F.sum(F.max_pool2d(xt, (2, 1))).backward()
    np.testing.assert_array_equal(xt.grad, [[[[0, 1], [1, 0], [0, 1], [1, 0]]]])


@pytest.mark.parametrize("call, match", [
    (lambda: F.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((4, 3, 3))), "rank 3"),
    (lambda: F.conv2d(np.zeros((3, 5, 5)), np.zeros((4, 3, 3, 3))), r"x has shape \(3, 5, 5\)"),
    (lambda: F.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((4, 2, 3, 3))), "expected 3 input channels"),
    (lambda: F.conv2d(np.zeros((1, 4, 5, 5)), np.zeros((3, 2, 3, 3)), groups=2), "groups=2"),
    (lambda: F.conv2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3))), "does not fit H=2"),
    (lambda: F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), stride=0), "stride=0"),
    (lambda: F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), padding=(1, -1)), r"padding=\(1, -1\)"),
    (lambda: F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3)), np.zeros(3)), r"bias has shape \(3,\)"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 0), "kernel=0"),
    (lambda: F.avg_pool2d(np.zeros((1, 1, 4, 4)), (2, 0)), r"kernel=\(2, 0\)"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=2), "padding=\\(2, 2\\)"),
    (lambda: F.max_pool2d(np.zeros((1, 1, 2, 2)), 5), r"kernel=\(5, 5\)"),
    (lambda: F.avg_pool2d(np.zeros((4, 4)), 2), r"x has shape \(4, 4\)"),
])
def test_bad_arguments_raise_value_error_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
