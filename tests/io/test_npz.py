"""refq .npz checkpoints: round trip with manifest, never unpickling, clear errors on foreign or broken files."""
from __future__ import annotations

import json
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import refq
from refq.io.npz import MANIFEST_KEY, load_npz, save_npz

arrays = st.sampled_from([np.float32, np.float64, np.int8, np.uint8, np.int32, np.bool_]).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
names = st.text(alphabet="abcxyz._0123", min_size=1, max_size=12)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                        max_size=3), max_leaves=8)


@given(st.dictionaries(names, arrays, max_size=4), st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_round_trip(tmp_path_factory, params, manifest):
    path = tmp_path_factory.mktemp("npz") / "m.npz"
    save_npz(path, params, manifest)
    back, meta = load_npz(path)
    assert set(back) == set(params)
    for name, arr in params.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
        np.testing.assert_array_equal(back[name], arr, err_msg=name)
    expected = {**manifest, "format": "refq-npz", "format_version": 1, "refq_version": refq.__version__}
    assert meta == expected
    with np.load(path, allow_pickle=False) as z:  # an ordinary .npz for NumPy
        assert json.loads(str(z[MANIFEST_KEY])) == expected


def test_names_that_clash_with_savez_arguments_survive(tmp_path):
    params = {"file": np.ones(2), "allow_pickle": np.zeros(1), "encoder.layer.0.weight": np.eye(2, dtype=np.float32)}
    save_npz(tmp_path / "m.npz", params, {"config": {"d": 2}})
    back, meta = load_npz(tmp_path / "m.npz")
    assert set(back) == set(params) and meta["config"] == {"d": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # the temporary file was renamed away


def test_save_never_follows_a_planted_temporary_name(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "m.npz.tmp").symlink_to(victim)  # the fixed name earlier versions wrote to
    save_npz(tmp_path / "m.npz", {"a": np.arange(3)}, {})
    assert victim.read_text() == "keep me" and (tmp_path / "m.npz.tmp").is_symlink()
    assert set(load_npz(tmp_path / "m.npz")[0]) == {"a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.npz.tmp", "victim.txt"]
    (tmp_path / "plain").write_bytes(b"")
    assert (tmp_path / "m.npz").stat().st_mode == (tmp_path / "plain").stat().st_mode  # the umask's usual mode


def test_a_failed_save_leaves_no_temporary_file_and_the_old_file_intact(tmp_path, monkeypatch):
    save_npz(tmp_path / "m.npz", {"a": np.arange(3)}, {"v": 1})

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="No space left"):
        save_npz(tmp_path / "m.npz", {"a": np.arange(4)}, {"v": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    assert load_npz(tmp_path / "m.npz")[1]["v"] == 1
    with pytest.raises(ValueError, match="is a directory"):
        save_npz(tmp_path, {"a": np.arange(3)}, {})


def test_numpy_errors_name_the_file_and_the_member(tmp_path):
    path = tmp_path / "eof.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", b"")  # EOF before the .npy magic string
    with pytest.raises(ValueError, match=r"eof\.npz: a\.npy: EOF"):
        load_npz(path)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 16) + b"{'descr': 1}".ljust(16))
    with pytest.raises(ValueError, match=r"eof\.npz: a\.npy: "):
        load_npz(path)


@pytest.mark.parametrize("params, manifest, fragment", [
    ({"a": np.array([object()])}, {}, "non-object ndarray"),
    ({"a": [1, 2]}, {}, "expected a non-object ndarray"),
    ({MANIFEST_KEY: np.zeros(1)}, {}, "not a usable array name"),
    ({"": np.zeros(1)}, {}, "not a usable array name"),
    ({"a": np.zeros(1)}, {"x": np.zeros(1)}, "not JSON-serialisable"),
])
def test_save_refuses_bad_input(tmp_path, params, manifest, fragment):
    with pytest.raises(ValueError, match=fragment):
        save_npz(tmp_path / "m.npz", params, manifest)


def test_load_refuses_foreign_and_broken_files(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(2))
    with pytest.raises(ValueError, match="no __manifest__ entry"):
        load_npz(plain)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, a=np.array([{"x": 1}], dtype=object), __manifest__=np.array("{}"))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_npz(pickled)
    future = tmp_path / "future.npz"
    np.savez(future, __manifest__=np.array(json.dumps({"format": "refq-npz", "format_version": 99})))
    with pytest.raises(ValueError, match="format_version 99"):
        load_npz(future)
    other = tmp_path / "other.npz"
    np.savez(other, __manifest__=np.array("[1, 2]"))
    with pytest.raises(ValueError, match="manifest format is 'list'"):
        load_npz(other)
    text = tmp_path / "text.npz"
    text.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_npz(text)
    good = tmp_path / "good.npz"
    save_npz(good, {"a": np.arange(100.0)}, {})
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:700])
    with pytest.raises(ValueError):
        load_npz(tmp_path / "cut.npz")
    with zipfile.ZipFile(good) as zf:
        assert sorted(zf.namelist()) == ["__manifest__.npy", "a.npy"]
    lying = tmp_path / "lying.npz"  # header says 10^12 elements: refused before anything is allocated
    with zipfile.ZipFile(lying, "w") as zf:
        with zf.open("a.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)})
            f.write(bytes(16))
    with pytest.raises(ValueError, match=r"declares shape \(1000000000000,\) of float64 \(8000000000000 bytes\) "
                                         r"but stores 16 bytes"):
        load_npz(lying)


def test_load_with_config_names_what_is_missing(tmp_path, rng):
    from refq.io.npz import load_with_config
    from refq.models import vit

    cfg = vit.ViTConfig(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2)
    params = vit.init_params(cfg, rng)
    with pytest.raises(ValueError, match=r"ViT checkpoint .*nope\.npz not found \(hint\)"):
        load_with_config(tmp_path / "nope.npz", vit.ViTConfig, vit.check_params, "ViT", " (hint)")
    save_npz(tmp_path / "bare.npz", params, {"seed": 0})
    with pytest.raises(ValueError, match="no 'config' entry"):
        load_with_config(tmp_path / "bare.npz", vit.ViTConfig, vit.check_params, "ViT")
    save_npz(tmp_path / "ok.npz", params, {"config": cfg.to_dict()})
    got, got_cfg, manifest = load_with_config(tmp_path / "ok.npz", vit.ViTConfig, vit.check_params, "ViT")
    assert got_cfg == cfg and manifest["config"] == cfg.to_dict() and set(got) == set(params)
    wrong = vit.ViTConfig(img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2).to_dict()
    save_npz(tmp_path / "wrong.npz", params, {"config": wrong})
    with pytest.raises(ValueError):  # check_params refuses arrays that do not fit the config
        load_with_config(tmp_path / "wrong.npz", vit.ViTConfig, vit.check_params, "ViT")
