"""int8 spotter: the floor's quantized convolution equals its NumPy twin, and a tiny model agrees with float."""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from refq.autograd import Tensor, no_grad
from refq.autograd import functional as F
from refq.spotter import model as M
from refq.models.ops import FLOAT_OPS
from refq.quant.qconv import QConv, conv2d, conv2d_reference, quantize_conv_weight
from refq.spotter.quantized import Int8ConvOps, quantize_spotter, weight_bytes

TINY = M.SpotterConfig(backbone=(4, 6, 8, 8), det_ctx=4, rec_channels=(8, 8, 8), text_scale=64.0)


@given(seed=st.integers(0, 2**31), c=st.integers(1, 5), o=st.integers(1, 6), k=st.sampled_from([1, 3]),
       stride=st.integers(1, 2), dilation=st.integers(1, 2))
def test_int8_conv_equals_its_numpy_twin_and_approximates_float(seed, c, o, k, stride, dilation):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, 9, 11)).astype(np.float32)
    w = rng.standard_normal((o, c, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    pad = dilation * (k // 2)
    qw = quantize_conv_weight(w)
    y = conv2d(x, qw, b, stride, pad, dilation)
    np.testing.assert_array_equal(y, conv2d_reference(x, qw, b, stride, pad, dilation))
    ref = F.conv2d(x, w, b, stride=stride, padding=pad, dilation=dilation).data
    assert y.shape == ref.shape and y.dtype == np.float32
    assert np.abs(y - ref).max() <= 0.05 * np.abs(ref).max() + 1e-3


def test_weight_codes_are_per_channel_int8(rng):
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32) * np.array([1, 10, 100], np.float32)[:, None, None, None]
    qw = quantize_conv_weight(w)
    assert qw.codes.dtype == np.int8 and qw.codes.shape == (3, 18) and np.abs(qw.codes).max() == 127
    np.testing.assert_allclose(qw.codes * qw.scale[:, None], w.transpose(0, 2, 3, 1).reshape(3, -1),  # (kh, kw, C) rows
                               atol=qw.scale.max() / 2 + 1e-6)


def test_quantized_tiny_model_agrees_with_float(rng):
    p = M.init_params(TINY, rng)
    q = quantize_spotter(p, TINY)
    assert isinstance(q, Int8ConvOps) and isinstance(q.convs["backbone.conv1"], QConv) and "det.geo" in q.convs
    assert weight_bytes(p, q) < 0.4 * weight_bytes(p)
    images = rng.integers(0, 256, (2, 32, 64), dtype=np.uint8)
    boxes = np.array([[2.0, 3.0, 60.0, 20.0], [5.0, 10.0, 30.0, 30.0]])
    outs = []
    for ops in (FLOAT_OPS, q):
        with no_grad():
            feats = M.backbone(p, Tensor(M.normalize_images(images)), ops)
            score, geo = M.det_head(p, TINY, feats, ops)
            widths = M.roi_widths(TINY, boxes)
            logits = M.recognizer(p, TINY, M.pool_rois(TINY, feats, boxes, np.array([0, 1]), widths), widths, ops)
        outs.append((score.data, geo.data, logits.data))
    for name, a, b in zip(("score", "geo", "logits"), *outs):  # ~8 layers of 8-bit noise: a few percent
        assert np.abs(a - b).max() <= 0.15 * np.abs(a).max(), (name, np.abs(a - b).max(), np.abs(a).max())
        assert np.abs(a - b).mean() <= 0.05 * a.std(), name
