"""A depth-evaluation picture drawn with Pillow: predicted against ground-truth depth (one dot per
scored pixel, the y = x line for reference) and the mean relative error per ground-truth depth bin."""

from __future__ import annotations

from typing import Optional

import torch
from PIL import Image, ImageDraw

from .labels import font, from_pil
from .metrics import scored_pixels

_BG, _FG, _GRID, _DOT, _BAR, _IDEAL = (24, 24, 28), (230, 230, 230), (70, 70, 80), (90, 170, 255), (255, 150, 60), \
    (120, 220, 120)


def _axes(draw: ImageDraw.ImageDraw, box, x_label: str, y_label: str, f) -> None:
    x0, y0, x1, y1 = box
    for i in range(5):
        gx = x0 + (x1 - x0) * i / 4
        gy = y0 + (y1 - y0) * i / 4
        draw.line((gx, y0, gx, y1), fill=_GRID)
        draw.line((x0, gy, x1, gy), fill=_GRID)
    draw.rectangle(box, outline=_FG)
    draw.text(((x0 + x1) / 2, y1 + f.size * 1.6), x_label, font=f, fill=_FG, anchor="mt")
    draw.text((x0, y0 - f.size * 0.4), y_label, font=f, fill=_FG, anchor="lb")


def _ticks(draw, box, lo: float, hi: float, f, axis: str) -> None:
    x0, y0, x1, y1 = box
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        if axis == "x":
            draw.text((x0 + (x1 - x0) * i / 4, y1 + 4), f"{v:.3g}", font=f, fill=_FG, anchor="mt")
        else:
            draw.text((x0 - 4, y1 - (y1 - y0) * i / 4), f"{v:.3g}", font=f, fill=_FG, anchor="rm")


def depth_error_plot(pred, gt, mask: Optional[torch.Tensor] = None, align: str = "none",
                     max_depth: float = float("inf"), min_confidence: float = 0.0, bins: int = 8,
                     size: tuple[int, int] = (960, 440), max_dots: int = 20000) -> torch.Tensor:
    """IMAGE ``[1,H,W,3]``: left, predicted vs ground-truth depth in metres (pixels as
    :func:`~bokehdepth_core.metrics.depth_metrics` scores them); right, AbsRel per ground-truth depth
    bin (``bins`` equal bins over the ground-truth range) with the pixel count of each bin."""
    p, g, _ = scored_pixels(pred, gt, mask, align, max_depth=max_depth, min_confidence=min_confidence)
    w, h = (int(v) for v in size)
    img = Image.new("RGB", (w, h), _BG)
    draw = ImageDraw.Draw(img)
    f = font(h / 30)
    margin = int(f.size * 4)
    half = w // 2
    left = (margin, margin, half - margin // 2, h - margin)
    right = (half + margin, margin, w - margin // 2, h - margin)

    lo, hi = 0.0, float(torch.quantile(torch.cat([p, g])[:1_000_000].float(), 0.99)) * 1.05 or 1.0
    _axes(draw, left, "ground truth (m)", "predicted (m)", f)
    _ticks(draw, left, lo, hi, f, "x")
    _ticks(draw, left, lo, hi, f, "y")
    draw.line((left[0], left[3], left[2], left[1]), fill=_IDEAL, width=2)
    step = max(1, p.numel() // max_dots)
    sx = (left[2] - left[0]) / (hi - lo)
    sy = (left[3] - left[1]) / (hi - lo)
    for pv, gv in zip(p[::step].tolist(), g[::step].tolist()):
        if pv <= hi and gv <= hi:
            x, y = left[0] + (gv - lo) * sx, left[3] - (pv - lo) * sy
            draw.point((x, y), fill=_DOT)

    edges = torch.linspace(float(g.min()), float(g.max()) + 1e-9, int(bins) + 1, dtype=torch.float64)
    which = torch.bucketize(g, edges[1:-1])
    rel = (p - g).abs() / g
    errs = [(float(rel[which == i].mean()) if bool((which == i).any()) else 0.0, int((which == i).sum()))
            for i in range(int(bins))]
    top = max(e for e, _ in errs) * 1.15 or 1.0
    _axes(draw, right, "ground truth depth bin (m)", "AbsRel per bin", f)
    _ticks(draw, right, 0.0, top, f, "y")
    bw = (right[2] - right[0]) / int(bins)
    for i, (err, count) in enumerate(errs):
        bx0 = right[0] + i * bw + bw * 0.12
        bx1 = right[0] + (i + 1) * bw - bw * 0.12
        by = right[3] - (right[3] - right[1]) * err / top
        if count:
            draw.rectangle((bx0, by, bx1, right[3]), fill=_BAR)
        draw.text(((bx0 + bx1) / 2, by - 2), f"n={count}", font=font(h / 45), fill=_FG, anchor="mb")
        draw.text(((bx0 + bx1) / 2, right[3] + 4), f"{float(edges[i]):.3g}", font=font(h / 45), fill=_FG,
                  anchor="mt")
    return from_pil(img).unsqueeze(0)
