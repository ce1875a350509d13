"""Reading image files with Pillow, with every failure a ValueError naming the file.

The size is checked from the header before anything is decoded, so a small file declaring a huge image
(a "decompression bomb") is refused instead of taking gigabytes; `max_pixels` raises or lowers the cap.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

MAX_PIXELS = 4096 * 4096  # 16.8 megapixels; ICDAR 2015 images are 0.9 and refq's synthetic ones 0.07


def read_image(path, mode: str | None = None, max_pixels: int = MAX_PIXELS, hint: str = "") -> np.ndarray:
    """uint8 array of an image file (converted to `mode`, e.g. 'L', when given) of at most max_pixels pixels.

    `hint` ends the too-large message (e.g. which option raises the limit).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image {path}: no such file" if not path.exists() else f"image {path} is not a file")
    try:
        with warnings.catch_warnings():  # Pillow's own warning threshold: max_pixels decides here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ValueError(f"image {path} is {width}x{height} = {width * height:,} pixels, more than "
                                     f"the limit of {max_pixels:,}{hint}")
                im = im.convert(mode) if mode is not None else im
                return np.asarray(im)
    except Image.DecompressionBombError as err:  # beyond twice Image.MAX_IMAGE_PIXELS, whatever max_pixels says
        raise ValueError(f"image {path}: Pillow refuses it as a decompression bomb: {err}") from None
    except (OSError, SyntaxError, EOFError) as err:  # UnidentifiedImageError, a truncated file, a broken header
        raise ValueError(f"image {path} is not a readable image: {' '.join(str(err).split())}") from None
