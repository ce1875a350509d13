"""Every checkpoint reader names a missing path or a directory in a ValueError (not an OSError traceback)."""
from __future__ import annotations

import pytest

from refq.io import llama2c, npz, pth, read_checkpoint, safetensors

READERS = {"safetensors": safetensors.read_checkpoint, "pth": pth.read_checkpoint, "npz": npz.load_npz,
           "llama2c": llama2c.read_checkpoint, "tokenizer": llama2c.read_tokenizer, "detect": read_checkpoint}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_missing_files_and_directories_are_value_errors(tmp_path, reader):
    with pytest.raises(ValueError, match=f"{tmp_path / 'nope.bin'}: no such file"):
        READERS[reader](tmp_path / "nope.bin")
    with pytest.raises(ValueError, match=f"{tmp_path} is a directory, not a file"):
        READERS[reader](tmp_path)
