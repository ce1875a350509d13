"""2-D max and average pooling (NCHW) on the strided window view of `ops_conv`.

  max_pool2d:  y = max over each kh x kw window (padding with -inf);
               dx gets g at the window's (first) arg-max, summed over overlapping windows.
  avg_pool2d:  y = mean over each window (zero padding counted, as PyTorch's
               count_include_pad=True default); dx gets g / (kh kw) at every window position.
Both backward passes scatter through `col2im`, the adjoint of the window view.
Rectangular kernels such as (2, 1) (height-only pooling in the text spotter's
recognizer, docs/spotter.md T3) are supported.

References: Dumoulin & Visin, "A guide to convolution arithmetic for deep
learning", 2016 (pooling arithmetic, Relationship 20); Scherer et al.,
"Evaluation of pooling operations in convolutional architectures", ICANN 2010.
"""
from __future__ import annotations

import numpy as np

from refq.autograd.engine import Function
from refq.autograd.ops_conv import col2im, crop_hw, out_size, pad_hw, window_view

_NO_DILATION = (1, 1)


def pool_geometry(shape: tuple, kernel: tuple, stride: tuple, padding: tuple, name: str) -> tuple:
    """Validated output size (Ho, Wo) of a pooling window sweep over [B, C, H, W]."""
    if len(shape) != 4:
        raise ValueError(f"{name}: x has shape {shape}, expected [B, C, H, W]")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{name}: padding={padding} must be at most half of kernel={kernel}")
    Ho = out_size(shape[2], kernel[0], stride[0], padding[0], 1)
    Wo = out_size(shape[3], kernel[1], stride[1], padding[1], 1)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{name}: kernel={kernel} is larger than the padded input {shape[2:]} (padding={padding})")
    return Ho, Wo


class MaxPool2d(Function):
    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
        B, C, H, W = x.shape
        Ho, Wo = pool_geometry(x.shape, kernel, stride, padding, "max_pool2d")
        xp = pad_hw(x, padding, value=-np.inf)  # [B, C, Hp, Wp]
        win = window_view(xp, kernel, stride, _NO_DILATION, (Ho, Wo)).reshape(B, C, Ho, Wo, -1)  # [..., kh*kw]
        self.arg = win.argmax(axis=-1)[..., None]  # [B, C, Ho, Wo, 1]
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.x_hw, self.padded_hw = (H, W), xp.shape[2:]
        return np.take_along_axis(win, self.arg, axis=-1)[..., 0]  # [B, C, Ho, Wo]

    def backward(self, g):
        gwin = np.zeros(g.shape + (self.kernel[0] * self.kernel[1],), dtype=g.dtype)  # [B, C, Ho, Wo, kh*kw]
        np.put_along_axis(gwin, self.arg, g[..., None], axis=-1)
        gwin = gwin.reshape(g.shape + tuple(self.kernel))  # [B, C, Ho, Wo, kh, kw]
        gxp = col2im(gwin, self.padded_hw, self.stride, _NO_DILATION)
        return (crop_hw(gxp, self.padding, self.x_hw),)


class AvgPool2d(Function):
    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
        Ho, Wo = pool_geometry(x.shape, kernel, stride, padding, "avg_pool2d")
        xp = pad_hw(x, padding)  # [B, C, Hp, Wp]
        win = window_view(xp, kernel, stride, _NO_DILATION, (Ho, Wo))  # [B, C, Ho, Wo, kh, kw]
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.x_hw, self.padded_hw = x.shape[2:], xp.shape[2:]
        return win.mean(axis=(-2, -1))

    def backward(self, g):
        share = g * (1.0 / (self.kernel[0] * self.kernel[1]))  # [B, C, Ho, Wo]
        gwin = np.broadcast_to(share[..., None, None], g.shape + tuple(self.kernel))  # [B, C, Ho, Wo, kh, kw]
        gxp = col2im(gwin, self.padded_hw, self.stride, _NO_DILATION)
        return (crop_hw(gxp, self.padding, self.x_hw),)
