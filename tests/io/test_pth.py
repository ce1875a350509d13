"""PyTorch zip checkpoints without torch: round trips, a file written by real torch.save, strided/aliased
storages, malformed archives, and malicious pickles that must raise before running anything."""
from __future__ import annotations

import base64
import copyreg
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from refq.io.pth import (UnsafePickleError, flatten, load_pth, read_checkpoint, save_pth, state_dict_pickle,
                         tensor_pickle, write_archive)

# torch 2.13 `torch.save(ckpt, "tiny.pth")` of (zlib + base64):
#   base = torch.arange(12.).reshape(3, 4)
#   ckpt = {"model": {"w": base, "wt": base.t(), "row": base[1, 1:], "h": torch.arange(3, dtype=torch.float16) / 2,
#                     "b": torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16), "i": torch.tensor([-1, 2**40]),
#                     "m": torch.tensor([True, False]), "q": torch.tensor([-128, 127], dtype=torch.int8),
#                     "p": torch.nn.Parameter(torch.ones(2, 2))},
#           "epoch": 3, "name": "tiny", "lr": 0.5}
TORCH_SAVED_TINY = (
    "eNqll9tPHFUcx8/u7K3LxcXSIqIVrZettrDX2aWW27RO0akWprau+LAZdgdm4rDDb/ZQbBMiiQHtW9MH45Px1cujiYkPhhj/AW18"
    "84HExOiTf4Key7KdM0A3wAk/htn8vp/f9wzn92OY1aQIQokE2rN60CmE7cad0bqBjZGVDx1V6UPzwbURXgeUrkSJYNmtmw6E1iGc"
    "roTI/RpINex6NWukuoptp5mseubCqu3Uq9hsNF2vejuXhEg6XYmT5CbJNJZMiHJJUnVcA9/gHyYhxoAZiFckcq2trEJC68ZwYk5D"
    "mqRFtiCpRbTQFnTdq9VcxzFr2HYbzeR1r256Zv2KXcNJ6D6nQw+GXh2eqISpPQwpi5S3olbMilsM2EeBEU3agie1EOWevGdRXT+G"
    "UzqcZtU9dw0GgsKn5rSoJm3CoBbahKe5aAjDMzo8y6xbcIZLWtubMZzF9u6eYylZGCYsCcPzbFeb8AJlneWsFzG8pMPLLHEBXhFY"
    "CntWWbnN448/B+c479UW7zXKO895FzCM6DDKEm3ICLxrbmOpzcqylDzkCCuMIU9Z4U0oUFaRs2QMJR3KLHEZxkRvruu0WRdZSgFe"
    "56xLLdY4ZU1w1iSGKR2mWSKAIrAuW4bXZl1mKUW4wllvtFgqZV3lrBkMb+rwFktcAe2As7hieMayiU0vCdd2f6tMIsPbhB3B8A5j"
    "a+EtuE4u5JTNcv4cBl2HG5+xm3c/hZs63FplnWCuuDUL3tOkCukt1CB8qLAfaT/B++z4OR7MX53c4b22OjKrxRNff/vw/gw5YjRm"
    "D+zLfiTzvhxZdL1lA1dvm16THHdVye1tz44rSwv/8O8fn9At0zi48AC62Crcataq4dhLjWWzgVVFPkJtuuQCNTC5Bv/QhxJ+rIFe"
    "pHADC3ew6dLeVpWJI9bdXY6NsWNSD5vjfw7GSJXYYz10oelHU3E0oyrjxzPAqRuT5NsU+SKxQeIrEtskdkiQgihFYphEZpo6/Wh9"
    "cSJD52EHpwM+p1lVOYn2r19Glyi12/79+8PuP3fs/W9Ppranpmj9ZHXml8PWzx+7/n+txeAhWjmeqHw3cDdFblMdnJR8Tgqqkj+K"
    "kxCr+NPZnyudz38XivoqFlUlhOY3Pqb6wb92fjysXmZ6fvYeBaXd6rf+7rz/7t05dKz5k0/Sir9+uXSzs/8hVGwNILaBpunZZALd"
    "Negf+6pdV5Xs4Q1k5PJYMTdWlAulcjGXkYvFUjmTJZ/J+XKhlB+T82OlbCErU5eZhx98kyY+0sxliJpt+/TP7p49zoX3qKDUP337"
    "BdkXEtp31AcJ/vE5IBD6IuigmR2E+OdfrwB5sAtpz92g1j+RugTt6Sjyz8ug0D90ROG2IMwGhf5pEagY8wtzQaG/uUXh54IwHxT6"
    "e1QUDsf9wkJQ6G9OUfhAEBaDQn8fisLfBKEcFPrbqVu0mkBC0waV/iM+JHrdVe7ffLNaLHa+lXpGuuD7L0K8piR+LZ/gV6Kjr/9o"
    "puWTv4JEY1zTw/J57v+Y5r13"
)


def archive(tmp_path, data_pkl: bytes, storages: dict | None = None, name: str = "x.pth"):
    """A torch.save-shaped zip around hand-made pickle bytes."""
    path = tmp_path / name
    write_archive(path, data_pkl, storages or {})
    return path


def test_reads_a_file_written_by_torch(tmp_path):
    path = tmp_path / "tiny.pth"
    path.write_bytes(zlib.decompress(base64.b64decode("".join(TORCH_SAVED_TINY))))
    params, extras = read_checkpoint(path)
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    expected = {"model.w": base, "model.wt": base.T, "model.row": base[1, 1:],
                "model.h": np.arange(3, dtype=np.float16) / np.float16(2),
                "model.b": np.array([1.5, -2.25, 3.0], np.float32), "model.i": np.array([-1, 2 ** 40]),
                "model.m": np.array([True, False]), "model.q": np.array([-128, 127], np.int8),
                "model.p": np.ones((2, 2), np.float32)}
    assert set(params) == set(expected) and extras == {"epoch": 3, "name": "tiny", "lr": 0.5}
    for name, want in expected.items():
        assert params[name].dtype == want.dtype, name
        np.testing.assert_array_equal(params[name], want, err_msg=name)
        assert params[name].flags.c_contiguous and params[name].flags.writeable


arrays = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8,
                          np.bool_]).flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3,
                                                                                        min_side=0, max_side=4)))


@given(st.dictionaries(st.text(alphabet="abc_", min_size=1, max_size=6), arrays, max_size=4))
def test_round_trip(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("pth") / "model.pth"
    save_pth(path, tensors)
    params, extras = read_checkpoint(path)
    assert set(params) == set(tensors) and extras == {}
    for name, arr in tensors.items():
        assert params[name].dtype == arr.dtype and params[name].shape == arr.shape, name
        np.testing.assert_array_equal(params[name], arr, err_msg=name)


def test_writer_layout_matches_torch_save(tmp_path):
    path = tmp_path / "model.pth"
    save_pth(path, {"a": np.zeros(3, np.float32), "b": np.zeros(2, np.int64)})
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["model/data.pkl", "model/.format_version", "model/.storage_alignment",
                                 "model/byteorder", "model/data/0", "model/data/1", "model/version",
                                 "model/.data/serialization_id"]
        assert zf.read("model/byteorder") == b"little" and zf.read("model/version") == b"3\n"
        for info in zf.infolist():  # every payload starts on a 64-byte boundary, like torch's writer
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename


def storage_views(tmp_path, views, numel=12, storage_type="FloatStorage", payload=None):
    """An archive whose tensors are views (offset, size, stride) of one storage '0' = arange(numel)."""
    records = {name: tensor_pickle("0", storage_type, numel, *view) for name, view in views.items()}
    data = payload if payload is not None else np.arange(numel, dtype=np.float32).tobytes()
    return archive(tmp_path, state_dict_pickle(records), {"0": data})


def test_strided_and_aliased_views_share_one_storage(tmp_path):
    path = storage_views(tmp_path, {"w": (0, (3, 4), (4, 1)), "wt": (0, (4, 3), (1, 4)), "row": (5, (3,), (1,)),
                                    "col": (2, (3, 1), (4, 99)), "empty": (12, (0, 5), (5, 1)), "scalar": (7, (), ())})
    params, _ = read_checkpoint(path)
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(params["w"], base)
    np.testing.assert_array_equal(params["wt"], base.T)
    np.testing.assert_array_equal(params["row"], [5, 6, 7])
    np.testing.assert_array_equal(params["col"], [[2], [6], [10]])
    assert params["empty"].shape == (0, 5) and params["scalar"].shape == () and params["scalar"] == 7
    params["w"][0, 0] = 100.0  # each tensor owns its memory
    assert params["wt"][0, 0] == 0.0


def test_bf16_storage_is_widened(tmp_path):
    bits = np.array([0x3FC0, 0xC010, 0x4040], np.uint16)  # 1.5, -2.25, 3.0
    path = storage_views(tmp_path, {"b": (0, (3,), (1,))}, 3, "BFloat16Storage", bits.tobytes())
    params, _ = read_checkpoint(path)
    assert params["b"].dtype == np.float32
    np.testing.assert_array_equal(params["b"], [1.5, -2.25, 3.0])


@pytest.mark.parametrize("view, fragment", [
    ((10, (3,), (1,)), "needs 13 elements"),
    ((0, (4, 4), (4, 1)), "needs 16 elements"),
    ((0, (24,), (0,)), "stride-0"),
    ((13, (0,), (1,)), "invalid tensor view offset=13"),
    ((0, (3,), (-1,)), "invalid tensor view"),
    ((0, (3, 4), (4,)), "invalid tensor view"),
])
def test_views_outside_their_storage_raise(tmp_path, view, fragment):
    with pytest.raises(ValueError, match=fragment):
        read_checkpoint(storage_views(tmp_path, {"w": view}))


def test_many_views_of_one_storage_cannot_amplify_memory(tmp_path):
    path = storage_views(tmp_path, {f"v{i}": (0, (12,), (1,)) for i in range(5)})
    with pytest.raises(ValueError, match="tensors would copy 240 bytes, more than 4x the 48 bytes"):
        load_pth(path)
    assert len(load_pth(storage_views(tmp_path, {f"v{i}": (0, (12,), (1,)) for i in range(4)}))) == 4


def test_storage_seen_with_two_types_or_sizes_raises(tmp_path):
    records = {"a": tensor_pickle("0", "FloatStorage", 4, 0, (4,), (1,)),
               "b": tensor_pickle("0", "HalfStorage", 8, 0, (4,), (1,))}
    path = archive(tmp_path, state_dict_pickle(records), {"0": bytes(16)})
    with pytest.raises(ValueError, match=r"used as FloatStorage\[4\] and as HalfStorage\[8\]"):
        load_pth(path)


@pytest.mark.parametrize("records, storages, fragment", [
    ({"w": tensor_pickle("0", "FloatStorage", 12, 0, (12,), (1,))}, {"0": bytes(40)}, "has 40"),
    ({"w": tensor_pickle("7", "FloatStorage", 1, 0, (1,), (1,))}, {}, "data/7' is missing"),
    ({"w": b"cfoo\nbar\n)R"}, {}, "refusing global foo.bar"),
    ({"w": b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000tQ"}, {}, "unsupported persistent id"),
    ({"w": b"ctorch._utils\n_rebuild_tensor_v2\n(K\x00K\x00)))\x89tR"}, {}, "tensor storage is a int"),
    ({"w": b"ctorch\nFloatStorage\n)R"}, {}, "not callable"),
])
def test_inconsistent_state_dicts_raise(tmp_path, records, storages, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_pth(archive(tmp_path, state_dict_pickle(records), storages))


def test_torch_size_becomes_a_tuple(tmp_path):
    path = archive(tmp_path, state_dict_pickle({"s": b"ctorch\nSize\n((K\x02K\x03ttR"}))
    assert load_pth(path) == {"s": (2, 3)}
    assert read_checkpoint(path) == ({}, {"s.0": 2, "s.1": 3})


class Run:
    """An object whose pickle calls fn(*args) on load: the classic pickle exploit."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def malicious_pickles(sentinel) -> dict[str, tuple[bytes, str]]:
    """name -> (data.pkl bytes that would create `sentinel` if executed, global the reader must refuse)."""
    cmd = f"touch {sentinel}"
    q = cmd.encode()
    unicode = b"X" + struct.pack("<I", len(q)) + q
    return {
        "reduce os.system protocol 2 (GLOBAL)": (pickle.dumps(Run(os.system, cmd), protocol=2), "posix.system"),
        "reduce os.system protocol 4 (STACK_GLOBAL)": (pickle.dumps(Run(os.system, cmd), protocol=4), "posix.system"),
        "reduce os.system protocol 0": (pickle.dumps(Run(os.system, cmd), protocol=0), "posix.system"),
        # protocol 2 spells the builtins module the Python 2 way
        "eval": (pickle.dumps(Run(eval, f"__import__('os').system({cmd!r})"), protocol=2), "__builtin__.eval"),
        "exec": (pickle.dumps(Run(exec, f"open({str(sentinel)!r}, 'w')"), protocol=4), "builtins.exec"),
        "getattr chain": (b"\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(X\x02\x00\x00\x00ostR"
                          b"X\x06\x00\x00\x00systemtR(" + unicode + b"tR.", "builtins.getattr"),
        "dotted name": (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2.__globals__\n.",
                        "torch._utils._rebuild_tensor_v2.__globals__"),
        "INST opcode": (b"(S'" + q + b"'\nios\nsystem\n.", "os.system"),
        "OBJ opcode": (b"(cos\nsystem\nS'" + q + b"'\no.", "os.system"),
        "NEWOBJ subprocess": (b"\x80\x02csubprocess\nPopen\n](X\x05\x00\x00\x00touch" + unicode[:1]
                              + struct.pack("<I", len(str(sentinel))) + str(sentinel).encode() + b"e\x85\x81.",
                              "subprocess.Popen"),
        "load_from_bytes": (b"\x80\x02ctorch.storage\n_load_from_bytes\nC\x01xtR.", "torch.storage._load_from_bytes"),
        "unknown module is not imported": (b"\x80\x02cno_such_module_xyz\nf\n.", "no_such_module_xyz.f"),
        "inside a valid state dict": (state_dict_pickle({
            "w": tensor_pickle("0", "FloatStorage", 1, 0, (1,), (1,)),
            "evil": pickle.dumps(Run(os.system, cmd), protocol=2)[2:-1]}), "posix.system"),
        "as a tensor's backward hook": (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x00K\x00)))\x89cposix\nsystem\n"
                                        + unicode + b"\x85RtR.", "posix.system"),
    }


@pytest.mark.parametrize("case", sorted(malicious_pickles("x")))
def test_malicious_pickles_are_refused_without_running(tmp_path, case):
    sentinel = tmp_path / "pwned"
    data, refused = malicious_pickles(sentinel)[case]
    path = archive(tmp_path, data, {"0": bytes(4)})
    with pytest.raises(UnsafePickleError, match=f"refusing global {refused}") as info:
        load_pth(path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, pickle.UnpicklingError)
    assert not sentinel.exists()


def test_extension_registry_cannot_bypass_the_allowlist(tmp_path):
    sentinel = tmp_path / "pwned"
    q = f"touch {sentinel}".encode()
    copyreg.add_extension("os", "system", 240)
    try:
        data = b"\x80\x02\x82\xf0X" + struct.pack("<I", len(q)) + q + b"\x85R."  # EXT1 240 -> os.system
        with pytest.raises(UnsafePickleError, match="refusing global os.system"):
            load_pth(archive(tmp_path, data))
    finally:
        copyreg.remove_extension("os", "system", 240)
    assert not sentinel.exists()


@pytest.mark.parametrize("data, fragment", [
    (b"\x80\x02Nr\xff\xff\xff\x7f.", "LONG_BINPUT argument 2147483647"),  # memo index: would allocate 16 GB
    (b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b".", "malformed pickle"),  # BINBYTES8 of 1 TB
    (b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"N.", "FRAME argument"),
    (b"\x80\x02N", "malformed pickle"),  # no STOP
    (b"\x80\x02h\x05.", "malformed pickle"),  # BINGET of an empty memo
    (b"\x80\x02]q\x00h\x00a.", "shared, cyclic"),  # a list that contains itself
])
def test_malformed_pickles_raise_value_error(tmp_path, data, fragment):
    with pytest.raises(ValueError, match=fragment):
        read_checkpoint(archive(tmp_path, data))


def test_archive_level_problems(tmp_path):
    legacy = tmp_path / "old.pth"
    legacy.write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.")
    with pytest.raises(ValueError, match="legacy"):
        load_pth(legacy)
    text = tmp_path / "text.pth"
    text.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not a zip archive"):
        load_pth(text)
    good = tmp_path / "good.pth"
    save_pth(good, {"w": np.arange(4, dtype=np.float32)})
    raw = good.read_bytes()
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt zip archive"):
        load_pth(truncated)
    with zipfile.ZipFile(good) as zf:
        start = zf.getinfo("good/data/0").header_offset
    flipped = bytearray(raw)
    flipped[raw.index(np.arange(4, dtype=np.float32).tobytes(), start)] ^= 1
    (tmp_path / "crc.pth").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="Bad CRC-32"):
        load_pth(tmp_path / "crc.pth")


@pytest.mark.parametrize("entries, fragment", [
    ({"a/data.pkl": b"N.", "a/byteorder": b"big"}, "only little-endian"),
    ({"a/data.pkl": b"N.", "b/data.pkl": b"N."}, "exactly one"),
    ({"a/data.pkl": b"N.", "other/x": b""}, "not an uncompressed record under 'a/'"),
    ({"a/data.pkl": b"N.", "a/constants.pkl": b"N."}, "TorchScript"),
    ({"a/x.pkl": b"N."}, "exactly one"),
])
def test_unexpected_archive_layouts_raise(tmp_path, entries, fragment):
    path = tmp_path / "odd.pth"
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in entries.items():
            zf.writestr(name, payload)
    with pytest.raises(ValueError, match=fragment):
        load_pth(path)


def test_compressed_records_are_refused(tmp_path):
    path = tmp_path / "z.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/data.pkl", b"N.")
    with pytest.raises(ValueError, match="compression 8"):
        load_pth(path)


def test_flatten_names_nested_values_and_refuses_odd_structures():
    w = np.zeros(2)
    params, extras = flatten({"enc": {"layer": [w, {"b": w}]}, "step": 3, "tag": None})
    assert list(params) == ["enc.layer.0", "enc.layer.1.b"] and extras == {"step": 3, "tag": None}
    assert flatten(w)[0].keys() == {"tensor"}
    deep: list = []
    node = deep
    for _ in range(100):
        node.append([])
        node = node[0]
    for bad, fragment in [({"a.b": w, "a": {"b": w}}, "flatten to the name 'a.b'"), ({"a": b"raw"}, "holds a bytes"),
                          ({(1, 2): w}, "not a str or int"), ({"a": deep}, "nested deeper than 64")]:
        with pytest.raises(ValueError, match=fragment):
            flatten(bad)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


ATTRS = b"}" + _str("pwned") + b"K\x01s"  # the BUILD state {'pwned': 1}


@pytest.mark.parametrize("target", [
    _global("torch._utils", "_rebuild_tensor_v2"), _global("torch._utils", "_rebuild_parameter"),
    _global("torch", "Size"), _global("torch", "FloatStorage"), _global("collections", "OrderedDict"),
    b"]",  # a list
    _global("collections", "OrderedDict") + b")R",  # an OrderedDict instance, but with a dunder attribute:
])
def test_build_is_refused_before_it_sets_anything(tmp_path, target):
    from refq.io.pth import _StateDictUnpickler

    state = (b"}" + _str("__class__") + b"K\x01s") if target.endswith(b")R") else ATTRS
    with pytest.raises(UnsafePickleError, match="refusing BUILD"):
        load_pth(archive(tmp_path, b"\x80\x02" + target + state + b"b."))
    for method in (_StateDictUnpickler._rebuild_tensor, _StateDictUnpickler._rebuild_parameter,
                   _StateDictUnpickler._size):
        assert method.__dict__ == {}


def test_build_sets_the_metadata_of_a_state_dict(tmp_path):
    body = state_dict_pickle({"w": tensor_pickle("0", "FloatStorage", 1, 0, (1,), (1,))})
    metadata = b"}" + _str("_metadata") + b"}" + _str("") + b"}" + _str("version") + b"K\x01sss"
    data = body[:-1] + metadata + b"b."  # torch: OrderedDict.__reduce__ state {'_metadata': {'': {'version': 1}}}
    obj = load_pth(archive(tmp_path, data, {"0": struct.pack("<f", 2.5)}))
    assert list(obj) == ["w"] and obj["w"].tolist() == [2.5] and obj._metadata == {"": {"version": 1}}


def test_unsupported_pickle_protocol_names_the_file(tmp_path):
    path = archive(tmp_path, b"\x80\x06N.")
    with pytest.raises(ValueError, match=f"{path}: malformed pickle: unsupported pickle protocol: 6"):
        load_pth(path)


def test_nested_names_cannot_blow_up_memory(tmp_path):
    """One 50,000-character key, referenced by memo (3 bytes each) at 60 levels with 2,000 leaves at the bottom,
    would make 2,000 names of 3 MB each; the names of a ~70 KB file may take only 16x its size."""
    key = "k" * 50_000
    inner = b"}(" + b"".join(_str(str(i)) + b"N" for i in range(2000)) + b"u"
    data = inner
    for _ in range(60):
        data = b"}h\x00" + data + b"s"  # {key: data}, the key by BINGET
    memo = _str(key) + b"q\x000"  # BINUNICODE, BINPUT 0, POP
    path = archive(tmp_path, b"\x80\x02" + memo + b"}(" + _str("top") + data + b"u.")
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match="dotted names of the nested entries exceed"):
        read_checkpoint(path)
    params, extras = read_checkpoint(archive(tmp_path, b"\x80\x02}(" + _str("a") + b"}(" + _str("b") + b"Nuu."))
    assert extras == {"a.b": None}
