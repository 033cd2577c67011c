"""Depth previews: the depth range shown, depth -> 0..1, colourised images and one-line summaries.

Invalid depth is anything not finite or ``<= 0``; it never sets a range and gets its own colour.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..checks import depth_batch
from ..types import DepthMap
from .colormaps import apply_colormap

RANGE_MODES = ("percentile", "minmax", "fixed")


def valid_mask(depth: torch.Tensor) -> torch.Tensor:
    """True where depth is usable: finite and > 0."""
    return torch.isfinite(depth) & (depth > 0)


def _sample_quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    # torch.quantile refuses large inputs; a strided subsample of ~256k values is plenty for a preview.
    step = max(1, values.numel() // 262_144)
    v = values[::step].sort().values
    n = v.numel()
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        out.append(float(v[lo] + (v[hi] - v[lo]) * (pos - lo)))
    return out


def depth_range(depth, mode: str = "percentile", near: Optional[float] = None, far: Optional[float] = None,
                percentiles: tuple[float, float] = (2.0, 98.0)) -> list[tuple[float, float]]:
    """(near, far) in metres per batch item for ``mode`` percentile | minmax | fixed."""
    d = depth_batch(depth)
    if mode not in RANGE_MODES:
        raise ValueError(f"mode must be one of {', '.join(RANGE_MODES)}, got {mode!r}")
    if mode == "fixed":
        if near is None or far is None or not (0 < near < far) or not math.isfinite(far):
            raise ValueError(f"fixed range needs 0 < near < far (metres), got near={near}, far={far}")
        return [(float(near), float(far))] * d.shape[0]
    lo_q, hi_q = percentiles
    if not (0 <= lo_q < hi_q <= 100):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    out = []
    for item in d:
        vals = item[valid_mask(item)]
        if vals.numel() == 0:
            out.append((1.0, 2.0))  # nothing valid: any range, every pixel gets invalid_color
            continue
        if mode == "minmax":
            lo, hi = float(vals.min()), float(vals.max())
        else:
            lo, hi = _sample_quantiles(vals, (lo_q / 100.0, hi_q / 100.0))
        if hi <= lo:  # flat depth: widen a little so the division stays finite
            hi = lo * (1 + 1e-6) + 1e-9
        out.append((lo, hi))
    return out


def normalize_depth(depth, near: float, far: float, inverse: bool = True) -> torch.Tensor:
    """Depth -> 0..1 with ``near`` -> 1 and ``far`` -> 0, linear in 1/depth (``inverse``) or depth."""
    d = depth_batch(depth)
    if inverse:
        t = (1.0 / d - 1.0 / far) / (1.0 / near - 1.0 / far)
    else:
        t = (far - d) / (far - near)
    return t.clamp(0.0, 1.0)


def colorize(depth, cmap: str = "Spectral", mode: str = "percentile", near: Optional[float] = None,
             far: Optional[float] = None, inverse: bool = True,
             invalid_color: Sequence[float] = (0.0, 0.0, 0.0),
             percentiles: tuple[float, float] = (2.0, 98.0),
             ranges: Optional[Sequence[tuple[float, float]]] = None) -> torch.Tensor:
    """Metric depth ``[B,H,W]`` / ``[H,W]`` (or a DepthMap) -> ``[B,H,W,3]`` float32 in 0..1.

    Near objects get the colormap's warm/bright end. The range is per image: the 2nd..98th
    percentile of valid depth, its min..max, or a fixed ``near``..``far`` in metres; or ``ranges``,
    one ``(near, far)`` per image as ``depth_range`` returns them. Invalid pixels (NaN, inf, <= 0)
    get ``invalid_color``.
    """
    d = depth_batch(depth)
    if len(invalid_color) != 3:
        raise ValueError(f"invalid_color must be an RGB triple in 0..1, got {invalid_color!r}")
    if ranges is None:
        ranges = depth_range(d, mode, near, far, percentiles)
    elif len(ranges) != d.shape[0]:
        raise ValueError(f"ranges must give one (near, far) per image ({d.shape[0]}), got {len(ranges)}")
    out = torch.empty(*d.shape, 3, dtype=torch.float32, device=d.device)
    bad = torch.tensor([float(c) for c in invalid_color], dtype=torch.float32, device=d.device)
    for i, (lo, hi) in enumerate(ranges):
        ok = valid_mask(d[i])
        safe = torch.where(ok, d[i], torch.full_like(d[i], lo))
        rgb = apply_colormap(normalize_depth(safe, lo, hi, inverse)[0], cmap)
        out[i] = torch.where(ok.unsqueeze(-1), rgb, bad)
    return out


def describe(dm: DepthMap) -> str:
    """One-line human summary: size, valid fraction and range in metres."""
    d = dm.depth
    ok = valid_mask(d)
    b, h, w = d.shape
    if not ok.any():
        return f"{b}x{w}x{h} depth, no valid pixels"
    v = d[ok]
    return (f"{b} x {w}x{h} depth, {100.0 * ok.float().mean().item():.1f}% valid, "
            f"{v.min().item():.3g}..{v.max().item():.3g} m (median {v.median().item():.3g} m)")
