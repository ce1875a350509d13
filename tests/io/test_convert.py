"""`refq convert` and format detection: each source format becomes an .npz with the same tensors and a manifest."""
from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest

from refq.cli import main
from refq.io import detect_format, read_checkpoint
from refq.io.npz import load_npz
from refq.io.pth import save_pth
from refq.io.safetensors import save_safetensors


def tensors(rng) -> dict[str, np.ndarray]:
    return {"encoder.layer.0.weight": rng.standard_normal((4, 3)).astype(np.float32),
            "encoder.layer.0.bias": rng.standard_normal(4).astype(np.float16),
            "position_ids": np.arange(5, dtype=np.int64)[None]}


@pytest.mark.parametrize("name, writer", [("m.safetensors", save_safetensors), ("m.pth", save_pth),
                                          ("pytorch_model.bin", save_pth)])
def test_convert_writes_the_same_tensors_and_a_manifest(tmp_path, capsys, rng, name, writer):
    src, dst = tmp_path / name, tmp_path / "out.npz"
    want = tensors(rng)
    writer(src, want)
    assert main(["convert", str(src), str(dst), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    fmt = "safetensors" if name.endswith(".safetensors") else "pth"
    assert record["format"] == fmt and record["tensors"] == 3 and record["parameters"] == 12 + 4 + 5
    assert record["dtypes"] == {"float16": 1, "float32": 1, "int64": 1}
    params, manifest = load_npz(dst)
    assert manifest["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() == record["sha256"]
    assert manifest["source_format"] == fmt and manifest["source"] == name
    assert set(params) == set(want)
    for key, arr in want.items():
        assert params[key].dtype == arr.dtype
        np.testing.assert_array_equal(params[key], arr, err_msg=key)


def test_convert_prints_a_readable_summary(tmp_path, capsys, rng):
    save_safetensors(tmp_path / "m.safetensors", tensors(rng))
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "o.npz")]) == 0
    out = capsys.readouterr().out
    assert "3 tensors, 21 parameters (float16 x1, float32 x1, int64 x1)" in out and "o.npz" in out


def test_convert_reports_bad_input_as_one_line(tmp_path, capsys, rng):
    save_safetensors(tmp_path / "m.safetensors", tensors(rng))
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "o.txt")]) == 2
    assert "must end in .npz" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 5)
    assert main(["convert", str(tmp_path / "junk.safetensors"), str(tmp_path / "o.npz")]) == 2
    assert "too short" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_convert_refuses_to_overwrite_its_source(tmp_path, capsys, rng):
    src = tmp_path / "w.npz"  # a safetensors file under an .npz name: detected by its header
    save_safetensors(src, tensors(rng))
    before = src.read_bytes()
    (tmp_path / "link.npz").symlink_to(src)
    for dst in (src, tmp_path / "link.npz", tmp_path / "." / "w.npz"):
        assert main(["convert", str(src), str(dst)]) == 2
        assert "refusing to overwrite the source" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_detect_format(tmp_path, rng):
    save_safetensors(tmp_path / "noext", tensors(rng))
    save_pth(tmp_path / "weights.dat", tensors(rng))
    (tmp_path / "model.bin").write_bytes(b"\x01\x00\x00\x00" * 7)
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04")
    (tmp_path / "x.txt").write_bytes(b"hello")
    assert detect_format(tmp_path / "noext") == "safetensors"
    assert detect_format(tmp_path / "weights.dat") == "pth"
    assert detect_format(tmp_path / "model.bin") == "llama2c"
    for bad, fragment in [("x.npz", "already a refq .npz"), ("x.txt", "unknown checkpoint format")]:
        with pytest.raises(ValueError, match=fragment):
            detect_format(tmp_path / bad)
    with pytest.raises(ValueError, match="unknown format 'onnx'"):
        read_checkpoint(tmp_path / "noext", fmt="onnx")


def test_convert_llama2c_checkpoint(tmp_path, capsys, rng):
    if importlib.util.find_spec("refq.io.llama2c") is None:
        pytest.skip("refq.io.llama2c is not part of this checkout")
    from refq.io.llama2c import weight_shapes, write_checkpoint

    config = {"dim": 8, "hidden_dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "vocab_size": 11,
              "seq_len": 6, "shared_classifier": True}
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in weight_shapes(config).items()}
    write_checkpoint(tmp_path / "stories.bin", params, config)
    assert main(["convert", str(tmp_path / "stories.bin"), str(tmp_path / "s.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "llama2c"
    back, manifest = load_npz(tmp_path / "s.npz")
    assert manifest["config"] == config and set(back) == set(params)
    np.testing.assert_array_equal(back["wq"], params["wq"])
