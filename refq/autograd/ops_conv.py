"""2-D convolution (NCHW) via im2col, with stride, padding, dilation and groups.

im2col turns the convolution into one matrix product per image and group:
  cols[b, g] = the Cg*kh*kw values under every kernel window      [K, L],  L = Ho*Wo
  y[b, g]    = W[g] @ cols[b, g]                                   [Og, K] @ [K, L] -> [Og, L]
  Ho = floor((H + 2 ph - dh (kh - 1) - 1) / sh) + 1   (same for Wo)
Backward is the adjoint of each step:
  dW[g] = sum_b dY[b, g] @ cols[b, g]^T,   dcols = W[g]^T @ dY[b, g],
  dX    = col2im(dcols): every window gradient is scatter-added back to the
          pixels the window read (overlapping windows add up).

`window_view` (a zero-copy strided view of all windows) and `col2im` are shared
with the pooling ops. `col2im_plain` is the literal loop over kernel offsets;
`col2im` adds a reshape fast path for non-overlapping windows (kernel ==
stride, e.g. ViT's patch embedding), tested to agree with the plain version.

References: Chellapilla et al., "High performance convolutional neural
networks for document processing", IWFHR 2006 (unfolding / im2col);
Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016
(output-size formula, Relationship 15).
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function
from refq.autograd.ops_elementwise import wants_grad


def pair(v, name: str, minimum: int) -> tuple:
    """An int or a pair of ints as an (h, w) pair, each at least `minimum` (ValueError naming `name`)."""
    hw = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(hw) != 2 or not all(isinstance(n, (int, np.integer)) for n in hw):
        raise ValueError(f"{name}={v!r}: expected an int or a pair of ints")
    if min(hw) < minimum:
        raise ValueError(f"{name}={v!r}: every entry must be >= {minimum}")
    return int(hw[0]), int(hw[1])


def out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    """Output length of a strided, padded, dilated window sweep over n positions."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def check_conv2d(x_shape, w_shape, b_shape, stride, padding, dilation, groups) -> tuple:
    """Validate conv2d arguments (ValueError naming the bad value); returns (stride, padding, dilation) pairs."""
    if len(x_shape) != 4:
        raise ValueError(f"conv2d: x has shape {x_shape}, expected [B, C, H, W]")
    if len(w_shape) != 4:
        raise ValueError(f"conv2d: w has shape {w_shape} (rank {len(w_shape)}), expected [O, C/groups, kh, kw]")
    stride, padding, dilation = pair(stride, "stride", 1), pair(padding, "padding", 0), pair(dilation, "dilation", 1)
    C, O = x_shape[1], w_shape[0]
    if not isinstance(groups, (int, np.integer)) or groups < 1 or C % groups or O % groups:
        raise ValueError(f"conv2d: groups={groups} must divide in_channels={C} and out_channels={O}")
    if w_shape[1] * groups != C:
        raise ValueError(f"conv2d: w has shape {w_shape}, expected {C // groups} input channels per group")
    for n, k, s, p, d, axis in zip(x_shape[2:], w_shape[2:], stride, padding, dilation, "HW"):
        if out_size(n, k, s, p, d) < 1:
            raise ValueError(f"conv2d: kernel {w_shape[2:]} (dilation {dilation}) does not fit {axis}={n} with padding {padding}")
    if b_shape is not None and b_shape != (O,):
        raise ValueError(f"conv2d: bias has shape {b_shape}, expected ({O},)")
    return stride, padding, dilation


def pad_hw(x: np.ndarray, padding: tuple, value: float = 0.0) -> np.ndarray:
    """Constant-pad the two spatial axes of [B, C, H, W] (no copy when padding is 0)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant", constant_values=value)


def window_view(xp: np.ndarray, kernel: tuple, stride: tuple, dilation: tuple, out_hw: tuple) -> np.ndarray:
    """Read-only strided view of every window: [B, C, Hp, Wp] -> [B, C, Ho, Wo, kh, kw]."""
    B, C = xp.shape[:2]
    sb, sc, sy, sx = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(B, C) + tuple(out_hw) + tuple(kernel),
        strides=(sb, sc, sy * stride[0], sx * stride[1], sy * dilation[0], sx * dilation[1]),
        writeable=False)


def col2im_plain(gwin: np.ndarray, padded_hw: tuple, stride: tuple, dilation: tuple) -> np.ndarray:
    """Adjoint of `window_view`: scatter-add [B, C, Ho, Wo, kh, kw] into [B, C, Hp, Wp], one kernel offset at a time."""
    B, C, Ho, Wo, kh, kw = gwin.shape
    (sh, sw), (dh, dw) = stride, dilation
    gxp = np.zeros((B, C) + tuple(padded_hw), dtype=gwin.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (Ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (Wo - 1) + 1, sw)
            gxp[:, :, rows, cols] += gwin[:, :, :, :, i, j]  # [B, C, Ho, Wo]
    return gxp


def col2im(gwin: np.ndarray, padded_hw: tuple, stride: tuple, dilation: tuple) -> np.ndarray:
    """`col2im_plain`, with a reshape fast path when the windows tile the input without overlap."""
    B, C, Ho, Wo, kh, kw = gwin.shape
    if tuple(stride) != (kh, kw) or tuple(dilation) != (1, 1):
        return col2im_plain(gwin, padded_hw, stride, dilation)
    gxp = np.zeros((B, C) + tuple(padded_hw), dtype=gwin.dtype)
    tiles = gwin.transpose(0, 1, 2, 4, 3, 5).reshape(B, C, Ho * kh, Wo * kw)  # [B, C, Ho, kh, Wo, kw] -> [B, C, Ho*kh, Wo*kw]
    gxp[:, :, :Ho * kh, :Wo * kw] = tiles
    return gxp


def crop_hw(gxp: np.ndarray, padding: tuple, hw: tuple) -> np.ndarray:
    """Remove the spatial padding again: [B, C, Hp, Wp] -> [B, C, H, W]."""
    ph, pw = padding
    return gxp[:, :, ph:ph + hw[0], pw:pw + hw[1]]


class Conv2d(Function):
    """Grouped 2-D cross-correlation of x [B, C, H, W] with w [O, C/groups, kh, kw] (+ bias [O])."""

    def forward(self, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        B, C, H, W = x.shape
        O, Cg, kh, kw = w.shape
        G = groups
        Ho = out_size(H, kh, stride[0], padding[0], dilation[0])
        Wo = out_size(W, kw, stride[1], padding[1], dilation[1])
        xp = pad_hw(x, padding)  # [B, C, Hp, Wp]
        win = window_view(xp, (kh, kw), stride, dilation, (Ho, Wo))  # [B, C, Ho, Wo, kh, kw]
        cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(B, G, Cg * kh * kw, Ho * Wo)  # -> [B, G, K, L] (copy)
        wm = w.reshape(G, O // G, Cg * kh * kw)  # [O, Cg, kh, kw] -> [G, Og, K]
        y = np.matmul(wm, cols).reshape(B, O, Ho, Wo)  # [G, Og, K] @ [B, G, K, L] -> [B, G, Og, L] -> [B, O, Ho, Wo]
        if b is not None:
            y += b.reshape(1, O, 1, 1)
        self.cols, self.w, self.has_bias = cols, w, b is not None
        self.x_hw, self.padded_hw = (H, W), xp.shape[2:]
        self.stride, self.padding, self.dilation = stride, padding, dilation
        return y

    def backward(self, g):
        B, O, Ho, Wo = g.shape
        G, K, L = self.cols.shape[1], self.cols.shape[2], Ho * Wo
        w = self.w
        g3 = g.reshape(B, G, O // G, L)  # [B, O, Ho, Wo] -> [B, G, Og, L]
        gx = gw = gb = None
        if wants_grad(self, 0):
            wm = w.reshape(G, O // G, K)  # [G, Og, K]
            gcols = np.matmul(np.swapaxes(wm, -1, -2), g3)  # [G, K, Og] @ [B, G, Og, L] -> [B, G, K, L]
            C, kh, kw = G * w.shape[1], w.shape[2], w.shape[3]
            gwin = gcols.reshape(B, C, kh, kw, Ho, Wo).transpose(0, 1, 4, 5, 2, 3)  # -> [B, C, Ho, Wo, kh, kw]
            gx = crop_hw(col2im(gwin, self.padded_hw, self.stride, self.dilation), self.padding, self.x_hw)
        if wants_grad(self, 1):
            gw = np.matmul(g3, np.swapaxes(self.cols, -1, -2)).sum(axis=0)  # [B, G, Og, L] @ [B, G, L, K] -> [G, Og, K]
            gw = gw.reshape(w.shape).astype(w.dtype, copy=False)
        if not self.has_bias:
            return gx, gw
        if wants_grad(self, 2):
            gb = g.sum(axis=(0, 2, 3)).astype(self.parents[2].dtype, copy=False)  # [O]
        return gx, gw, gb
