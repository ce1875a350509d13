"""int4 packing (refq.quant.int4): byte layout, pack/unpack inverse (odd lengths, any axis), input checks."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refq.quant.int4 import pack_int4, unpack_int4

INT4 = st.integers(-8, 7)


def test_low_nibble_holds_the_even_index():
    q = np.array([[-8, 7, -1, 0, 3]], np.int8)
    packed = pack_int4(q)
    assert packed.dtype == np.uint8 and packed.shape == (1, 3)
    assert packed.tolist() == [[0x78, 0x0F, 0x03]]  # (-8 -> 0x8 | 7 << 4), (-1 -> 0xF | 0), (3 | pad 0)


@given(q=hnp.arrays(np.int8, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9), elements=INT4),
       data=st.data())
def test_unpack_inverts_pack_along_any_axis(q, data):
    axis = data.draw(st.integers(-q.ndim, q.ndim - 1))
    packed = pack_int4(q, axis=axis)
    expected = list(q.shape)
    expected[axis] = (q.shape[axis] + 1) // 2
    assert packed.dtype == np.uint8 and packed.shape == tuple(expected)
    out = unpack_int4(packed, q.shape[axis], axis=axis)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, q)


@given(packed=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=9)))
def test_pack_inverts_unpack_for_every_byte(packed):
    length = 2 * packed.shape[-1]
    np.testing.assert_array_equal(pack_int4(unpack_int4(packed, length)), packed)


def test_odd_length_pads_a_zero_code():
    packed = pack_int4(np.array([5, -3, -8], np.int8))
    assert packed.tolist() == [0xD5, 0x08]  # -3 -> 0xD; the pad nibble is 0
    np.testing.assert_array_equal(unpack_int4(packed, 3), [5, -3, -8])


def test_inputs_are_not_modified():
    q = np.array([[1, -2, 3]], np.int8)
    before = q.copy()
    packed = pack_int4(q)
    packed_before = packed.copy()
    unpack_int4(packed, 3)
    np.testing.assert_array_equal(q, before)
    np.testing.assert_array_equal(packed, packed_before)


@pytest.mark.parametrize("value", [8, -9, 127, -128])
def test_out_of_range_codes_raise_naming_the_value(value):
    with pytest.raises(ValueError, match=f"first: {value}"):
        pack_int4(np.array([0, value, 1], np.int8))


@pytest.mark.parametrize("q, match", [
    (np.zeros(4, np.int16), "dtype int16"),
    (np.zeros(4, np.uint8), "dtype uint8"),
    ([1, 2], "dtype list"),
    (np.zeros((), np.int8), "0-d"),
])
def test_bad_pack_inputs(q, match):
    with pytest.raises(ValueError, match=match):
        pack_int4(q)


def test_bad_axis_and_length():
    with pytest.raises(ValueError, match="axis=2"):
        pack_int4(np.zeros((2, 2), np.int8), axis=2)
    with pytest.raises(ValueError, match="dtype int8"):
        unpack_int4(np.zeros(2, np.int8), 4)
    with pytest.raises(ValueError, match="length=5 needs 3"):
        unpack_int4(np.zeros(2, np.uint8), 5)
    with pytest.raises(ValueError, match="length=-1"):
        unpack_int4(np.zeros(2, np.uint8), -1)
