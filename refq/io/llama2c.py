"""llama2.c checkpoints (.bin, legacy "version 0" and "version 1") and tokenizer files, read without torch.

Legacy (v0) layout, all little-endian:
  7 x int32 header  dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
                    (a negative vocab_size means "the classifier is NOT shared with the embedding")
  float32 blocks    token_embedding_table [V, D], rms_att_weight [L, D], wq [L, D, D], wk [L, KV, D],
                    wv [L, KV, D], wo [L, D, D], rms_ffn_weight [L, D], w1 [L, H, D], w2 [L, D, H],
                    w3 [L, H, D], rms_final_weight [D], freq_cis_real [S, Dh/2], freq_cis_imag [S, Dh/2],
                    then wcls [V, D] only when the classifier is not shared.
Version 1 layout: a 256-byte header (uint32 magic 0x616b3432 "ak42", int32 version = 1, the same 7 int32
  (vocab_size always positive), one uint8 shared_classifier flag, zero padding), then the float32 blocks
  rms_att_weight, rms_ffn_weight, rms_final_weight, token_embedding_table, wq, wk, wv, wo, w1, w2, w3,
  and wcls when not shared. Version 1 has no RoPE tables.
Here D = dim, H = hidden_dim, L = n_layers, KV = n_kv_heads * head_size, Dh = head_size = dim / n_heads.

Params come back as one float32 array per checkpoint field, stacked over layers exactly as the file
stores them (`params["wq"][l]` is layer l's [D, D] query projection, rows = outputs). A shared classifier
has no "wcls" key (the model then uses "token_embedding_table"). The legacy RoPE tables are not returned:
they are checked against cos/sin(pos * 10000^(-2i/Dh)), which is what refq (and run.c since Aug. 2023)
computes on the fly, and a file whose tables differ raises ValueError.

Tokenizer file: int32 max_token_length, then per token: float32 merge score, int32 byte length, bytes.

References: karpathy/llama2.c, run.c (checkpoint reading, tokenizer loading) and export.py
(legacy_export, version1_export), 2023.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from refq.io import require_file
MAGIC = 0x616B3432  # "ak42"
HEADER_V1_BYTES = 256
CONFIG_KEYS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
LIMITS = {"dim": 1 << 16, "hidden_dim": 1 << 18, "n_layers": 1 << 10, "n_heads": 1 << 10,
          "n_kv_heads": 1 << 10, "vocab_size": 1 << 22, "seq_len": 1 << 20}
ROPE_TABLE_ATOL = 1e-3  # float32 angles pos * freq up to pos ~ 1e5 stay well inside this


def weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Shape of every params entry for a config (wcls only when the classifier is not shared)."""
    D, H, L = config["dim"], config["hidden_dim"], config["n_layers"]
    V = config["vocab_size"]
    kv = D * config["n_kv_heads"] // config["n_heads"]
    shapes = {
        "token_embedding_table": (V, D), "rms_att_weight": (L, D), "wq": (L, D, D), "wk": (L, kv, D),
        "wv": (L, kv, D), "wo": (L, D, D), "rms_ffn_weight": (L, D), "w1": (L, H, D), "w2": (L, D, H),
        "w3": (L, H, D), "rms_final_weight": (D,),
    }
    if not config["shared_classifier"]:
        shapes["wcls"] = (V, D)
    return shapes


def freq_cis_tables(seq_len: int, head_size: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 cos and sin of pos * 10000^(-2i/Dh), each [S, Dh/2] (the legacy freq_cis_real/imag)."""
    freq = 1.0 / 10000.0 ** (np.arange(0, head_size, 2, dtype=np.float64) / head_size)  # [Dh/2]
    angle = np.arange(seq_len, dtype=np.float64)[:, None] * freq[None, :]  # [S, Dh/2]
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def _order(config: dict, version: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of the float32 blocks in file order, RoPE tables included for version 0."""
    shapes = weight_shapes(config)
    half = (config["seq_len"], config["dim"] // config["n_heads"] // 2)
    if version == 0:
        names = ["token_embedding_table", "rms_att_weight", "wq", "wk", "wv", "wo", "rms_ffn_weight",
                 "w1", "w2", "w3", "rms_final_weight", "freq_cis_real", "freq_cis_imag"]
        shapes = {**shapes, "freq_cis_real": half, "freq_cis_imag": half}
    else:
        names = ["rms_att_weight", "rms_ffn_weight", "rms_final_weight", "token_embedding_table",
                 "wq", "wk", "wv", "wo", "w1", "w2", "w3"]
    if not config["shared_classifier"]:
        names.append("wcls")
    return [(n, shapes[n]) for n in names]


def _validate_config(config: dict, path) -> None:
    """ValueError naming the first header value that is not positive, too large or inconsistent."""
    for key in CONFIG_KEYS:
        value = config[key]
        if not 0 < value <= LIMITS[key]:
            raise ValueError(f"{path}: header {key}={value} is outside 1..{LIMITS[key]} (not a llama2.c checkpoint?)")
    D, nh, nkv = config["dim"], config["n_heads"], config["n_kv_heads"]
    if nh % nkv:
        raise ValueError(f"{path}: n_heads={nh} is not a multiple of n_kv_heads={nkv}")
    if D % nh:
        raise ValueError(f"{path}: dim={D} is not a multiple of n_heads={nh}")
    if (D // nh) % 2:
        raise ValueError(f"{path}: head_size={D // nh} is odd; RoPE rotates pairs of channels")


def _parse_header(data: bytes, path) -> tuple[dict, int, int]:
    """(config, version, header bytes) from the start of a checkpoint file."""
    if len(data) >= 4 and struct.unpack_from("<I", data, 0)[0] == MAGIC:
        if len(data) < HEADER_V1_BYTES:
            raise ValueError(f"{path}: version-1 header needs {HEADER_V1_BYTES} bytes, file has {len(data)}")
        version = struct.unpack_from("<i", data, 4)[0]
        if version != 1:
            raise ValueError(f"{path}: llama2.c checkpoint version {version} is not supported (only 0 and 1)")
        values = struct.unpack_from("<7i", data, 8)
        flag = data[36]
        if flag not in (0, 1):
            raise ValueError(f"{path}: shared_classifier flag byte is {flag}, expected 0 or 1")
        config = dict(zip(CONFIG_KEYS, values), shared_classifier=bool(flag))
        return config, 1, HEADER_V1_BYTES
    if len(data) < 28:
        raise ValueError(f"{path}: legacy header needs 28 bytes, file has {len(data)}")
    values = struct.unpack_from("<7i", data, 0)
    config = dict(zip(CONFIG_KEYS, values), shared_classifier=values[5] > 0)
    config["vocab_size"] = abs(values[5])
    return config, 0, 28


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(params, config) of a llama2.c .bin checkpoint (legacy or version 1), float32, layers stacked."""
    path = require_file(path)
    data = path.read_bytes()
    config, version, offset = _parse_header(data, path)
    _validate_config(config, path)
    order = _order(config, version)
    expected = offset + 4 * sum(int(np.prod(shape)) for _, shape in order)
    if len(data) != expected:
        raise ValueError(f"{path}: file has {len(data)} bytes, the header {config} (version {version}) "
                         f"needs exactly {expected} bytes")
    flat = np.frombuffer(data, dtype="<f4", offset=offset).astype(np.float32)  # copy: writable, native order
    blocks, start = {}, 0
    for name, shape in order:
        size = int(np.prod(shape))
        blocks[name] = flat[start:start + size].reshape(shape)
        start += size
    assert start == flat.size
    if version == 0:
        real, imag = blocks.pop("freq_cis_real"), blocks.pop("freq_cis_imag")
        cos, sin = freq_cis_tables(config["seq_len"], config["dim"] // config["n_heads"])
        error = float(np.max([np.abs(real - cos).max(), np.abs(imag - sin).max()]))  # NaN in either table -> NaN
        if not error <= ROPE_TABLE_ATOL:
            raise ValueError(f"{path}: stored RoPE tables differ from theta=10000 RoPE by {error:.3g} "
                             f"(> {ROPE_TABLE_ATOL}); refq only implements theta=10000")
    assert {k: v.shape for k, v in blocks.items()} == weight_shapes(config)
    return blocks, config


def write_checkpoint(path: str | Path, params: dict[str, np.ndarray], config: dict, version: int = 0) -> None:
    """Write params/config as a llama2.c .bin file (legacy version 0 by default, or version 1)."""
    if version not in (0, 1):
        raise ValueError(f"write_checkpoint: version={version}, expected 0 or 1")
    _validate_config(config, "write_checkpoint")
    want = weight_shapes(config)
    if set(params) != set(want):
        raise ValueError(f"write_checkpoint: params keys {sorted(params)} != expected {sorted(want)}")
    for name, shape in want.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(f"write_checkpoint: {name} has shape {tuple(params[name].shape)}, config needs {shape}")
    values = [config[k] for k in CONFIG_KEYS]
    if version == 0:
        if not config["shared_classifier"]:
            values[5] = -values[5]
        header = struct.pack("<7i", *values)
        cos, sin = freq_cis_tables(config["seq_len"], config["dim"] // config["n_heads"])
        blocks = {**params, "freq_cis_real": cos, "freq_cis_imag": sin}
    else:
        header = struct.pack("<Ii7iB", MAGIC, 1, *values, int(config["shared_classifier"]))
        header += b"\0" * (HEADER_V1_BYTES - len(header))
        blocks = params
    with open(path, "wb") as f:
        f.write(header)
        for name, _ in _order(config, version):
            f.write(np.ascontiguousarray(blocks[name], dtype="<f4").tobytes())


def read_tokenizer(path: str | Path, vocab_size: int | None = None) -> tuple[list[bytes], np.ndarray, int]:
    """(vocab pieces, float32 merge scores, max_token_length) of a llama2.c tokenizer .bin file.

    Without vocab_size the file is read to its end; with it, exactly that many entries must fill the file.
    """
    path = require_file(path)
    data = path.read_bytes()
    if len(data) < 4:
        raise ValueError(f"{path}: tokenizer header needs 4 bytes, file has {len(data)}")
    max_len = struct.unpack_from("<i", data, 0)[0]
    if not 0 < max_len <= 1 << 16:
        raise ValueError(f"{path}: max_token_length={max_len} is outside 1..65536 (not a llama2.c tokenizer?)")
    vocab, scores, offset = [], [], 4
    while offset < len(data) and (vocab_size is None or len(vocab) < vocab_size):
        if offset + 8 > len(data):
            raise ValueError(f"{path}: token {len(vocab)} needs 8 header bytes at offset {offset}, "
                             f"file has {len(data)}")
        score, n = struct.unpack_from("<fi", data, offset)
        if not 0 <= n <= max_len:
            raise ValueError(f"{path}: token {len(vocab)} has length {n}, outside 0..max_token_length={max_len}")
        if offset + 8 + n > len(data):
            raise ValueError(f"{path}: token {len(vocab)} needs {offset + 8 + n} bytes, file has {len(data)}")
        if not np.isfinite(score):
            raise ValueError(f"{path}: token {len(vocab)} has score {score}")
        vocab.append(data[offset + 8:offset + 8 + n])
        scores.append(score)
        offset += 8 + n
    if vocab_size is not None and len(vocab) != vocab_size:
        raise ValueError(f"{path}: file has {len(data)} bytes, holding {len(vocab)} tokens; "
                         f"vocab_size={vocab_size} expected")
    if offset != len(data):
        raise ValueError(f"{path}: file has {len(data)} bytes, {vocab_size} tokens end at byte {offset}")
    if not vocab:
        raise ValueError(f"{path}: tokenizer file has no tokens")
    return vocab, np.asarray(scores, dtype=np.float32), max_len


def write_tokenizer(path: str | Path, vocab: list[bytes], scores, max_token_length: int | None = None) -> None:
    """Write a llama2.c tokenizer .bin file (max_token_length defaults to the longest piece)."""
    scores = np.asarray(scores, dtype=np.float32)
    if len(vocab) != scores.shape[0]:
        raise ValueError(f"write_tokenizer: {len(vocab)} pieces but {scores.shape[0]} scores")
    longest = max(len(p) for p in vocab)
    max_len = longest if max_token_length is None else max_token_length
    if max_len < max(longest, 1):
        raise ValueError(f"write_tokenizer: max_token_length={max_len} < longest piece {longest}")
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max_len))
        for piece, score in zip(vocab, scores):
            f.write(struct.pack("<fi", float(score), len(piece)) + bytes(piece))
