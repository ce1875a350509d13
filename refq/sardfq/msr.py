"""MSR, Multi-Semantic Reinforcement: optimise non-overlapping regions of each image as images of their own.

SARDFQ picks m non-overlapping patches of every synthetic image, m in {1, ..., K_MSR} (K_MSR = 4 in the paper),
resizes each to the model's input size and optimises it as an independent image with its own label;
the gradient reaches only that region of the original image. The geometry is refq's choice (docs/sardfq.md, S3),
sampled once and kept fixed for the whole run:

    m_b     ~ UniformInt{1, ..., min(K_MSR, grid^2, C - 1)}
    regions: m_b distinct cells of a grid x grid split of the canvas (2 x 2: four H/2 x W/2 cells),
             non-overlapping by construction
    labels:  y_{b,i} distinct from each other and from the image label y_{b,0}

`msr_crops` cuts each region out with an index (a slice of x) and upsamples it with `resize_bilinear`
(align_corners=False, edges replicated), so every output pixel is a combination of pixels of its own
region only and the backward writes nothing outside it. `crop_and_resize` with the region's box is
not used: its half-pixel sample grid reads one pixel row/column beyond the box edges (weight 1/4 at a
2x upsample), which would leak gradient into the neighbouring region.

References: SARDFQ, arXiv:2412.16553, Multi-Semantic Reinforcement; docs/sardfq.md, S3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refq.autograd import Tensor
from refq.autograd import functional as F


@dataclass(frozen=True)
class MSRPlan:
    """R regions: source image, box (x0, y0, x1, y1) in pixel edges, and label, one row per region."""

    batch_index: np.ndarray  # [R] intp
    boxes: np.ndarray  # [R, 4] intp, x0 < x1, y0 < y1
    labels: np.ndarray  # [R] int64

    def __len__(self) -> int:
        return len(self.batch_index)

    def for_images(self, b0: int, b1: int) -> "MSRPlan":
        """The regions of images b0..b1-1, with batch indices shifted to start at 0."""
        keep = (self.batch_index >= b0) & (self.batch_index < b1)  # [R] bool
        return MSRPlan(self.batch_index[keep] - b0, self.boxes[keep], self.labels[keep])


def grid_boxes(height: int, width: int, grid: int = 2) -> np.ndarray:
    """Boxes [grid^2, 4] (x0, y0, x1, y1) of the cells of a grid x grid split, row-major."""
    if height % grid or width % grid:
        raise ValueError(f"grid_boxes: image {height}x{width} is not divisible into a {grid}x{grid} grid")
    ch, cw = height // grid, width // grid
    return np.array([(c * cw, r * ch, (c + 1) * cw, (r + 1) * ch) for r in range(grid) for c in range(grid)],
                    dtype=np.intp)


def sample_msr(image_labels: np.ndarray, k_msr: int, num_classes: int, height: int, width: int,
               rng: np.random.Generator, grid: int = 2) -> MSRPlan:
    """Regions and labels for every image (see the module docstring for the distributions)."""
    if k_msr < 1:
        raise ValueError(f"sample_msr: k_msr={k_msr} must be >= 1")
    m_max = min(k_msr, grid * grid, num_classes - 1)
    if m_max < 1:
        raise ValueError(f"sample_msr: num_classes={num_classes} leaves no label distinct from the image label")
    cells = grid_boxes(height, width, grid)  # [grid^2, 4]
    index, boxes, labels = [], [], []
    for b, y0 in enumerate(np.asarray(image_labels).tolist()):
        m = int(rng.integers(1, m_max + 1))
        chosen = rng.choice(len(cells), size=m, replace=False)  # distinct cells
        others = np.array([c for c in range(num_classes) if c != y0])
        ys = rng.choice(others, size=m, replace=False)  # distinct labels, none equal to y0
        index += [b] * m
        boxes.append(cells[chosen])
        labels.append(ys)
    return MSRPlan(np.asarray(index, np.intp), np.concatenate(boxes).astype(np.intp),
                   np.concatenate(labels).astype(np.int64))


def msr_crops(x, plan: MSRPlan, size: tuple) -> Tensor:
    """Regions of x [B, C, H, W] resized to `size`: [R, C, h, w]; gradients reach only each region's pixels."""
    if len(plan) == 0:
        raise ValueError("msr_crops: the plan has no regions")
    widths, heights = plan.boxes[:, 2] - plan.boxes[:, 0], plan.boxes[:, 3] - plan.boxes[:, 1]
    if np.ptp(widths) or np.ptp(heights):
        raise ValueError(f"msr_crops: regions must share one size, got widths {set(widths.tolist())} "
                         f"and heights {set(heights.tolist())}")
    C = x.shape[1]
    rows = plan.boxes[:, 1, None] + np.arange(heights[0])  # [R, h0]
    cols = plan.boxes[:, 0, None] + np.arange(widths[0])  # [R, w0]
    index = (plan.batch_index[:, None, None, None], np.arange(C)[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :])  # broadcast to [R, C, h0, w0]
    regions = F.getitem(x, index)  # [B, C, H, W] -> [R, C, h0, w0]
    return F.resize_bilinear(regions, size)  # -> [R, C, h, w]
