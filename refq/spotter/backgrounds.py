"""Random backgrounds for the synthetic text scenes.

Every generator returns a float32 canvas [H, W, C] with values in [0, 255]
(C = 1 for grayscale, 3 for RGB) and draws all its randomness from `rng`:

* `flat`: one colour;
* `gradient`: a linear blend of two colours along a random direction;
* `value_noise`: a coarse random grid upsampled bicubically (blotches, stains);
* `texture`: "photographic" filtered noise, a 1/f^beta power spectrum with
  random phases (natural images have roughly 1/f^2 power spectra), mapped
  onto a blend of two colours;
* `add_clutter`: random rectangles, ellipses and lines drawn on top, the
  distractors (edges, strokes) a text detector must learn to reject.

`random_background` picks one base and sometimes adds clutter.

References:
    Field, "Relations between the statistics of natural images and the
    response properties of cortical cells", JOSA A 1987 (1/f spectra).
    docs/spotter.md, T6 (random background: flat / gradient / noise).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def _colour(rng: np.random.Generator, c: int) -> np.ndarray:
    """A random colour [C] in [0, 255]."""
    return rng.uniform(0.0, 255.0, size=c).astype(np.float32)


def _blend(t: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Per-pixel blend c0 + t (c1 - c0): [H, W] in [0, 1], [C], [C] -> [H, W, C]."""
    return (c0[None, None, :] + t[:, :, None] * (c1 - c0)[None, None, :]).astype(np.float32)


def flat(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """A single-colour canvas [H, W, C]."""
    return np.broadcast_to(_colour(rng, c), (h, w, c)).astype(np.float32)


def gradient(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """A linear two-colour gradient along a random direction [H, W, C]."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)  # [H, W] each
    proj = np.cos(angle) * xx + np.sin(angle) * yy  # [H, W]
    t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)  # [H, W] in [0, 1]
    return _blend(t, _colour(rng, c), _colour(rng, c))


def value_noise(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """A coarse random grid per channel, upsampled bicubically to [H, W, C]."""
    cells = int(rng.integers(3, 12))
    gh, gw = max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w))
    centre = _colour(rng, c)
    spread = rng.uniform(20.0, 90.0)
    out = np.empty((h, w, c), dtype=np.float32)
    for k in range(c):
        grid = (centre[k] + rng.uniform(-spread, spread, size=(gh, gw))).astype(np.float32)  # [gh, gw]
        out[:, :, k] = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC))  # [H, W]
    return np.clip(out, 0.0, 255.0)


def texture(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """Filtered noise with a 1/f^beta amplitude spectrum, blended between two colours [H, W, C]."""
    beta = rng.uniform(1.0, 2.2)
    fy = np.fft.fftfreq(h)[:, None]  # [H, 1]
    fx = np.fft.rfftfreq(w)[None, :]  # [1, W//2+1]
    f = np.sqrt(fx ** 2 + fy ** 2)  # [H, W//2+1]
    f[0, 0] = 1.0
    amplitude = f ** (-beta)  # [H, W//2+1]
    amplitude[0, 0] = 0.0  # no DC: the mean comes from the colours
    phase = rng.uniform(0.0, 2.0 * np.pi, size=amplitude.shape)  # [H, W//2+1]
    field = np.fft.irfft2(amplitude * np.exp(1j * phase), s=(h, w))  # [H, W]
    t = (field - field.min()) / max(float(np.ptp(field)), 1e-12)  # [H, W] in [0, 1]
    contrast = rng.uniform(0.3, 1.0)
    c0, c1 = _colour(rng, c), _colour(rng, c)
    mid = (c0 + c1) / 2
    return _blend(t.astype(np.float32), mid + contrast * (c0 - mid), mid + contrast * (c1 - mid))


def add_clutter(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of canvas [H, W, C] with 1-8 random rectangles, ellipses and lines drawn on it."""
    h, w, c = canvas.shape
    u8 = np.clip(canvas, 0, 255).astype(np.uint8)  # [H, W, C]
    image = Image.fromarray(u8[:, :, 0] if c == 1 else u8)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 9))):
        fill = tuple(int(v) for v in _colour(rng, c)) if c == 3 else int(_colour(rng, 1)[0])
        x0, x1 = sorted(rng.uniform(-0.2 * w, 1.2 * w, size=2))
        y0, y1 = sorted(rng.uniform(-0.2 * h, 1.2 * h, size=2))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            xy = [tuple(p) for p in rng.uniform(0, 1, size=(2, 2)) * (w, h)]
            draw.line(xy, fill=fill, width=int(rng.integers(1, 5)))
    return np.asarray(image, dtype=np.float32).reshape(h, w, c)


_BASES = (flat, gradient, value_noise, texture)
_BASE_WEIGHTS = np.array([0.2, 0.25, 0.25, 0.3])


def random_background(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    """One random background [H, W, C] float32 in [0, 255]: a base, plus clutter 35% of the time."""
    if c not in (1, 3):
        raise ValueError(f"random_background: c={c}, expected 1 (grayscale) or 3 (RGB)")
    base = _BASES[int(rng.choice(len(_BASES), p=_BASE_WEIGHTS))](rng, h, w, c)
    if rng.random() < 0.35:
        base = add_clutter(base, rng)
    return base
