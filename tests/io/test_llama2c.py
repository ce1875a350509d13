"""llama2.c checkpoint and tokenizer files: round trips, the real stories260K files, and rejection of bad files."""
import struct

import numpy as np
import pytest
from hypothesis import given, strategies as st

from refq.io.llama2c import (MAGIC, freq_cis_tables, read_checkpoint, read_tokenizer, weight_shapes, write_checkpoint,
                             write_tokenizer)
from tests.assets import asset


def tiny_config(shared=True, **kw):
    cfg = dict(dim=8, hidden_dim=12, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=11, seq_len=6,
               shared_classifier=shared)
    cfg.update(kw)
    return cfg


def random_params(config, rng):
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in weight_shapes(config).items()}


@given(shared=st.booleans(), version=st.sampled_from([0, 1]), n_kv=st.sampled_from([1, 2, 4]),
       layers=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_checkpoint_round_trip(tmp_path_factory, shared, version, n_kv, layers, seed):
    rng = np.random.default_rng(seed)
    config = tiny_config(shared, n_heads=4, n_kv_heads=n_kv, n_layers=layers)
    params = random_params(config, rng)
    path = tmp_path_factory.mktemp("ckpt") / "m.bin"
    write_checkpoint(path, params, config, version=version)
    got, got_config = read_checkpoint(path)
    assert got_config == config
    assert set(got) == set(params) and ("wcls" in got) == (not shared)
    for k in params:
        assert got[k].dtype == np.float32
        np.testing.assert_array_equal(got[k], params[k], err_msg=k)


def test_legacy_layout_by_hand(tmp_path, rng):
    """The legacy file is the 7-int header then the blocks in run.c's order (wcls last, after the RoPE tables)."""
    config = tiny_config(shared=False)
    params = random_params(config, rng)
    path = tmp_path / "m.bin"
    write_checkpoint(path, params, config, version=0)
    data = path.read_bytes()
    assert struct.unpack_from("<7i", data) == (8, 12, 2, 2, 1, -11, 6)  # negative vocab: unshared classifier
    floats = np.frombuffer(data, "<f4", offset=28)
    np.testing.assert_array_equal(floats[:88], params["token_embedding_table"].ravel())
    np.testing.assert_array_equal(floats[-88:], params["wcls"].ravel())
    cos, sin = freq_cis_tables(6, 4)
    np.testing.assert_array_equal(floats[-88 - 24:-88], np.concatenate([cos.ravel(), sin.ravel()]))


def test_version1_header(tmp_path, rng):
    config = tiny_config(shared=True)
    path = tmp_path / "m.bin"
    write_checkpoint(path, random_params(config, rng), config, version=1)
    data = path.read_bytes()
    assert struct.unpack_from("<Ii7iB", data) == (MAGIC, 1, 8, 12, 2, 2, 1, 11, 6, 1)
    assert data[37:256] == b"\0" * 219


def test_freq_cis_tables_match_formula():
    cos, sin = freq_cis_tables(5, 8)
    angle = np.arange(5)[:, None] * 10000.0 ** (-np.arange(0, 8, 2) / 8)[None, :]
    np.testing.assert_allclose(cos, np.cos(angle), atol=1e-7)
    np.testing.assert_allclose(sin, np.sin(angle), atol=1e-7)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("delta", [-1, -4, 4, 1])
def test_wrong_size_names_both_sizes(tmp_path, rng, version, delta):
    config = tiny_config()
    path = tmp_path / "m.bin"
    write_checkpoint(path, random_params(config, rng), config, version=version)
    data = path.read_bytes()
    path.write_bytes(data[:delta] if delta < 0 else data + b"\0" * delta)
    with pytest.raises(ValueError, match=f"file has {len(data) + delta} bytes.*needs exactly {len(data)} bytes"):
        read_checkpoint(path)


@pytest.mark.parametrize("header, message", [
    ((0, 12, 2, 2, 1, 11, 6), "dim=0"),
    ((8, -12, 2, 2, 1, 11, 6), "hidden_dim=-12"),
    ((8, 12, 2, 2, 1, 0, 6), "vocab_size=0"),
    ((8, 12, 2, 4, 3, 11, 6), "n_heads=4 is not a multiple of n_kv_heads=3"),
    ((9, 12, 2, 2, 1, 11, 6), "dim=9 is not a multiple of n_heads=2"),
    ((6, 12, 2, 2, 1, 11, 6), "head_size=3 is odd"),
    ((1 << 30, 12, 2, 2, 1, 11, 6), "dim=1073741824"),
])
def test_bad_header_values(tmp_path, header, message):
    path = tmp_path / "m.bin"
    path.write_bytes(struct.pack("<7i", *header) + b"\0" * 4096)
    with pytest.raises(ValueError, match=message):
        read_checkpoint(path)


@given(garbage=st.binary(min_size=0, max_size=300))
def test_garbage_is_rejected_with_value_error(tmp_path_factory, garbage):
    path = tmp_path_factory.mktemp("g") / "g.bin"
    path.write_bytes(garbage)
    with pytest.raises(ValueError):
        read_checkpoint(path)


def test_version_2_and_bad_flag_rejected(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(struct.pack("<Ii", MAGIC, 2) + b"\0" * 300)
    with pytest.raises(ValueError, match="version 2 is not supported"):
        read_checkpoint(path)
    path.write_bytes(struct.pack("<Ii7iB", MAGIC, 1, 8, 12, 2, 2, 1, 11, 6, 7).ljust(256, b"\0"))
    with pytest.raises(ValueError, match="flag byte is 7"):
        read_checkpoint(path)


def test_legacy_rope_tables_are_checked(tmp_path, rng):
    config = tiny_config()
    path = tmp_path / "m.bin"
    write_checkpoint(path, random_params(config, rng), config, version=0)
    data = bytearray(path.read_bytes())
    n_tables = 2 * 6 * 2  # freq_cis_real and _imag, [S, Dh/2] each
    data[len(data) - 4 * n_tables:] = np.full(n_tables, 0.5, "<f4").tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="RoPE tables differ"):
        read_checkpoint(path)


@pytest.mark.parametrize("table", ["freq_cis_real", "freq_cis_imag"])
def test_nan_in_either_legacy_rope_table_is_rejected(tmp_path, rng, table):
    config = tiny_config()
    path = tmp_path / "m.bin"
    write_checkpoint(path, random_params(config, rng), config, version=0)
    data = bytearray(path.read_bytes())
    half = 6 * 2  # [S, Dh/2] floats per table; _imag is last, _real just before it (shared classifier)
    start = len(data) - 4 * (2 * half if table == "freq_cis_real" else half)
    data[start + 8:start + 12] = np.array([np.nan], "<f4").tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="RoPE tables differ .* by nan"):
        read_checkpoint(path)


def test_stories260k_checkpoint():
    params, config = read_checkpoint(asset("llama2c/stories260K.bin"))
    assert config == dict(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, seq_len=512,
                          shared_classifier=True)
    assert "wcls" not in params and params["wk"].shape == (5, 32, 64) and params["w2"].shape == (5, 64, 172)
    assert sum(v.size for v in params.values()) == (1_056_540 - 28) // 4 - 2 * 512 * 4  # file floats minus RoPE tables
    assert all(np.isfinite(v).all() for v in params.values())


def test_stories260k_tokenizer():
    vocab, scores, max_len = read_tokenizer(asset("llama2c/tok512.bin"), vocab_size=512)
    assert len(vocab) == 512 and scores.dtype == np.float32 and max_len == max(len(v) for v in vocab)
    assert vocab[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"] and vocab[3] == b"<0x00>" and vocab[258] == b"<0xFF>"


def test_tokenizer_round_trip_and_rejections(tmp_path):
    vocab = [b"<unk>", b"\n<s>\n", b"", b"ab", "é".encode()]
    path = tmp_path / "t.bin"
    write_tokenizer(path, vocab, [0.0, 0.0, -1.0, -2.5, 3.0])
    got, scores, max_len = read_tokenizer(path)
    assert got == vocab and max_len == 5
    np.testing.assert_array_equal(scores, np.float32([0.0, 0.0, -1.0, -2.5, 3.0]))
    data = path.read_bytes()
    with pytest.raises(ValueError, match="vocab_size=6"):
        read_tokenizer(path, vocab_size=6)
    with pytest.raises(ValueError, match=f"file has {len(data)} bytes, 4 tokens end at byte"):
        read_tokenizer(path, vocab_size=4)
    path.write_bytes(data[:-1])
    with pytest.raises(ValueError, match=f"needs {len(data)} bytes, file has {len(data) - 1}"):
        read_tokenizer(path)
    path.write_bytes(struct.pack("<i", 2) + struct.pack("<fi", 0.0, 3) + b"abc")
    with pytest.raises(ValueError, match="length 3, outside 0..max_token_length=2"):
        read_tokenizer(path)
    path.write_bytes(struct.pack("<i", -5))
    with pytest.raises(ValueError, match="max_token_length=-5"):
        read_tokenizer(path)
