"""PyTorch `torch.save` checkpoints (.pth / .pt / .bin zip archives), read without torch and without
letting the pickle run anything but a state dict's constructors.

What torch.save (since torch 1.6) writes is an uncompressed zip with one top-level folder, named after the
file (`model.pth` -> `model/`; `archive/` when saving to a buffer), every entry 64-byte aligned:
  <a>/data.pkl              a pickle (protocol 2) of the object; each tensor is pickled as the call
                            torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
                            and each storage as a *persistent id* ('storage', torch.FloatStorage, key, location,
                            numel) that the loader resolves itself
  <a>/data/<key>            the raw little-endian bytes of storage <key>
  <a>/byteorder, version, .format_version, .storage_alignment, .data/serialization_id   small text records
A tensor is a strided view of its storage: element (i, j, ...) lives at storage[offset + i*stride[0] + ...].
Several tensors may view one storage (tied weights, slices, transposes).

Security. A pickle is a small program: GLOBAL/STACK_GLOBAL/INST/OBJ name any importable callable and REDUCE
calls it, so `pickle.load` on an untrusted file can run `os.system`. Here `find_class` allows exactly what a
state dict needs: collections.OrderedDict, the torch._utils rebuild functions (replaced by the NumPy ones
below), the torch.*Storage types (replaced by dtype markers) and torch.Size (a tuple). Everything else
raises `UnsafePickleError("refusing global module.name")` before the global is even imported. Tensors
are copied out of their storages, at most 4x the storage bytes in all (a small pickle must not ask for
terabytes by viewing one storage a million times).
BUILD (set an object's state) is allowed only on an OrderedDict (torch's `_metadata`): on anything
else it is refused before any attribute is set. torch.storage._load_from_bytes is refused too: it would call
torch.load. Before unpickling, the opcode stream
is checked with `pickletools.genops`, so counted lengths and memo indices cannot exceed the file (a flipped
bit must not make the unpickler allocate gigabytes). The legacy pre-1.6 (non-zip) format is not read.

References: PyTorch, torch/serialization.py (`_save`, `_load`) and torch/_utils.py (`_rebuild_tensor_v2`),
2.x; Python docs, "pickle — Restricting Globals".
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refq.io import require_file
from refq.io.safetensors import bf16_to_float32

STORAGE_DTYPES = {  # torch storage class -> dtype of the stored bytes (BFloat16 read as raw uint16, then widened)
    "FloatStorage": np.dtype("<f4"), "DoubleStorage": np.dtype("<f8"), "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"), "LongStorage": np.dtype("<i8"), "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"), "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("u1"),
}
MAX_DEPTH = 64  # nesting of dicts/lists in a checkpoint
MAX_VIEW_BYTES_RATIO = 4  # all copied tensors together may take at most 4x the bytes of the storages they view
MAX_NAME_CHARS_RATIO = 16  # read_checkpoint: all dotted names may take 16x the file size (+ MIN_NAME_CHARS)
MIN_NAME_CHARS = 1 << 16
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, NotImplementedError,
               RuntimeError, struct.error, zlib.error, OverflowError)


class UnsafePickleError(ValueError, pickle.UnpicklingError):
    """The pickle names a global outside the state-dict allowlist."""


@dataclass(frozen=True, slots=True)
class StorageType:
    """Stand-in for a torch.*Storage class named in the pickle."""
    name: str


@dataclass(frozen=True, slots=True)
class Storage:
    """One storage loaded from <a>/data/<key>: a 1-D array of the stored dtype."""
    key: str
    type: StorageType
    array: np.ndarray


def _int_tuple(x, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple) or len(x) > 64 or not all(isinstance(n, int) and not isinstance(n, bool) for n in x):
        raise ValueError(f"tensor {what} must be a tuple of at most 64 ints, got {type(x).__name__} {x!r:.100}")
    return x


class _StateDictUnpickler(pickle._Unpickler):
    """Unpickler whose globals are the allowlist above and whose storages come from the zip.

    The pure-Python unpickler, so that BUILD can be checked: it may only set plain attributes of an
    OrderedDict it made (torch state dicts carry `_metadata`), never call __setstate__ or setattr on anything
    else (BUILD on an allowed function would write into its __dict__, i.e. into this module).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, read_record, where: str):
        super().__init__(io.BytesIO(data))
        self._read_record, self._where = read_record, where
        self._storages: dict[str, Storage] = {}
        self._copied_bytes = self._storage_bytes = 0
        self._allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("torch", "Size"): self._size,
        }

    def find_class(self, module: str, name: str):
        """Return the stand-in for an allowed global; refuse everything else without importing it."""
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise UnsafePickleError(f"{self._where}: refusing global {module}.{name} (a state dict needs only "
                                f"tensors, storages and OrderedDict)")

    def load_build(self):
        """BUILD: obj.__dict__.update(state), for a fresh OrderedDict and a dict of non-dunder str keys only."""
        state, obj = self.stack[-1], self.stack[-2]
        if type(obj) is not collections.OrderedDict or type(state) is not dict \
                or not all(type(k) is str and not k.startswith("__") for k in state):
            raise UnsafePickleError(f"{self._where}: refusing BUILD (set state) of a {type(obj).__name__} with a "
                                    f"{type(state).__name__}; only an OrderedDict's attributes may be set")
        self.stack.pop()
        obj.__dict__.update(state)

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, pid):
        """Resolve ('storage', StorageType, key, location, numel) to a Storage, once per key."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)
                and isinstance(pid[2], str) and isinstance(pid[3], str) and type(pid[4]) is int and pid[4] >= 0):
            raise ValueError(f"{self._where}: unsupported persistent id {pid!r:.200}")
        _, stype, key, _, numel = pid
        if key in self._storages:
            seen = self._storages[key]
            if seen.type != stype or seen.array.size != numel:
                raise ValueError(f"{self._where}: storage {key!r} is used as {seen.type.name}[{seen.array.size}] and "
                                 f"as {stype.name}[{numel}]")
            return seen
        dtype = STORAGE_DTYPES[stype.name]
        raw = self._read_record(f"data/{key}")
        if len(raw) != numel * dtype.itemsize:
            raise ValueError(f"{self._where}: storage {key!r} ({stype.name}) should hold {numel} elements = "
                             f"{numel * dtype.itemsize} bytes, data/{key} has {len(raw)}")
        storage = Storage(key, stype, np.frombuffer(raw, dtype=dtype))
        self._storages[key] = storage
        self._storage_bytes += len(raw)
        return storage

    def _rebuild_tensor(self, storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                        metadata=None) -> np.ndarray:
        """NumPy stand-in for torch._utils._rebuild_tensor_v2: a strided view of the storage, copied."""
        if not isinstance(storage, Storage) or self._storages.get(storage.key) is not storage:
            raise ValueError(f"{self._where}: tensor storage is a {type(storage).__name__}, not a loaded storage")
        size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
        numel, avail = math.prod(size), storage.array.size
        if type(storage_offset) is not int or not 0 <= storage_offset <= avail or len(size) != len(stride) \
                or any(n < 0 for n in size) or any(s < 0 for s in stride):
            raise ValueError(f"{self._where}: invalid tensor view offset={storage_offset!r:.50} size={size} "
                             f"stride={stride} of storage {storage.key!r} with {avail} elements")
        if numel > 0:
            last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))  # index of the last element
            if last >= avail or numel > avail:
                raise ValueError(f"{self._where}: tensor offset={storage_offset} size={size} stride={stride} needs "
                                 f"{max(last + 1, numel)} elements of storage {storage.key!r}, which has {avail} "
                                 f"(expanded, stride-0 tensors are not supported)")
        item = storage.array.itemsize
        self._copied_bytes += numel * item
        if self._copied_bytes > MAX_VIEW_BYTES_RATIO * self._storage_bytes:
            raise ValueError(f"{self._where}: tensors would copy {self._copied_bytes} bytes, more than "
                             f"{MAX_VIEW_BYTES_RATIO}x the {self._storage_bytes} bytes of their storages "
                             f"(many views of one storage?)")
        strides = tuple(s * item if n > 1 else 0 for n, s in zip(size, stride))  # bytes; size-1 axes never step
        base = storage.array[storage_offset:] if numel > 0 else storage.array[:0]
        view = np.lib.stride_tricks.as_strided(base, shape=size, strides=strides) if numel > 0 else \
            np.zeros(size, dtype=storage.array.dtype)
        out = np.array(view, copy=True, order="C")  # own memory: callers may keep it after the file is closed
        if storage.type.name == "BFloat16Storage":
            return bf16_to_float32(out)
        return out.astype(bool) if storage.type.name == "BoolStorage" else out

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None) -> np.ndarray:
        """NumPy stand-in for torch._utils._rebuild_parameter: a Parameter is just its data here."""
        if not isinstance(data, np.ndarray):
            raise ValueError(f"{self._where}: parameter data is a {type(data).__name__}, expected a tensor")
        return data

    def _size(self, dims=()) -> tuple[int, ...]:
        """torch.Size(dims) as a plain tuple of ints."""
        return _int_tuple(tuple(dims) if isinstance(dims, (tuple, list)) else dims, "torch.Size")


def check_opcodes(data: bytes, where: str) -> None:
    """Walk the pickle's opcodes: each must parse, and no length or memo index may exceed the stream."""
    try:
        with warnings.catch_warnings():  # genops warns on odd escapes in protocol-0 strings; those are data here
            warnings.simplefilter("ignore", DeprecationWarning)
            for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
                if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET", "FRAME") \
                        and not (isinstance(arg, int) and 0 <= arg <= len(data)):
                    raise ValueError(f"{opcode.name} argument {arg!r:.50} exceeds the {len(data)}-byte pickle")
    except ValueError as err:
        raise ValueError(f"{where}: malformed pickle: {err}") from err


def _unpickle(data: bytes, read_record, where: str):
    """Run the restricted unpickler; any failure on these untrusted bytes becomes a ValueError."""
    check_opcodes(data, where)
    try:
        return _StateDictUnpickler(data, read_record, where).load()
    except ValueError as err:
        if str(err).startswith(f"{where}: "):
            raise
        raise ValueError(f"{where}: malformed pickle: {err}") from err  # e.g. "unsupported pickle protocol: 6"
    except Exception as err:  # e.g. TypeError from REDUCE on a non-callable, IndexError from an empty stack
        raise ValueError(f"{where}: malformed pickle: {type(err).__name__}: {err}") from err


def load_pth(path: str | Path):
    """The object that torch.save wrote, with every tensor as a NumPy array (bf16 widened to float32)."""
    path = require_file(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":
        if head[:2] == b"\x80\x02":
            raise ValueError(f"{path}: legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it "
                             f"with torch >= 1.6 (the default zip format)")
        raise ValueError(f"{path}: not a zip archive (starts with {head!r}), so not a torch.save checkpoint")
    try:
        with zipfile.ZipFile(path) as zf:
            return _load_zip(zf, str(path))
    except _ZIP_ERRORS as err:
        raise ValueError(f"{path}: corrupt zip archive: {type(err).__name__}: {err}") from err


def _load_zip(zf: zipfile.ZipFile, where: str):
    """Check the archive's records, then unpickle <a>/data.pkl against <a>/data/*."""
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        raise ValueError(f"{where}: expected exactly one <archive>/data.pkl, found {pkl} among {names[:8]}")
    prefix = pkl[0][: -len("data.pkl")]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: zip has duplicate entries")
    for info in zf.infolist():
        if not info.filename.startswith(prefix) or info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{where}: entry {info.filename!r} (compression {info.compress_type}) is not an "
                             f"uncompressed record under {prefix!r}, as torch.save writes them")
    if prefix + "constants.pkl" in names:
        raise ValueError(f"{where}: a TorchScript archive (torch.jit.save), not a torch.save checkpoint")
    if prefix + "byteorder" in names and zf.read(prefix + "byteorder") != b"little":
        raise ValueError(f"{where}: byteorder {zf.read(prefix + 'byteorder')[:20]!r}; only little-endian is supported")

    def read_record(name: str) -> bytes:
        if prefix + name not in names:
            raise ValueError(f"{where}: record {prefix + name!r} is missing from the archive")
        return zf.read(prefix + name)

    return _unpickle(zf.read(pkl[0]), read_record, where)


def flatten(obj, where: str = "checkpoint", max_name_chars: int = 1 << 26) -> tuple[dict[str, np.ndarray], dict]:
    """Split nested dicts/lists into (arrays, other leaves), keyed by dotted paths ('encoder.layer.0.bias').

    The dotted names of all nodes together may hold at most max_name_chars characters: a small pickle can
    reuse one long key string at every level (memo references cost a few bytes), which would otherwise make
    names of megabytes, once per child.
    """
    params, extras, seen = {}, {}, set()
    stack, name_chars = [("", obj, 0)], 0
    while stack:
        name, node, depth = stack.pop()
        if isinstance(node, np.ndarray) or node is None or isinstance(node, (bool, int, float, str)):
            target = params if isinstance(node, np.ndarray) else extras
            key = name or ("tensor" if target is params else "value")
            if key in params or key in extras:
                raise ValueError(f"{where}: two entries flatten to the name {key!r}")
            target[key] = node
            continue
        if not isinstance(node, (dict, list, tuple)):
            raise ValueError(f"{where}: {name or 'top level'} holds a {type(node).__name__}, expected "
                             f"tensors, containers or plain values")
        if id(node) in seen or depth >= MAX_DEPTH:
            raise ValueError(f"{where}: {name or 'top level'} is shared, cyclic or nested deeper than {MAX_DEPTH}")
        seen.add(id(node))
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, child in reversed(items):
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ValueError(f"{where}: key {key!r:.50} under {name or 'top level'} is not a str or int")
            key = str(key)
            name_chars += len(name) + 1 + len(key)  # counted before the name is built
            if name_chars > max_name_chars:
                raise ValueError(f"{where}: the dotted names of the nested entries exceed {max_name_chars} "
                                 f"characters in all (under {name[:60]!r}); a checkpoint's names are far shorter")
            stack.append((f"{name}.{key}" if name else key, child, depth + 1))
    return params, extras


def read_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(params, extras): tensors keyed by their state-dict names, plus any non-tensor leaves."""
    obj = load_pth(path)
    budget = MAX_NAME_CHARS_RATIO * Path(path).stat().st_size + MIN_NAME_CHARS
    return flatten(obj, where=str(path), max_name_chars=budget)


# ---- writer: small, valid torch.save archives for tests, without torch --------------------------------------
_STORAGE_OF = {dt.str.lstrip("<|"): name for name, dt in STORAGE_DTYPES.items()
               if name not in ("BFloat16Storage", "BoolStorage")} | {"b1": "BoolStorage"}  # 'f4' -> 'FloatStorage'


def _p_str(s: str) -> bytes:
    """BINUNICODE: uint32 length, UTF-8 bytes."""
    raw = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _p_int(n: int) -> bytes:
    """BININT1 / BININT2 / BININT (int32) / LONG1 (two's complement, little-endian), smallest that fits."""
    if 0 <= n < 1 << 8:
        return b"K" + bytes([n])
    if 0 <= n < 1 << 16:
        return b"M" + struct.pack("<H", n)
    if -(1 << 31) <= n < 1 << 31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _p_tuple(items) -> bytes:
    """MARK, items, TUPLE."""
    return b"(" + b"".join(items) + b"t"


def _p_global(module: str, name: str) -> bytes:
    """GLOBAL 'module name' (protocol 0-2 spelling, as torch.save's protocol-2 pickler emits it)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tensor_pickle(key: str, storage_type: str, numel: int, offset: int, size, stride) -> bytes:
    """Pickle opcodes of _rebuild_tensor_v2(('storage', torch.<storage_type>, key, 'cpu', numel), offset, ...)."""
    pid = _p_tuple([_p_str("storage"), _p_global("torch", storage_type), _p_str(key), _p_str("cpu"), _p_int(numel)])
    hooks = _p_global("collections", "OrderedDict") + b")R"  # OrderedDict() called with an empty tuple
    args = [pid + b"Q", _p_int(offset), _p_tuple(map(_p_int, size)), _p_tuple(map(_p_int, stride)), b"\x89", hooks]
    return _p_global("torch._utils", "_rebuild_tensor_v2") + _p_tuple(args) + b"R"  # BINPERSID ... NEWFALSE REDUCE


def state_dict_pickle(records: dict[str, bytes]) -> bytes:
    """Protocol-2 pickle of an OrderedDict mapping each name to its value's opcodes."""
    body = b"".join(_p_str(name) + value for name, value in records.items())
    return b"\x80\x02" + _p_global("collections", "OrderedDict") + b")R(" + body + b"u."  # SETITEMS, STOP


def write_archive(path: str | Path, data_pkl: bytes, storages: dict[str, bytes], archive: str | None = None) -> None:
    """Write the zip records in torch.save's order, each payload 64-byte aligned by an 'FB' padding field."""
    archive = Path(path).stem if archive is None else archive  # torch names the folder after the file
    serial = f"{zlib.crc32(data_pkl):040d}"  # torch writes 40 random digits; any 40 digits will do
    records = [("data.pkl", data_pkl), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", b"little"), *((f"data/{k}", v) for k, v in storages.items()), ("version", b"3\n"),
               (".data/serialization_id", serial.encode())]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, payload in records:
            info = zipfile.ZipInfo(f"{archive}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            start = zf.fp.tell() + 30 + len(info.filename.encode()) + 4  # local header + padding field header
            pad = -start % 64
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            zf.writestr(info, payload)


def save_pth(path: str | Path, tensors: dict[str, np.ndarray], archive: str | None = None) -> None:
    """Write a state dict of arrays (one storage each) as torch.save would; torch.load can read the result."""
    records, storages = {}, {}
    for i, (name, arr) in enumerate(tensors.items()):
        stype = _STORAGE_OF.get(arr.dtype.str.lstrip("<|")) if isinstance(arr, np.ndarray) else None
        if stype is None:
            raise ValueError(f"save_pth: {name!r} is {getattr(arr, 'dtype', type(arr).__name__)}, expected an ndarray "
                             f"of one of {sorted(_STORAGE_OF)}")
        c = np.array(arr, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        stride = tuple(math.prod(c.shape[i + 1:]) for i in range(c.ndim))  # C-order strides in elements
        records[name] = tensor_pickle(str(i), stype, c.size, 0, c.shape, stride)
        storages[str(i)] = c.tobytes()
    write_archive(path, state_dict_pickle(records), storages, archive)
