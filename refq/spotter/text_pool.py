"""Text pooling: bilinear crops of word boxes from the shared feature map, fixed height, width kept in proportion.

The paper's connector between detection and recognition ("a text pooling layer ... to extract a
fixed-height feature map for individual text regions", Sui et al. 2018). refq's version is a
RoIAlign-style bilinear variant (docs/spotter.md T2):

* box (x0, y0, x1, y1) in image pixels (edges) -> feature coordinates by dividing by the stride;
* pooled height H_p (8), pooled width W_i = clip(round(H_p * aspect * w / h), w_min, w_max), so the
  cells keep the box's aspect ratio up to the constant `aspect` (cells `1 / aspect` times as wide as
  high); W_i is monotone in w / h;
* cell (i, j) samples the map at its centre with bilinear weights (Jaderberg et al. Eq. 5); samples
  outside the map read zeros. Separable, so one RoI is two small matrix products
      R_i = M_y @ X[b, :, rows, cols] @ M_x^T         [H_p, Hs] @ [C, Hs, Ws] @ [Ws, W_i]
  and the backward is the transpose  dX[b, :, rows, cols] += M_y^T @ dR_i @ M_x;
* every RoI is zero-padded on the right to W_max = max_i W_i; padded cells are exactly zero, depend on
  no input and pass back no gradient. CTC later sees `input_lengths = W_i`.

References:
    Sui et al., "A Novel Integrated Framework for Learning both Text Detection and Recognition",
    ICPR 2018 (text pooling layer); He et al., "Mask R-CNN", ICCV 2017 (RoIAlign);
    Jaderberg et al., "Spatial Transformer Networks", NeurIPS 2015, Eq. 5 (bilinear kernel);
    Liu et al., "FOTS", CVPR 2018, Sec. 3.3 (RoIRotate: height 8, aspect kept);
    docs/spotter.md, T2.
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function, Tensor
from refq.autograd.ops_resize import box_sample_positions, sample_matrix


def pooled_widths(boxes, pool_h: int, aspect: float, w_min: int, w_max: int) -> np.ndarray:
    """W_i = clip(round(pool_h * aspect * w_i / h_i), w_min, w_max) for boxes [R, 4] -> int64 [R]."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0]  # [R]
    h = b[:, 3] - b[:, 1]  # [R]
    if np.any(w <= 0) or np.any(h <= 0):
        raise ValueError(f"pooled_widths: boxes need x1 > x0 and y1 > y0, got {b[(w <= 0) | (h <= 0)][:3].tolist()}")
    if not 1 <= w_min <= w_max:
        raise ValueError(f"pooled_widths: need 1 <= w_min={w_min} <= w_max={w_max}")
    return np.clip(np.rint(pool_h * aspect * w / h), w_min, w_max).astype(np.int64)


def check_pool_args(x_shape, boxes, batch_index, widths, pool_h) -> tuple:
    """Validated (boxes float64 [R, 4], batch_index int64 [R], widths int64 [R]); ValueError on bad input."""
    if len(x_shape) != 4:
        raise ValueError(f"text_pool: features have shape {x_shape}, expected [B, C, H, W]")
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or not np.all(np.isfinite(b)) or len(b) == 0:
        raise ValueError(f"text_pool: boxes have shape {b.shape}, expected finite [R >= 1, 4]")
    if np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1]):
        raise ValueError(f"text_pool: boxes need x1 > x0 and y1 > y0, got {b[:3].tolist()}")
    bi = np.asarray(batch_index)
    if bi.shape != (len(b),) or bi.dtype.kind not in "iu" or bi.min() < 0 or bi.max() >= x_shape[0]:
        raise ValueError(f"text_pool: batch_index {bi.tolist()[:8]} is not {len(b)} integers in 0..{x_shape[0] - 1}")
    w = np.asarray(widths)
    if w.shape != (len(b),) or w.dtype.kind not in "iu" or w.min() < 1:
        raise ValueError(f"text_pool: widths {w.tolist()[:8]} are not {len(b)} positive integers")
    if not isinstance(pool_h, (int, np.integer)) or pool_h < 1:
        raise ValueError(f"text_pool: pool_h={pool_h!r}, expected a positive int")
    return b, bi.astype(np.int64), w.astype(np.int64)


class TextPool(Function):
    """Bilinear pooling of R boxes (feature coordinates) of x [B, C, H, W] into [R, C, pool_h, max(widths)]."""

    def forward(self, x, boxes=None, batch_index=None, widths=None, pool_h=8):
        B, C, H, W = x.shape
        out = np.zeros((len(boxes), C, pool_h, int(widths.max())), dtype=x.dtype)  # [R, C, Hp, Wmax]
        self.plans = []
        for r, ((x0, y0, x1, y1), b, wr) in enumerate(zip(boxes.tolist(), batch_index.tolist(), widths.tolist())):
            ys, My = sample_matrix(box_sample_positions(y0, y1, pool_h), H, x.dtype)  # [Hp, Hs]
            xs, Mx = sample_matrix(box_sample_positions(x0, x1, wr), W, x.dtype)  # [Wr, Ws]
            window = x[b, :, ys:ys + My.shape[1], xs:xs + Mx.shape[1]]  # [C, Hs, Ws]
            out[r, :, :, :wr] = My @ window @ Mx.T  # [Hp, Hs] @ [C, Hs, Ws] @ [Ws, Wr] -> [C, Hp, Wr]
            self.plans.append((b, ys, My, xs, Mx, wr))
        self.shape = x.shape
        return out

    def backward(self, g):
        gx = np.zeros(self.shape, dtype=g.dtype)  # [B, C, H, W]
        for r, (b, ys, My, xs, Mx, wr) in enumerate(self.plans):
            gwin = My.T @ g[r, :, :, :wr] @ Mx  # [Hs, Hp] @ [C, Hp, Wr] @ [Wr, Ws] -> [C, Hs, Ws]; padding ignored
            gx[b, :, ys:ys + My.shape[1], xs:xs + Mx.shape[1]] += gwin
        return (gx,)


def text_pool(features, boxes, batch_index, widths, stride: int, pool_h: int = 8) -> Tensor:
    """Pooled features [R, C, pool_h, max W_i] of image-pixel boxes [R, 4] on stride-`stride` features [B, C, H, W]."""
    x = features if isinstance(features, Tensor) else Tensor(np.asarray(features))
    b, bi, w = check_pool_args(x.shape, boxes, batch_index, widths, pool_h)
    return TextPool.apply(x, boxes=b / float(stride), batch_index=bi, widths=w, pool_h=int(pool_h))


def column_mask(widths, dtype=np.float32) -> np.ndarray:
    """1 on the first W_i columns of RoI i, 0 on its padding: widths [R] -> [R, 1, 1, max W_i]."""
    w = np.asarray(widths).reshape(-1)
    return (np.arange(int(w.max()))[None, :] < w[:, None]).astype(dtype)[:, None, None, :]
