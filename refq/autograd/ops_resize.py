"""Differentiable bilinear resampling: whole-image resize and crop-and-resize of boxes.

Bilinear interpolation is separable, so both ops are two matrix products
(SARDFQ's MSR regions are resized this way, docs/sardfq.md S3):
  y = R_h @ x @ R_w^T          (per image and channel)
  dx = R_h^T @ dy @ R_w        (the backward is the transpose)
Row i of R holds the two linear-interpolation weights (1 - l, l) at source
pixels (i0, i0 + 1) for the sample position s_i.

resize_bilinear (align_corners=False, as torch.nn.functional.interpolate):
  s_i = max((i + 0.5) * n_in / n_out - 0.5, 0),  i0 = floor(s_i),  l = s_i - i0,
  and i0 + 1 is clamped to the last pixel (edge replication).
crop_and_resize (RoIAlign-style bilinear sampling of a box (x0, y0, x1, y1)
given in pixel-edge coordinates, into an h x w grid):
  s_i = y0 + (i + 0.5) * (y1 - y0) / h - 0.5   (pixel-centre coordinates),
  and source pixels outside the map count as zero (no clamping). A box can
  therefore read just outside its own edges; resize_bilinear of a cropped
  slice instead replicates the slice's edge pixels.
For crop_and_resize each box only touches the rows/columns its samples reach,
so the matrices are restricted to that window; the backward scatter-adds each
box's R_y^T dY R_x into its image (several boxes may share an image).

References: SARDFQ, arXiv:2412.16553, Multi-Semantic Reinforcement (crop and resize); He et al., "Mask
R-CNN", ICCV 2017 (RoIAlign bilinear sampling); Jaderberg et al., "Spatial
Transformer Networks", NeurIPS 2015, Eq. 5 (bilinear kernel and its gradient).
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function


def resize_matrix(n_out: int, n_in: int, dtype=np.float64) -> np.ndarray:
    """[n_out, n_in] linear-interpolation matrix with half-pixel centres and clamped edges."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)  # [n_out]
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    R = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(R, (rows, i0), 1.0 - lam)
    np.add.at(R, (rows, i1), lam)  # i1 == i0 at the last pixel: both weights land there
    return R.astype(dtype, copy=False)


def sample_matrix(pos: np.ndarray, n: int, dtype=np.float64) -> tuple:
    """Zero-padded linear-interpolation weights at positions `pos` over n pixels, restricted to the pixels they touch.

    Returns (start, M) with M [len(pos), stop - start] such that the samples are M @ v[start:stop].
    """
    i0 = np.floor(pos).astype(np.intp)  # [m]
    lam = pos - i0
    start = int(np.clip(i0.min(), 0, n))
    stop = int(np.clip(i0.max() + 2, start, n))
    M = np.zeros((len(pos), stop - start))
    rows = np.arange(len(pos))
    for idx, weight in ((i0, 1.0 - lam), (i0 + 1, lam)):
        valid = (idx >= 0) & (idx < n)  # pixels outside the map contribute zero
        M[rows[valid], idx[valid] - start] += weight[valid]
    return start, M.astype(dtype, copy=False)


def box_sample_positions(lo: float, hi: float, m: int) -> np.ndarray:
    """Pixel-centre coordinates of m cell centres spanning the edge interval [lo, hi]."""
    return lo + (np.arange(m) + 0.5) * ((hi - lo) / m) - 0.5


def check_boxes(x_shape: tuple, boxes: np.ndarray, batch_index: np.ndarray) -> None:
    """Validate crop_and_resize arguments (ValueError naming the bad value)."""
    if len(x_shape) != 4:
        raise ValueError(f"crop_and_resize: x has shape {x_shape}, expected [B, C, H, W]")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all(np.isfinite(boxes)):
        raise ValueError(f"crop_and_resize: boxes have shape {boxes.shape}, expected finite [R, 4]")
    if batch_index.shape != (len(boxes),) or batch_index.dtype.kind not in "iu":
        raise ValueError(f"crop_and_resize: batch_index has shape {batch_index.shape} and dtype {batch_index.dtype}, "
                         f"expected integers of shape ({len(boxes)},)")
    if batch_index.size and (batch_index.min() < 0 or batch_index.max() >= x_shape[0]):
        bad = batch_index.min() if batch_index.min() < 0 else batch_index.max()
        raise ValueError(f"crop_and_resize: batch_index {bad} is out of range for a batch of {x_shape[0]}")


class ResizeBilinear(Function):
    """[B, C, H, W] -> [B, C, h, w] bilinear resize (align_corners=False)."""

    def forward(self, x, size=None):
        h, w = size
        self.Rh = resize_matrix(h, x.shape[2], x.dtype)  # [h, H]
        self.Rw = resize_matrix(w, x.shape[3], x.dtype)  # [w, W]
        return np.matmul(np.matmul(self.Rh, x), self.Rw.T)  # [h, H] @ [B, C, H, W] @ [W, w] -> [B, C, h, w]

    def backward(self, g):
        return (np.matmul(np.matmul(self.Rh.T, g), self.Rw),)  # [H, h] @ [B, C, h, w] @ [w, W] -> [B, C, H, W]


class CropAndResize(Function):
    """Bilinear samples of R boxes of x [B, C, H, W] on an h x w grid each: -> [R, C, h, w]."""

    def forward(self, x, boxes=None, batch_index=None, size=None):
        h, w = size
        B, C, H, W = x.shape
        out = np.zeros((len(boxes), C, h, w), dtype=x.dtype)
        self.plans = []
        for r, ((x0, y0, x1, y1), b) in enumerate(zip(boxes.tolist(), batch_index.tolist())):
            ys, My = sample_matrix(box_sample_positions(y0, y1, h), H, x.dtype)  # [h, Hs]
            xs, Mx = sample_matrix(box_sample_positions(x0, x1, w), W, x.dtype)  # [w, Ws]
            window = x[b, :, ys:ys + My.shape[1], xs:xs + Mx.shape[1]]  # [C, Hs, Ws]
            out[r] = np.matmul(np.matmul(My, window), Mx.T)  # [h, Hs] @ [C, Hs, Ws] @ [Ws, w] -> [C, h, w]
            self.plans.append((b, ys, My, xs, Mx))
        self.shape, self.dtype = x.shape, x.dtype
        return out

    def backward(self, g):
        gx = np.zeros(self.shape, dtype=self.dtype)
        for r, (b, ys, My, xs, Mx) in enumerate(self.plans):
            gwin = np.matmul(np.matmul(My.T, g[r]), Mx)  # [Hs, h] @ [C, h, w] @ [w, Ws] -> [C, Hs, Ws]
            gx[b, :, ys:ys + My.shape[1], xs:xs + Mx.shape[1]] += gwin
        return (gx,)
