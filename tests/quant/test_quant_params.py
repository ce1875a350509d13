"""QParams validation, code ranges and scale layouts (refq.quant.params)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from refq.quant.params import QParams, broadcast_params, qmax, qmin, scale_shape


@pytest.mark.parametrize("bits, lo, hi", [(2, -2, 1), (4, -8, 7), (8, -128, 127)])
def test_code_range_fits_int8(bits, lo, hi):
    assert (qmin(bits), qmax(bits)) == (lo, hi)
    assert np.iinfo(np.int8).min <= qmin(bits) and qmax(bits) <= np.iinfo(np.int8).max


@pytest.mark.parametrize("shape, layout, expected", [
    ((4, 6), ("tensor", None, None), ()),
    ((4, 6), ("channel", 0, None), (4, 1)),
    ((4, 6), ("channel", -1, None), (1, 6)),
    ((2, 3, 6), ("token", None, None), (2, 3, 1)),
    ((4, 6), ("group", 1, 3), (4, 2)),
    ((2, 4, 6), ("group", 1, 2), (2, 2, 6)),
])
def test_scale_shape_layouts(shape, layout, expected):
    assert scale_shape(shape, *layout, "test") == expected


def test_group_broadcast_repeats_each_scale_group_size_times():
    scale = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    p = QParams(scale, np.zeros((2, 2), np.int32), 4, axis=1, symmetric=True, granularity="group", group_size=3)
    s, z = broadcast_params(p, (2, 6), "test")
    np.testing.assert_array_equal(s, [[1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4]])
    assert z.shape == (2, 6)


def test_qparams_arrays_are_read_only_copies():
    scale = np.ones((3, 1), np.float32)
    p = QParams(scale, np.zeros((3, 1), np.int32), 8, axis=0, granularity="channel")
    scale[0, 0] = 5.0
    assert p.scale[0, 0] == 1.0
    with pytest.raises(ValueError):
        p.scale[0, 0] = 2.0


@pytest.mark.parametrize("kwargs, needle", [
    (dict(scale=np.float32(1), zero=np.int32(0), bits=9), "bits=9"),
    (dict(scale=np.float32(1), zero=np.int32(0), bits=1), "bits=1"),
    (dict(scale=np.float32(1), zero=np.int32(0), bits=4.0), "bits=4.0"),
    (dict(scale=np.float64(1), zero=np.int32(0), bits=4), "float64"),
    (dict(scale=np.float32(0), zero=np.int32(0), bits=4), "min 0.0"),
    (dict(scale=np.float32(1), zero=np.int32(3), bits=4), "zero == 0"),
    (dict(scale=np.float32(1), zero=np.int32(9), bits=4, symmetric=False), "[9, 9]"),
    (dict(scale=np.float32(1), zero=np.int32(0), bits=4, granularity="row"), "'row'"),
    (dict(scale=np.ones((2, 1), np.float32), zero=np.zeros((2, 1), np.int32), bits=4, granularity="channel"), "axis=None"),
])
def test_qparams_rejects_bad_fields_naming_them(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        QParams(**kwargs)


def test_scale_shape_names_group_size_that_does_not_divide():
    with pytest.raises(ValueError, match=re.escape("group_size=4 does not divide axis 1 of length 6")):
        scale_shape((3, 6), "group", 1, 4, "test")


def test_scale_shape_names_bad_axis():
    with pytest.raises(ValueError, match=re.escape("axis=2")):
        scale_shape((3, 6), "channel", 2, None, "test")


def test_broadcast_rejects_params_of_another_shape():
    p = QParams(np.ones((4, 1), np.float32), np.zeros((4, 1), np.int32), 4, axis=0, granularity="channel")
    with pytest.raises(ValueError, match=re.escape("(4, 1)")):
        broadcast_params(p, (3, 5), "test")
