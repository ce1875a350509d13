"""TrueType fonts for the synthetic scenes: a training list and a disjoint held-out list.

The spotter's held-out test set must use fonts never seen in training, so the
faces of two Debian font packages are split by hand into two fixed lists:

* fonts-dejavu-core: DejaVu Sans, Sans Mono and Serif, each Regular and Bold;
* fonts-liberation2: Liberation Sans, Serif and Mono, each Regular, Bold,
  Italic and Bold Italic.

The training list holds at least one face of every family (sans, serif, mono),
so the held-out faces are new *styles* (bold, italic) of familiar families
rather than unseen scripts. Only these two packages are used, so a dataset is
the same on every machine with them installed. Files are looked up under
$REFQ_FONT_DIR (if set) and then /usr/share/fonts and /usr/local/share/fonts.

References:
    docs/spotter.md, T6 (synthetic data: a random TTF font per line).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from PIL import ImageFont

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))

# (file name, Debian package providing it)
TRAIN_FONTS: tuple[tuple[str, str], ...] = (
    ("DejaVuSans.ttf", "fonts-dejavu-core"),
    ("DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    ("DejaVuSerif.ttf", "fonts-dejavu-core"),
    ("DejaVuSansMono.ttf", "fonts-dejavu-core"),
    ("LiberationSans-Regular.ttf", "fonts-liberation2"),
    ("LiberationSans-Bold.ttf", "fonts-liberation2"),
    ("LiberationSans-Italic.ttf", "fonts-liberation2"),
    ("LiberationSerif-Regular.ttf", "fonts-liberation2"),
    ("LiberationSerif-Bold.ttf", "fonts-liberation2"),
    ("LiberationSerif-BoldItalic.ttf", "fonts-liberation2"),
    ("LiberationMono-Regular.ttf", "fonts-liberation2"),
    ("LiberationMono-BoldItalic.ttf", "fonts-liberation2"),
)
HELDOUT_FONTS: tuple[tuple[str, str], ...] = (
    ("DejaVuSerif-Bold.ttf", "fonts-dejavu-core"),
    ("DejaVuSansMono-Bold.ttf", "fonts-dejavu-core"),
    ("LiberationSans-BoldItalic.ttf", "fonts-liberation2"),
    ("LiberationSerif-Italic.ttf", "fonts-liberation2"),
    ("LiberationMono-Bold.ttf", "fonts-liberation2"),
    ("LiberationMono-Italic.ttf", "fonts-liberation2"),
)
SPLITS = {"train": TRAIN_FONTS, "heldout": HELDOUT_FONTS}


def font_dirs() -> list[Path]:
    """Directories searched for font files, $REFQ_FONT_DIR first."""
    extra = os.environ.get("REFQ_FONT_DIR")
    return ([Path(extra)] if extra else []) + list(FONT_DIRS)


def find_font(name: str, package: str) -> Path:
    """Path of the font file `name`; FileNotFoundError naming the Debian package when absent."""
    dirs = font_dirs()
    for directory in dirs:
        if directory.is_dir():
            hits = sorted(directory.rglob(name))
            if hits:
                return hits[0]
    searched = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"font {name} not found under {searched}: install the Debian package {package} "
        f"(apt-get install {package}) or point REFQ_FONT_DIR at a folder holding {name}"
    )


def font_paths(split: str) -> list[Path]:
    """The font files of a split ('train' or 'heldout'), in the fixed list order."""
    if split not in SPLITS:
        raise ValueError(f"font_paths: unknown font split {split!r}, expected one of {sorted(SPLITS)}")
    return [find_font(name, package) for name, package in SPLITS[split]]


def required_packages() -> list[str]:
    """The Debian packages that provide every font of both splits."""
    return sorted({package for fonts in SPLITS.values() for _, package in fonts})


@functools.lru_cache(maxsize=256)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """A Pillow FreeType font at a pixel size (cached: loading a face costs more than drawing a word)."""
    if size < 1:
        raise ValueError(f"load_font: size={size} must be a positive number of pixels")
    return ImageFont.truetype(path, size)
