"""ICDAR 2015 text files: ground truth (gt_img_{i}.txt) and results (res_img_{i}.txt).

Format (ICDAR 2015 Robust Reading, Challenge 4). One word per line:

    x1,y1,x2,y2,x3,y3,x4,y4,transcription

* the four vertices go clockwise on screen, starting from the top-left;
* the transcription is everything after the eighth comma, so it may itself
  contain commas; "###" marks a do-not-care region (unreadable text);
* the official ground-truth files are UTF-8 **with** a byte-order mark and
  CRLF line ends. `write_icdar` writes that form for ground truth; the
  readers accept files with or without the BOM and with CRLF or LF.
* result files use the same layout; for detection-only results the
  transcription (and its comma) may be missing.

Images are named img_{i} with i counting from 1, as in ICDAR 2015.

References:
    Karatzas et al., "ICDAR 2015 competition on Robust Reading", ICDAR 2015.
    docs/spotter.md, T6-T7.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

BOM = "\ufeff"
DONT_CARE = "###"
_GT_NAME = re.compile(r"^gt_(img_\d+)\.txt$")
_RES_NAME = re.compile(r"^res_(img_\d+)\.txt$")


class IcdarWord(NamedTuple):
    """One line of an ICDAR file: a quad [4, 2] (float64) and its transcription."""
    quad: np.ndarray
    text: str

    @property
    def dnc(self) -> bool:
        """True for a do-not-care region (transcription '###')."""
        return self.text == DONT_CARE


def _number(v: float) -> str:
    """A coordinate as text: integers without a decimal point, other values exactly (repr)."""
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


def format_line(quad, text: str | None) -> str:
    """One ICDAR line (no line end); text=None writes the 8 coordinates only."""
    q = np.asarray(quad, dtype=np.float64).reshape(-1)
    if q.shape != (8,):
        raise ValueError(f"format_line: expected a quad of 8 coordinates, got {np.shape(quad)}")
    if text is not None and ("\n" in text or "\r" in text):
        raise ValueError(f"format_line: transcription {text!r} contains a line break")
    coords = ",".join(_number(v) for v in q)
    return coords if text is None else f"{coords},{text}"


def write_icdar(path, quads, texts, bom: bool = True, crlf: bool = True) -> None:
    """Write quads [N, 4, 2] and transcriptions (None for detection-only) as an ICDAR 2015 file."""
    quads = np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)
    texts = list(texts) if texts is not None else [None] * len(quads)
    if len(texts) != len(quads):
        raise ValueError(f"write_icdar: {len(quads)} quads but {len(texts)} transcriptions")
    end = "\r\n" if crlf else "\n"
    body = "".join(format_line(q, t) + end for q, t in zip(quads, texts))
    Path(path).write_bytes(((BOM if bom else "") + body).encode("utf-8"))


def parse_icdar(content: str, source: str = "<string>", need_text: bool = True) -> list[IcdarWord]:
    """Parse the text of an ICDAR file (BOM optional); ValueError naming the line on bad input."""
    words = []
    for number, line in enumerate(content.lstrip(BOM).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",", 8)
        if len(fields) < 8 or (need_text and len(fields) < 9):
            raise ValueError(f"{source}:{number}: expected 8 coordinates and a transcription, got {line!r}")
        try:
            coords = np.array([float(v) for v in fields[:8]], dtype=np.float64)
        except ValueError:
            raise ValueError(f"{source}:{number}: coordinates are not numbers in {line!r}") from None
        words.append(IcdarWord(coords.reshape(4, 2), fields[8] if len(fields) == 9 else ""))
    return words


def read_icdar_gt(path) -> list[IcdarWord]:
    """Read a ground-truth file gt_img_{i}.txt (UTF-8, BOM optional, CRLF or LF)."""
    path = Path(path)
    return parse_icdar(path.read_bytes().decode("utf-8-sig"), source=str(path), need_text=True)


def read_icdar_result(path) -> list[IcdarWord]:
    """Read a result file res_img_{i}.txt; the transcription is optional (detection-only results)."""
    path = Path(path)
    return parse_icdar(path.read_bytes().decode("utf-8-sig"), source=str(path), need_text=False)


def _by_index(names: dict[str, Path]) -> dict[str, Path]:
    """Sort a {img_i: path} dict by the number i."""
    return dict(sorted(names.items(), key=lambda kv: int(kv[0].split("_")[1])))


def list_gt_files(gt_dir) -> dict[str, Path]:
    """{'img_1': Path('.../gt_img_1.txt'), ...} for a ground-truth folder, in image order."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise ValueError(f"list_gt_files: {gt_dir} is not a directory")
    found = {m.group(1): p for p in gt_dir.iterdir() if (m := _GT_NAME.match(p.name))}
    if not found:
        raise ValueError(f"list_gt_files: no gt_img_<i>.txt files in {gt_dir}")
    return _by_index(found)


def list_result_files(res_dir) -> dict[str, Path]:
    """{'img_1': Path('.../res_img_1.txt'), ...} for a result folder, in image order."""
    res_dir = Path(res_dir)
    if not res_dir.is_dir():
        raise ValueError(f"list_result_files: {res_dir} is not a directory")
    return _by_index({m.group(1): p for p in res_dir.iterdir() if (m := _RES_NAME.match(p.name))})
