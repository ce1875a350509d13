"""Fuzzing the checkpoint readers: mutated files may parse or raise ValueError, nothing else, and never hang.

Each reader gets REFQ_FUZZ_CASES mutated files (default 1200; raise it locally for a deeper run) from a seeded
Generator: bit flips, truncations, insertions, deletions, overwritten ranges, and format-aware edits (JSON
header fields, pickle bytes re-wrapped in a valid zip, .npy headers, llama2.c header ints). A watchdog alarm
turns a hang into a failure. Run with `-s` to see how many cases parsed and how many were rejected.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import signal
import struct
import zipfile
import zlib

import numpy as np
import pytest

from refq.io import npz, pth, safetensors
from tests.io.test_pth import TORCH_SAVED_TINY

CASES = int(os.environ.get("REFQ_FUZZ_CASES", "1200"))
WATCHDOG_S = 20


class Hang(BaseException):
    """Raised by the watchdog alarm; a BaseException so that no reader can swallow it."""


def _alarm(signum, frame):
    raise Hang()


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption of a byte string."""
    buf = bytearray(data)
    kind = rng.integers(6)
    if kind == 0 and buf:  # flip 1-8 bits
        for _ in range(rng.integers(1, 9)):
            pos = rng.integers(len(buf))
            buf[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncate
        del buf[rng.integers(len(buf) + 1):]
    elif kind == 2:  # insert random bytes
        pos = rng.integers(len(buf) + 1)
        buf[pos:pos] = rng.integers(0, 256, rng.integers(1, 16), dtype=np.uint8).tobytes()
    elif kind == 3 and buf:  # delete a range
        pos = rng.integers(len(buf))
        del buf[pos:pos + rng.integers(1, 16)]
    elif kind == 4 and buf:  # overwrite a range with random or extreme bytes
        pos = rng.integers(len(buf))
        fill = rng.choice([0x00, 0xFF, 0x7F, 0x80])
        n = int(rng.integers(1, 9))
        noise = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        buf[pos:pos + n] = bytes([fill] * n) if rng.random() < 0.5 else noise
    else:  # duplicate a chunk
        pos = rng.integers(len(buf) + 1)
        buf[pos:pos] = buf[pos:pos + rng.integers(1, 32)]
    return bytes(buf)


def run_cases(tmp_path, name: str, make_case, read, rng: np.random.Generator) -> dict:
    """Feed CASES mutated files to `read`; return outcome counts, failing on any non-ValueError or hang."""
    counts, failures = {"parsed": 0, "rejected": 0}, []
    path = tmp_path / name
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for i in range(CASES):
            path.write_bytes(make_case(rng))
            signal.alarm(WATCHDOG_S)
            try:
                read(path)
                counts["parsed"] += 1
            except ValueError:
                counts["rejected"] += 1
            except Hang:
                failures.append(f"case {i}: no answer within {WATCHDOG_S} s")
            except Exception as err:  # noqa: BLE001 - the point of the test
                failures.append(f"case {i}: {type(err).__name__}: {err}"[:300])
            finally:
                signal.alarm(0)
            if len(failures) >= 5:
                (tmp_path / f"failing_{name}").write_bytes(path.read_bytes())
                break
    finally:
        signal.signal(signal.SIGALRM, previous)
    print(f"\nfuzz {name}: {CASES} cases, {counts}")
    assert not failures, "\n".join(failures)
    assert counts["rejected"] > 0
    return counts


# ---- safetensors ----------------------------------------------------------------------------------------------

def _safetensors_fixture(tmp_path) -> bytes:
    path = tmp_path / "valid.safetensors"
    rng = np.random.default_rng(1)
    safetensors.save_safetensors(path, {"w": rng.standard_normal((3, 4)).astype(np.float32),
                                        "b": rng.standard_normal(4).astype(np.float32),
                                        "h": np.arange(6, dtype=np.float16).reshape(2, 3),
                                        "ids": np.arange(5, dtype=np.int64), "empty": np.zeros((0, 2), np.int8)},
                                 metadata={"format": "pt"}, bf16=("b",))
    return path.read_bytes()


WILD = [0, 1, -1, 7, 2 ** 31, 2 ** 63, 10 ** 30, 1.5, "F32", "BF16", "X", None, True, [], [1, 2], [0, 1 << 62], {},
        {"a": 1}, [[1]], "__metadata__"]


def _edit_header(valid: bytes, rng: np.random.Generator) -> bytes:
    """Change one JSON header field to a wild value, then re-encode the header with a correct length."""
    (n,) = struct.unpack("<Q", valid[:8])
    header, data = json.loads(valid[8:8 + n]), valid[8 + n:]
    name = list(header)[rng.integers(len(header))]
    wild = WILD[rng.integers(len(WILD))]
    if name == "__metadata__" or rng.random() < 0.1:
        header[name] = wild
    else:
        field = ["dtype", "shape", "data_offsets", "extra"][rng.integers(4)]
        entry = header[name]
        if field in ("shape", "data_offsets") and rng.random() < 0.5 and entry[field]:
            value = int(rng.integers(-2, 2 ** 40)) // int(rng.integers(1, 2 ** 30))  # mostly small, sometimes huge
            entry[field][rng.integers(len(entry[field]))] = value
        else:
            entry[field] = wild
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + (data if rng.random() < 0.8 else mutate(data, rng))


def test_fuzz_safetensors(tmp_path):
    valid = _safetensors_fixture(tmp_path)
    rng = np.random.default_rng(2024)
    run_cases(tmp_path, "st_bytes.safetensors", lambda r: mutate(valid, r), safetensors.read_checkpoint, rng)
    run_cases(tmp_path, "st_header.safetensors", lambda r: _edit_header(valid, r), safetensors.read_checkpoint, rng)


# ---- PyTorch zip ----------------------------------------------------------------------------------------------

def _pth_fixtures(tmp_path) -> list[tuple[bytes, dict[str, bytes]]]:
    """(data.pkl, storages) of a torch-written file and of one with aliased views written by refq."""
    real = zipfile.ZipFile(io.BytesIO(zlib.decompress(base64.b64decode("".join(TORCH_SAVED_TINY)))))
    storages = {n.split("/")[-1]: real.read(n) for n in real.namelist() if "/data/" in n}
    views = {"w": pth.tensor_pickle("0", "FloatStorage", 12, 0, (3, 4), (4, 1)),
             "wt": pth.tensor_pickle("0", "FloatStorage", 12, 0, (4, 3), (1, 4)),
             "b": pth.tensor_pickle("1", "BFloat16Storage", 2, 1, (1,), (1,))}
    return [(real.read("tiny/data.pkl"), storages),
            (pth.state_dict_pickle(views), {"0": bytes(48), "1": bytes(4)})]


def _archive_bytes(tmp_path, data_pkl: bytes, storages: dict[str, bytes]) -> bytes:
    path = tmp_path / "scratch.pth"
    pth.write_archive(path, data_pkl, storages, archive="archive")
    return path.read_bytes()


def test_fuzz_pth(tmp_path):
    fixtures = _pth_fixtures(tmp_path)
    whole = [_archive_bytes(tmp_path, pkl, st) for pkl, st in fixtures]
    rng = np.random.default_rng(1906)

    def pickle_case(r):  # corrupt the pickle (or a storage record) inside a valid zip, so the CRC passes
        pkl, storages = fixtures[r.integers(len(fixtures))]
        if r.random() < 0.15:
            key = list(storages)[r.integers(len(storages))]
            storages = {**storages, key: mutate(storages[key], r)}
        else:
            pkl = mutate(pkl, r)
        return _archive_bytes(tmp_path, pkl, storages)

    run_cases(tmp_path, "pth_zip.pth", lambda r: mutate(whole[r.integers(len(whole))], r), pth.read_checkpoint, rng)
    counts = run_cases(tmp_path, "pth_pickle.pth", pickle_case, pth.read_checkpoint, rng)
    assert counts["parsed"] > 0  # mutations that keep a valid state dict are read, not refused wholesale


# ---- refq .npz ------------------------------------------------------------------------------------------------

def test_fuzz_npz(tmp_path):
    path = tmp_path / "valid.npz"
    npz.save_npz(path, {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "q": np.arange(-3, 3, dtype=np.int8)},
                 {"config": {"dim": 4}, "source_sha256": "00" * 32})
    valid = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    rng = np.random.default_rng(1995)

    def member_case(r):  # corrupt one .npy member (header or data) inside a valid zip
        name = list(members)[r.integers(len(members))]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for n, payload in members.items():
                zf.writestr(n, mutate(payload[:128], r) + payload[128:] if n == name else payload)
        return buf.getvalue()

    run_cases(tmp_path, "npz_bytes.npz", lambda r: mutate(valid, r), npz.load_npz, rng)
    run_cases(tmp_path, "npz_member.npz", member_case, npz.load_npz, rng)


# ---- llama2.c -------------------------------------------------------------------------------------------------

def test_fuzz_llama2c(tmp_path):
    if importlib.util.find_spec("refq.io.llama2c") is None:
        pytest.skip("refq.io.llama2c is not part of this checkout")
    from refq.io import llama2c

    rng = np.random.default_rng(1337)
    config = {"dim": 8, "hidden_dim": 12, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "vocab_size": 7,
              "seq_len": 4, "shared_classifier": False}
    valid = []
    for version in (0, 1):
        params = {k: rng.standard_normal(s).astype(np.float32) for k, s in llama2c.weight_shapes(config).items()}
        llama2c.write_checkpoint(tmp_path / "m.bin", params, config, version=version)
        valid.append((tmp_path / "m.bin").read_bytes())
    llama2c.write_tokenizer(tmp_path / "t.bin", [b"<unk>", b"a", b"bc", b"\xe2\x96\x81the"], [0.0, -1.0, -2.5, -3.0])
    tokenizer = (tmp_path / "t.bin").read_bytes()

    def header_case(r):  # set one header int32 (v0: bytes 0-28, v1: 8-36) to a wild value
        data = bytearray(valid[r.integers(2)])
        start = 0 if data[:4] != struct.pack("<I", llama2c.MAGIC) else 8
        pos = start + 4 * int(r.integers(7))
        data[pos:pos + 4] = struct.pack("<i", int(r.choice([0, -1, 1, 2, 3, 8, 1 << 20, -(1 << 31), (1 << 31) - 1])))
        return bytes(data)

    run_cases(tmp_path, "l2c_bytes.bin", lambda r: mutate(valid[r.integers(2)], r), llama2c.read_checkpoint, rng)
    run_cases(tmp_path, "l2c_header.bin", header_case, llama2c.read_checkpoint, rng)
    run_cases(tmp_path, "l2c_tok.bin", lambda r: mutate(tokenizer, r), llama2c.read_tokenizer, rng)
