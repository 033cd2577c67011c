"""UniDepthV2's input geometry: pad into an aspect range, resize to a pixel budget (sides multiples
of 14), map intrinsics into the network input and outputs back.

Follows UniDepthV2's ``infer`` so the released weights see what they were evaluated with, including
its convention of scaling intrinsics by the nominal resize factor (not the per-axis one after
rounding to multiples of 14).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

def get_paddings(shape: Sequence[int], ratio_bounds: Sequence[float]):
    """Padding ``(left, right, top, bottom)`` and padded ``(H, W)`` that bring ``W/H`` into the
    aspect range (UniDepthV2's rule: pad the short dimension, split evenly, floor on the left/top)."""
    h, w = int(shape[0]), int(shape[1])
    aspect = w / h
    lo, hi = ratio_bounds
    target = min(hi, max(lo, aspect))
    if aspect > target:  # too wide: pad height
        h_new = int(w / target)
        top = (h_new - h) // 2
        return (0, 0, top, h_new - h - top), (h_new, w)
    w_new = int(h * target)
    left = (w_new - w) // 2
    return (left, w_new - w - left, 0, 0), (h, w_new)


def pixel_bounds(resolution_level: Optional[int], pixels_min: float, pixels_max: float) -> tuple[float, float]:
    """Pixel-count bounds; ``resolution_level`` 0..9 picks one tenth of the range (9 = finest)."""
    if resolution_level is None:
        return float(pixels_min), float(pixels_max)
    if isinstance(resolution_level, bool) or not isinstance(resolution_level, (int,)) or not 0 <= resolution_level < 10:
        raise ValueError("resolution_level must be an integer 0..9 (or None for the full range), "
                         f"got {resolution_level!r}")
    step = (pixels_max - pixels_min) / 10
    return resolution_level * step + pixels_min, (resolution_level + 1) * step + pixels_min


def get_resize_factor(shape: Sequence[int], bounds: Sequence[float], multiple: int = 14):
    """Nominal resize factor into the pixel bounds and the network size (sides rounded up to ``multiple``)."""
    h, w = int(shape[0]), int(shape[1])
    n = h * w
    target = min(bounds[1], max(bounds[0], n))
    factor = (target / n) ** 0.5
    nh = math.ceil(int(h * factor) / multiple) * multiple
    nw = math.ceil(int(w * factor) / multiple) * multiple
    return factor, (max(nh, multiple), max(nw, multiple))


def camera_to_network(k: torch.Tensor, paddings, factor: float) -> torch.Tensor:
    """Intrinsics of the padded, resized network input (principal point shifted by the padding,
    the first two rows scaled by the factor)."""
    left, _, top, _ = paddings
    k = k.clone()
    k[:, 0, 2] += left
    k[:, 1, 2] += top
    k[:, :2, :] *= factor
    return k


def intrinsics_from_network(k: torch.Tensor, paddings, factor: float) -> torch.Tensor:
    """Inverse of :func:`camera_to_network` for fx, fy, cx, cy (UniDepthV2's post-processing)."""
    left, _, top, _ = paddings
    k = k.clone()
    for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)):
        k[:, i, j] = k[:, i, j] / factor
    k[:, 0, 2] -= left
    k[:, 1, 2] -= top
    return k


def unpad_resize(t: torch.Tensor, padded_shape, paddings, mode: str = "bilinear") -> torch.Tensor:
    """``[B,C,h,w]`` network output -> padded size (bilinear, align_corners=False) -> padding removed."""
    t = F.interpolate(t, size=tuple(padded_shape), mode=mode, align_corners=False)
    left, right, top, bottom = paddings
    return t[..., top:padded_shape[0] - bottom, left:padded_shape[1] - right]
