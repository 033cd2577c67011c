"""Where the lens focuses: the focus distance given, from a subject mask, or from the sharp
image's edges (paper Sec. 8.3), per batch item."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .checks import depth_batch, image_batch, map_like, number
from .color import luma

FOCUS_MODES = ("distance", "auto (median)", "auto (edges)")


def focus_from_mask(depth: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Focus distance per batch item: median depth over a (salient / foreground) mask. ``[B]``."""
    depth = depth_batch(depth)
    if mask is None:
        mask = torch.ones_like(depth, dtype=torch.bool)
    mask = mask.reshape(depth.shape).bool() & torch.isfinite(depth) & (depth > 0)
    out = []
    for d, m in zip(depth, mask):
        if not bool(m.any()):
            raise ValueError("mask selects no valid depth pixel: cannot estimate the focus distance")
        out.append(d[m].median())
    return torch.stack(out)


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(values)
    v, w = values[order], weights[order]
    cdf = torch.cumsum(w, 0)
    idx = torch.searchsorted(cdf, cdf[-1] * 0.5)
    return v[idx.clamp(max=v.numel() - 1)]


def _gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luma ``[B,H,W]`` of ``image [B,H,W,3]``."""
    lum = luma(image).unsqueeze(1)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=lum.dtype, device=lum.device)
    padded = F.pad(lum, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kx.view(1, 1, 3, 3))
    gy = F.conv2d(padded, kx.t().reshape(1, 1, 3, 3))
    return torch.sqrt(gx * gx + gy * gy)[:, 0]


def focus_from_edges(depth: torch.Tensor, image: torch.Tensor, edge_quantile: float = 0.9) -> torch.Tensor:
    """Focus distance from the sharp image's high-frequency edges (Sec. 8.3, Aperture recipe):
    the gradient-magnitude-weighted median of depth over pixels whose gradient is in the top
    ``1 - edge_quantile``. ``depth [B,H,W]``, ``image [B,H,W,3]`` of the same size. Returns ``[B]``."""
    depth = depth_batch(depth)
    image = image_batch(image)
    if tuple(image.shape[:3]) != tuple(depth.shape):
        raise ValueError(f"image {tuple(image.shape)} and depth {tuple(depth.shape)} must share [B,H,W]")
    out = []
    for d, g in zip(depth, _gradient_magnitude(image)):
        valid = torch.isfinite(d) & (d > 0)
        if not bool(valid.any()):
            raise ValueError("depth has no valid pixel: cannot estimate the focus distance")
        gv = g[valid]
        thr = torch.quantile(gv, edge_quantile) if gv.numel() > 1 else gv.min()
        keep = valid & (g >= thr) & (g > 0)
        if not bool(keep.any()):  # textureless image: fall back to the plain median
            out.append(d[valid].median())
            continue
        out.append(_weighted_median(d[keep], g[keep]))
    return torch.stack(out)


def resolve_focus(depth: torch.Tensor, image: Optional[torch.Tensor], mode: str = "distance",
                  focus_m: float = 2.0, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Focus distance (m) per batch item of ``depth [B,H,W]``: the given ``focus_m``, the median
    depth (under ``mask``, resized to the depth, if given), or the image-edge-weighted median depth
    (:func:`focus_from_edges`). ``[B]`` on the depth's device."""
    if mode == "distance":
        f = number("focus_distance_m", focus_m, "> 0 m in 'distance' mode")
        return torch.full((depth.shape[0],), f, device=depth.device)
    if mode == "auto (median)":
        if mask is not None:
            mask = map_like(mask.float(), depth, "focus_mask", resize=True) > 0.5
        return focus_from_mask(depth, mask)
    if mode == "auto (edges)":
        if image is None:
            raise ValueError("focus mode 'auto (edges)' needs the image")
        return focus_from_edges(depth, image)
    raise ValueError(f"focus mode must be one of {', '.join(FOCUS_MODES)}; got {mode!r}")
