"""Seeded synthetic scene-text images with exact word boxes, written as an ICDAR 2015-style dataset.

One scene (docs/spotter.md T6): a random background (`backgrounds.py`), then 1-6
words placed as "lines" of 1-3 words that share a font, size and colour. Each
word gets its exact box from Pillow's `ImageDraw.textbbox`; lines are placed
by rejection sampling so that no two word boxes overlap and every box lies
inside the image. The text colour is drawn until its luminance differs enough
from the background under the line (sometimes only moderately: low contrast).
About 5% of the lines are single unreadable words, tiny (7-11 px) or heavily
blurred, whose transcription is "###" (do not care), to exercise the
evaluation's don't-care handling (ICDAR 2015). Finally the whole image
gets a slight Gaussian blur and Gaussian pixel noise.

Optional style augmentation (`style` > 0, off by default): that fraction of
the readable lines is drawn with a synthetic bold (the glyph mask blurred
and its alpha doubled, which thickens every stroke by a fraction of a pixel
to about a pixel), a synthetic slant (the mask sheared to the right about
the line's middle row, as italic faces lean) or both. A styled word's box is
the bounding box of its own rendered ink (alpha >= 32/255), which matches
`textbbox` on plain text to within a pixel. Off, the generator draws no
extra random numbers, so style=0 datasets are the same as before the option
existed (images and ground truth).

Boxes are (x0, y0, x1, y1) in pixel-edge coordinates (x1, y1 exclusive), as
`textbbox` returns them. `generate_dataset` draws image i from the generator
np.random.default_rng([seed, split, i]), so image i does not depend on n and
the train and held-out splits differ even for the same seed.

References:
    Jaderberg et al., "Synthetic data and artificial neural networks for
    natural scene text recognition", 2014 (the synthetic-word recipe).
    Gupta et al., "Synthetic data for text localisation in natural images"
    (SynthText), CVPR 2016.
    docs/spotter.md, T6.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from refq.data.image import read_image
from refq.spotter.backgrounds import random_background
from refq.spotter.boxes import aabb_to_quad, is_axis_aligned, quad_to_aabb
from refq.spotter.fonts import SPLITS, font_paths, load_font
from refq.spotter.icdar import DONT_CARE, list_gt_files, read_icdar_gt, write_icdar
from refq.spotter.words import sample_token

MIN_FONT_PX, MAX_FONT_PX = 14, 36
DNC_FONT_PX = (7, 11)
P_DNC = 0.05
P_LOW_CONTRAST = 0.15
_MARGIN = 2  # free pixels kept around every line
BOLD_SIGMA = (0.03, 0.06)  # synthetic bold: blur sigma as a fraction of the font size (then alpha x2)
SLANT = (0.15, 0.35)  # synthetic slant: horizontal shear per pixel of height (about 9 to 19 degrees)
_INK = 32  # alpha (of 255) above which a styled pixel counts as ink for its word box
_SPLIT_CODE = {"train": 0, "heldout": 1}  # mixed into the seed: the splits never share scenes
_MEASURE = ImageDraw.Draw(Image.new("L", (1, 1)))  # only for textbbox / textlength


class SynthWord(NamedTuple):
    """A ground-truth word: box (x0, y0, x1, y1) ints, transcription ('###' if do-not-care), dnc flag."""
    box: tuple[int, int, int, int]
    text: str
    dnc: bool


def _luminance(pixels: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of colours [..., C] (C = 1 or 3) -> [...]."""
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _text_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A text colour [C] that stands out from the background patch [h, w, C] under the line."""
    # accept a colour whose luma is >= `need` from the patch mean and >= need/2 from 90% of its pixels,
    # so that a word straddling a dark and a light region stays readable on both; else the best candidate
    c = background.shape[-1]
    luma = _luminance(background).reshape(-1)  # [h*w]
    need = 45.0 if rng.random() < P_LOW_CONTRAST else 90.0
    randoms = rng.uniform(0.0, 255.0, size=(20, c)).astype(np.float32)  # [20, C]
    candidates = np.concatenate([randoms, np.zeros((1, c)), np.full((1, c), 255.0)]).astype(np.float32)  # [22, C]
    lum = _luminance(candidates)  # [22]
    frac = np.mean(np.abs(lum[:, None] - luma[None, :]) >= need / 2, axis=1)  # [22]
    ok = (np.abs(lum - luma.mean()) >= need) & (frac >= 0.9)  # [22]
    return candidates[int(np.argmax(ok))] if ok.any() else candidates[int(np.argmax(frac))]


def _layout(tokens: list[str], font, gap: int = 0) -> tuple[list[tuple[int, int]], list[tuple[int, int, int, int]]]:
    """Drawing origins and boxes of tokens written left to right from (0, 0), one space (+ gap px) apart."""
    origins, boxes = [], []
    x, space = 0, font.getlength(" ") + gap
    for token in tokens:
        origins.append((x, 0))
        boxes.append(tuple(int(v) for v in _MEASURE.textbbox((x, 0), token, font=font)))
        x = int(np.ceil(x + font.getlength(token) + space))
    return origins, boxes


def _styled_line(tokens: list[str], font, bold_sigma: float, shear: float):
    """A bold and/or slanted line at layout coordinates: (alpha uint8 [h, w], word boxes, (x, y) of its corner).

    Each word is drawn alone, blurred by bold_sigma px with its alpha doubled
    (bold, when > 0), then sheared right about the line's middle row (slant,
    when > 0), so that its box is the bounding box of its own ink.
    """
    gap = int(np.ceil(shear * font.size))
    origins, plain = _layout(tokens, font, gap)
    pad = 2 + gap + int(np.ceil(3 * bold_sigma))
    left, top = min(b[0] for b in plain) - pad, min(b[1] for b in plain) - pad
    w, h = max(b[2] for b in plain) + pad - left, max(b[3] for b in plain) + pad - top
    middle = (min(b[1] for b in plain) + max(b[3] for b in plain)) / 2 - top
    alpha, boxes = np.zeros((h, w), dtype=np.uint8), []
    for token, (ox, oy) in zip(tokens, origins):
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).text((ox - left, oy - top), token, fill=255, font=font)
        if bold_sigma > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(bold_sigma)).point(lambda v: min(255, 2 * v))
        if shear > 0:  # output (x, y) reads input (x + shear * (y - middle), y): the top leans right
            mask = mask.transform((w, h), Image.Transform.AFFINE, (1.0, shear, -shear * middle, 0.0, 1.0, 0.0),
                                  resample=Image.Resampling.BILINEAR)
        word = np.asarray(mask)  # [h, w]
        ys, xs = np.nonzero(word >= _INK)
        if len(xs) == 0:
            return None
        boxes.append((int(xs.min()) + left, int(ys.min()) + top, int(xs.max()) + 1 + left, int(ys.max()) + 1 + top))
        alpha = np.maximum(alpha, word)  # [h, w]
    return alpha, boxes, (left, top)


def _overlaps(box, others, margin: int) -> bool:
    """True when box, grown by margin, intersects any of the other boxes."""
    x0, y0, x1, y1 = box
    return any(x0 - margin < b[2] and b[0] < x1 + margin and y0 - margin < b[3] and b[1] < y1 + margin
               for b in others)


def _place_line(rng, origins, rel, h, w, placed):
    """(origins, boxes) of a laid-out line moved to a random spot inside the image, clear of `placed`.

    None when the line's own words touch or after 30 tries.
    """
    if any(_overlaps(b, rel[:i], 0) for i, b in enumerate(rel)):  # italic overhang touching the next word
        return None
    left, top = min(b[0] for b in rel), min(b[1] for b in rel)
    right, bottom = max(b[2] for b in rel), max(b[3] for b in rel)
    lo_x, hi_x = _MARGIN - left, w - _MARGIN - right
    lo_y, hi_y = _MARGIN - top, h - _MARGIN - bottom
    if hi_x < lo_x or hi_y < lo_y:
        return None
    for _ in range(30):
        x, y = int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))
        boxes = [(b[0] + x, b[1] + y, b[2] + x, b[3] + y) for b in rel]
        if not any(_overlaps(b, placed, _MARGIN) for b in boxes):
            return [(ox + x, oy + y) for ox, oy in origins], boxes
    return None


def _line_mask(shape, tokens, font, origins, blur: float) -> np.ndarray:
    """Alpha uint8 [H, W] of the tokens drawn at their origins, Gaussian-blurred by blur px when > 0."""
    h, w = shape
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    for token, origin in zip(tokens, origins):
        draw.text(origin, token, fill=255, font=font)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(mask)


def _paste_mask(shape, alpha: np.ndarray, corner) -> np.ndarray:
    """Alpha uint8 [H, W]: the line's alpha [h, w] put with its top-left at corner (x, y), clipped to the image."""
    h, w = shape
    (x, y), (lh, lw) = corner, alpha.shape
    mask = np.zeros((h, w), dtype=np.uint8)
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + lh, h), min(x + lw, w)
    mask[y0:y1, x0:x1] = alpha[y0 - y:y1 - y, x0 - x:x1 - x]  # [H, W]; only the empty padding falls outside
    return mask


def _draw_line(canvas, rng, mask: np.ndarray, boxes) -> np.ndarray:
    """The canvas [H, W, C] with the line's alpha mask [H, W] blended in one colour."""
    alpha = mask.astype(np.float32)[:, :, None] / 255.0 * rng.uniform(0.85, 1.0)  # [H, W, 1]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    colour = _text_colour(rng, canvas[y0:y1, x0:x1])  # [C]
    return canvas * (1.0 - alpha) + colour[None, None, :] * alpha  # [H, W, C]


def generate_scene(rng: np.random.Generator, size=(256, 256), fonts: str = "train", mode: str = "L",
                   max_words: int = 6, style: float = 0.0) -> tuple[np.ndarray, list[SynthWord]]:
    """One scene: image uint8 [H, W] ('L') or [H, W, 3] ('RGB') and its words (reading order not implied).

    style: fraction of the readable lines drawn with synthetic bold and/or slant (module docstring).
    """
    h, w = (int(v) for v in size)
    if not 0.0 <= style <= 1.0:
        raise ValueError(f"generate_scene: style={style} must be a fraction in [0, 1]")
    if h < 32 or w < 32:
        raise ValueError(f"generate_scene: size={tuple(size)} is too small, need at least 32x32 (H, W)")
    if mode not in ("L", "RGB"):
        raise ValueError(f"generate_scene: mode={mode!r}, expected 'L' or 'RGB'")
    if fonts not in SPLITS:
        raise ValueError(f"generate_scene: fonts={fonts!r}, expected one of {sorted(SPLITS)}")
    if max_words < 1:
        raise ValueError(f"generate_scene: max_words={max_words} must be at least 1")
    paths = [str(p) for p in font_paths(fonts)]
    max_px = max(MIN_FONT_PX, min(MAX_FONT_PX, int(0.45 * h)))
    canvas = random_background(rng, h, w, 3 if mode == "RGB" else 1)  # [H, W, C]
    target = int(rng.integers(1, max_words + 1))
    words: list[SynthWord] = []
    for _ in range(6 * target + 6):
        if len(words) >= target:
            break
        dnc = rng.random() < P_DNC
        n_tokens = 1 if dnc else int(min(target - len(words), rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1])))
        tokens = [sample_token(rng) for _ in range(n_tokens)]
        path = paths[int(rng.integers(0, len(paths)))]
        blur = 0.0
        if dnc and rng.random() < 0.5:
            px = int(rng.integers(DNC_FONT_PX[0], DNC_FONT_PX[1] + 1))
        else:
            px = int(rng.integers(MIN_FONT_PX, max_px + 1))
            blur = rng.uniform(0.22, 0.3) * px if dnc else 0.0
        font = load_font(path, px)
        styled = None
        if style > 0 and not dnc and rng.random() < style:
            kind = int(rng.integers(0, 3))  # 0 bold, 1 slant, 2 both
            sigma = rng.uniform(*BOLD_SIGMA) * px if kind != 1 else 0.0
            shear = rng.uniform(*SLANT) if kind != 0 else 0.0
            styled = _styled_line(tokens, font, sigma, shear)
            if styled is None:
                continue
            line_alpha, rel, corner = styled
            origins = [corner]  # placement moves the alpha's corner with the boxes, as it moves text origins
        else:
            origins, rel = _layout(tokens, font)
        placement = _place_line(rng, origins, rel, h, w, [word.box for word in words])
        if placement is None:
            continue
        origins, boxes = placement
        if styled is None:
            mask = _line_mask((h, w), tokens, font, origins, blur)
        else:
            mask = _paste_mask((h, w), line_alpha, origins[0])
        canvas = _draw_line(canvas, rng, mask, boxes)
        words.extend(SynthWord(box, DONT_CARE if dnc else token, dnc) for token, box in zip(tokens, boxes))
    u8 = np.clip(canvas, 0, 255).astype(np.uint8)  # [H, W, C]
    image = Image.fromarray(u8[:, :, 0] if mode == "L" else u8)
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    pixels = np.asarray(image, dtype=np.float32)  # [H, W] or [H, W, 3]
    noisy = pixels + rng.normal(0.0, rng.uniform(0.0, 8.0), size=pixels.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), words


def generate_dataset(out_dir, n: int, seed: int, fonts: str = "train", size=(256, 256), mode: str = "L",
                     style: float = 0.0, verbose: bool = False) -> dict:
    """Write img_{i}.png, gt_img_{i}.txt (i = 1..n) and synth.json to out_dir; returns the summary dict."""
    if n < 1:
        raise ValueError(f"generate_dataset: n={n} must be at least 1")
    if fonts not in SPLITS:
        raise ValueError(f"generate_dataset: fonts={fonts!r}, expected one of {sorted(SPLITS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_words = n_dnc = 0
    for i in range(1, n + 1):
        rng = np.random.default_rng([seed, _SPLIT_CODE[fonts], i])
        image, words = generate_scene(rng, size=size, fonts=fonts, mode=mode, style=style)
        Image.fromarray(image).save(out / f"img_{i}.png")
        write_icdar(out / f"gt_img_{i}.txt", aabb_to_quad([wd.box for wd in words]), [wd.text for wd in words])
        n_words += len(words)
        n_dnc += sum(wd.dnc for wd in words)
        if verbose and (i % 50 == 0 or i == n):
            print(f"synth: {i}/{n} images", file=sys.stderr)
    summary = {"generator": "refq.spotter.synth", "n_images": n, "seed": seed, "fonts": fonts,
               "font_files": [name for name, _ in SPLITS[fonts]], "size": [int(v) for v in size],
               "mode": mode, "style": style, "n_words": n_words, "n_dnc": n_dnc}
    (out / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_sample(data_dir, name: str) -> tuple[np.ndarray, list[SynthWord]]:
    """Image (uint8 array) and axis-aligned words of sample `name` ('img_3') of a dataset folder."""
    data_dir = Path(data_dir)
    image_path = data_dir / f"{name}.png"
    if not image_path.exists():
        raise ValueError(f"load_sample: no image {image_path}")
    gt = read_icdar_gt(data_dir / f"gt_{name}.txt")
    quads = np.array([wd.quad for wd in gt]).reshape(-1, 4, 2)
    if not np.all(is_axis_aligned(quads)):
        raise ValueError(f"load_sample: {name} has rotated quads; synthetic boxes are axis-aligned")
    boxes = quad_to_aabb(quads).astype(int)  # [N, 4]
    words = [SynthWord(tuple(int(v) for v in b), wd.text, wd.dnc) for b, wd in zip(boxes, gt)]
    return read_image(image_path), words


def list_samples(data_dir) -> list[str]:
    """Sample names ('img_1', 'img_2', ...) of a dataset folder, in index order."""
    return list(list_gt_files(data_dir))
