"""Hypothesis fuzzing of every checkpoint reader (bounded: 60 examples of at most a few KB each).

Each test builds a valid file with refq's own writers, lets hypothesis overwrite, insert, delete or truncate
bytes (and, for the container formats, edit the payload inside a valid zip so that CRCs pass), and checks
that the reader either returns or raises ValueError naming the file: never another exception, never a hang
(a 20 s alarm) and never more than 64 MiB of new allocations. Failures shrink to a minimal file.
"""
from __future__ import annotations

import io
import signal
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from refq.io import llama2c, npz, pth, safetensors

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MAX_NEW_BYTES = 64 << 20
WATCHDOG_S = 20


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no reader can swallow it."""


def _alarm(signum, frame):
    raise Hang()


EDITS = st.lists(st.tuples(st.sampled_from(["set", "insert", "delete", "truncate"]), st.integers(0, 1 << 16),
                           st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def apply(data: bytes, edits) -> bytes:
    """The bytes after each (kind, position, payload) edit; positions wrap around the current length."""
    buf = bytearray(data)
    for kind, pos, payload in edits:
        pos = pos % (len(buf) + 1)
        if kind == "set":
            buf[pos:pos + len(payload)] = payload
        elif kind == "insert":
            buf[pos:pos] = payload
        elif kind == "delete":
            del buf[pos:pos + len(payload)]
        else:
            del buf[pos:]
    return bytes(buf)


def check_reader(path, data: bytes, reader) -> None:
    """Write data to path and read it: a result or a ValueError naming the file, in bounded time and memory."""
    path.write_bytes(data)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WATCHDOG_S)
    tracemalloc.start()
    try:
        reader(path)
    except ValueError as err:
        assert str(path) in str(err), err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert peak < MAX_NEW_BYTES + 8 * len(data), peak


def rezip(data: bytes, edits, name: str) -> bytes:
    """The zip `data` with member `name` edited, written again so that its CRC is right."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for info, payload in members:
            zf.writestr(info, apply(payload, edits) if info.filename.endswith(name) else payload)
    return out.getvalue()


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> dict[str, bytes]:
    """One small valid file per reader."""
    root = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    tensors = {"w": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(-2, 3, dtype=np.int8)}
    safetensors.save_safetensors(root / "m.safetensors", tensors, metadata={"k": "v"})
    pth.save_pth(root / "m.pth", tensors)
    npz.save_npz(root / "m.npz", tensors, {"config": {"dim": 4}})
    config = dict(dim=8, hidden_dim=12, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=5, seq_len=4,
                  shared_classifier=False)
    params = {k: rng.standard_normal(s).astype(np.float32) for k, s in llama2c.weight_shapes(config).items()}
    llama2c.write_checkpoint(root / "v0.bin", params, config, version=0)
    llama2c.write_checkpoint(root / "v1.bin", params, config, version=1)
    llama2c.write_tokenizer(root / "t.bin", [b"<unk>", b"<s>", b"</s>", b"a", b"bc"], [0.0, 0.0, 0.0, -1.0, -2.0])
    return {p.name: p.read_bytes() for p in root.iterdir()}


@FUZZ
@given(edits=EDITS)
def test_safetensors_reader(valid, tmp_path, edits):
    check_reader(tmp_path / "f.safetensors", apply(valid["m.safetensors"], edits), safetensors.read_checkpoint)


@FUZZ
@given(edits=EDITS, inside=st.booleans())
def test_pth_reader(valid, tmp_path, edits, inside):
    data = rezip(valid["m.pth"], edits, "data.pkl") if inside else apply(valid["m.pth"], edits)
    check_reader(tmp_path / "f.pth", data, pth.read_checkpoint)


@FUZZ
@given(edits=EDITS, member=st.sampled_from([None, "w.npy", "b.npy", "__manifest__.npy"]))
def test_npz_reader(valid, tmp_path, edits, member):
    data = apply(valid["m.npz"], edits) if member is None else rezip(valid["m.npz"], edits, member)
    check_reader(tmp_path / "f.npz", data, npz.load_npz)


@FUZZ
@given(edits=EDITS, version=st.sampled_from(["v0.bin", "v1.bin"]),
       header=st.one_of(st.none(), st.tuples(st.integers(0, 6), st.integers(-(1 << 31), (1 << 31) - 1))))
def test_llama2c_checkpoint_reader(valid, tmp_path, edits, version, header):
    data = bytearray(valid[version])
    if header is not None:  # one wild header int32 (seq_len 2^20 and the like)
        field, value = header
        start = 8 if version == "v1.bin" else 0
        data[start + 4 * field:start + 4 * field + 4] = struct.pack("<i", value)
    check_reader(tmp_path / "f.bin", apply(bytes(data), edits), llama2c.read_checkpoint)


@FUZZ
@given(edits=EDITS)
def test_llama2c_tokenizer_reader(valid, tmp_path, edits):
    check_reader(tmp_path / "t.bin", apply(valid["t.bin"], edits), llama2c.read_tokenizer)
