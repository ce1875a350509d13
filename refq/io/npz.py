"""refq's own checkpoint format: an .npz of arrays keyed by the checkpoint's own names, plus a manifest.

An .npz is a zip of .npy files, one per array (`name.npy`). refq adds one entry, `__manifest__`: a 0-d
unicode array holding a JSON object (format name and version, the refq version that wrote it, and whatever
the writer records: config, source file and its sha256, command line, seed...). Everything is read back with
`allow_pickle=False`, so loading an .npz never runs code; object arrays are refused when writing.

References: NumPy, "numpy.lib.format" (the .npy format) and numpy.savez, 2.x.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import struct
import tokenize
import warnings
import zlib
import zipfile
from pathlib import Path

import numpy as np

import refq
from refq.io import require_file

MANIFEST_KEY = "__manifest__"
FORMAT = "refq-npz"
FORMAT_VERSION = 1
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, KeyError, NotImplementedError,
               RuntimeError, struct.error, zlib.error, OverflowError)


def save_npz(path: str | Path, params: dict[str, np.ndarray], manifest: dict) -> None:
    """Write params and a JSON manifest (format, version and refq version added) to an .npz, atomically."""
    path = Path(path)
    for name, arr in params.items():
        if not isinstance(name, str) or name == MANIFEST_KEY or not name:
            raise ValueError(f"save_npz: key {name!r} is not a usable array name")
        if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
            raise ValueError(f"save_npz: {name!r} is {type(arr).__name__} "
                             f"{getattr(arr, 'dtype', '')}, expected a non-object ndarray")
    full = {**manifest, "format": FORMAT, "format_version": FORMAT_VERSION, "refq_version": refq.__version__}
    try:
        text = json.dumps(full, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"save_npz: manifest is not JSON-serialisable: {err}") from err
    if path.is_dir():
        raise ValueError(f"save_npz: {path} is a directory")
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in [*params.items(), (MANIFEST_KEY, np.array(text))]:
                with zf.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
        os.replace(tmp, path)  # readers never see a half-written file
    except BaseException:
        tmp.unlink()
        raise


def _create_temporary(path: Path) -> tuple[int, Path]:
    """(fd, name) of a new file beside path, made with O_EXCL: never an existing file or a planted symlink.

    Like tempfile.mkstemp, but with the mode a plain open() gives (0666 minus the umask), not 0600.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"save_npz: could not create a temporary file beside {path}")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One .npy member; its header's shape x itemsize must equal the bytes stored before anything is allocated."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{where}: {info.filename} has .npy format version {version}, expected 1.0 or 2.0")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            with warnings.catch_warnings():  # a corrupted header can hold odd string escapes; it is data here
                warnings.simplefilter("ignore", DeprecationWarning)
                shape, _, dtype = read_header(f)
        except (SyntaxError, tokenize.TokenError, TypeError) as err:  # NumPy parses the header as a Python literal
            raise ValueError(f"{where}: {info.filename} has an unreadable .npy header: {err}") from err
        if dtype.hasobject:
            raise ValueError(f"{where}: {info.filename} holds Python objects (dtype {dtype}); refusing to unpickle")
        stored, needed = info.file_size - f.tell(), math.prod(shape) * dtype.itemsize
        if stored != needed:
            raise ValueError(f"{where}: {info.filename} declares shape {shape} of {dtype} ({needed} bytes) "
                             f"but stores {stored} bytes")
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(params, manifest) of an .npz written by save_npz; never unpickles."""
    path = require_file(path)
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.filename[:-4] in arrays:
                    raise ValueError(f"{path}: entry {info.filename!r} is not a (unique) .npy array")
                try:
                    arrays[info.filename[:-4]] = _read_member(zf, info, str(path))
                except ValueError as err:  # NumPy's own messages ("EOF: reading magic string...") name no file
                    if str(err).startswith(f"{path}: "):
                        raise
                    raise ValueError(f"{path}: {info.filename}: {err}") from err
    except _ZIP_ERRORS as err:
        raise ValueError(f"{path}: not a readable .npz: {type(err).__name__}: {err}") from err
    if MANIFEST_KEY not in arrays:
        raise ValueError(f"{path}: no {MANIFEST_KEY} entry (keys: {sorted(arrays)[:8]}); not written by refq")
    raw = arrays.pop(MANIFEST_KEY)
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError(f"{path}: {MANIFEST_KEY} has dtype {raw.dtype} and shape {raw.shape}, expected a 0-d string")
    try:
        manifest = json.loads(str(raw))
    except ValueError as err:
        raise ValueError(f"{path}: {MANIFEST_KEY} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path}: manifest format is {found!r:.50}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: manifest format_version {manifest.get('format_version')!r}, "
                         f"this refq reads {FORMAT_VERSION}")
    return arrays, manifest


def load_with_config(path: str | Path, config_cls, check_params, what: str,
                     hint: str = "") -> tuple[dict, object, dict]:
    """(params, config, manifest) of a refq model .npz whose manifest holds a `config` entry.

    config = config_cls.from_dict(manifest['config']), then check_params(params, config) validates the
    arrays; a missing file or config entry is a ValueError naming it (`what` names the model, `hint` is
    appended to the not-found message).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} checkpoint {path} not found{hint}")
    params, manifest = load_npz(path)
    if "config" not in manifest:
        raise ValueError(f"{path}: manifest has no 'config' entry (keys: {sorted(manifest)})")
    cfg = config_cls.from_dict(manifest["config"])
    check_params(params, cfg)
    return params, cfg, manifest
