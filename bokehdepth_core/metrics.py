"""Depth metrics (paper Sec. 10) and image metrics (PSNR, SSIM; LPIPS only if installed).

Depth metrics are computed in metric units on a valid mask (finite, > 0 in both maps, inside the
optional mask and depth range), with no scale alignment unless ``align="median"`` is asked for.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .checks import depth_batch, map_like
from .types import DepthMap

DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")


def _depth_pair(pred, gt) -> tuple[torch.Tensor, torch.Tensor]:
    pred, gt = depth_batch(pred, "prediction"), depth_batch(gt, "ground_truth")
    if pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground_truth {tuple(gt.shape)} differ in size: "
                         "resize one to the other first")
    if pred.shape[0] != gt.shape[0]:
        if gt.shape[0] == 1:
            gt = gt.expand_as(pred)
        elif pred.shape[0] == 1:
            pred = pred.expand_as(gt)
        else:
            raise ValueError(f"batch sizes differ: prediction {pred.shape[0]}, ground_truth {gt.shape[0]}")
    return pred, gt.to(pred.device)


def valid_mask(pred: torch.Tensor, gt: torch.Tensor, mask: Optional[torch.Tensor] = None,
               min_depth: float = 1e-3, max_depth: float = float("inf")) -> torch.Tensor:
    """Pixels both maps can be scored on: finite, ground truth inside (min_depth, max_depth), prediction
    > 0, and inside ``mask`` (> 0.5) when given."""
    valid = torch.isfinite(gt) & torch.isfinite(pred) & (gt > min_depth) & (gt < max_depth) & (pred > 0)
    if mask is not None:
        valid = valid & (map_like(mask, valid, "mask") > 0.5)
    return valid


def scored_pixels(pred, gt, mask: Optional[torch.Tensor] = None, align: str = "none", min_depth: float = 1e-3,
                  max_depth: float = float("inf"), min_confidence: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """The (prediction, ground truth) values ``[N]`` (float64) that :func:`depth_metrics` scores, after
    the optional median alignment, and the scales applied."""
    if align not in ("none", "median"):
        raise ValueError(f"align must be 'none' or 'median', got {align!r}")
    confidence = pred.confidence if isinstance(pred, DepthMap) else None
    pred, gt = _depth_pair(pred, gt)
    valid = valid_mask(pred, gt, mask, min_depth, max_depth)
    if min_confidence > 0 and confidence is not None:
        valid = valid & (map_like(confidence, pred, "confidence") >= min_confidence)
    n = int(valid.sum())
    if n == 0:
        raise ValueError("no valid pixel: ground truth and prediction need finite depth > 0 inside the mask")
    scales = []
    if align == "median":
        pred = pred.clone()
        for i in range(pred.shape[0]):
            v = valid[i]
            s = (gt[i][v].median() / pred[i][v].median()) if bool(v.any()) else torch.tensor(1.0)
            pred[i] = pred[i] * s
            scales.append(float(s))
    return pred[valid].double(), gt[valid].double(), scales


def depth_metrics(pred, gt, mask: Optional[torch.Tensor] = None, align: str = "none", min_depth: float = 1e-3,
                  max_depth: float = float("inf"), min_confidence: float = 0.0) -> dict:
    """AbsRel, SqRel, RMSE, RMSE-log, delta1/2/3 over all valid pixels of the batch.

    ``pred``/``gt``: ``[B,H,W]`` metres or DepthMaps. ``align``: "none" (metric, default) or "median"
    (scale each prediction by median(gt)/median(pred) on its valid pixels). ``min_confidence`` > 0
    scores only pixels where a DepthMap prediction's confidence reaches it. Returns floats plus
    ``valid_pixels`` and the ``scale`` applied.
    """
    p, g, scales = scored_pixels(pred, gt, mask, align, min_depth, max_depth, min_confidence)
    n = int(p.numel())
    ratio = torch.maximum(p / g, g / p)
    out = {
        "abs_rel": float(((p - g).abs() / g).mean()),
        "sq_rel": float(((p - g) ** 2 / g).mean()),
        "rmse": float(torch.sqrt(((p - g) ** 2).mean())),
        "rmse_log": float(torch.sqrt(((p.log() - g.log()) ** 2).mean())),
        "delta1": float((ratio < 1.25).double().mean()),
        "delta2": float((ratio < 1.25 ** 2).double().mean()),
        "delta3": float((ratio < 1.25 ** 3).double().mean()),
        "valid_pixels": n,
        "align": align,
    }
    if scales:
        out["scale"] = scales
    return out


def format_depth_metrics(m: dict) -> str:
    head = "  ".join(f"{k}={m[k]:.4f}" for k in DEPTH_KEYS)
    extra = f" (median-scaled x{', '.join(f'{s:.3f}' for s in m['scale'])})" if m.get("scale") else ""
    return f"{head}  on {m['valid_pixels']} px{extra}"


# --------------------------------------------------------------------------- images

def _image_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.float(), b.float().to(a.device)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB over all pixels (``inf`` for identical images)."""
    a, b = _image_pair(a, b)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-ax * ax / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03), per channel,
    over the valid (unpadded) window positions. Images ``[B,H,W,C]`` or ``[H,W,C]``."""
    a, b = _image_pair(a, b)
    if a.ndim == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if min(a.shape[1:3]) < window:
        raise ValueError(f"images must be at least {window}x{window} for SSIM, got {tuple(a.shape[1:3])}")
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    c = x.shape[1]
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    gx, gy = g.view(1, 1, 1, -1).expand(c, 1, 1, -1), g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    blur = lambda t: F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)  # noqa: E731 - separable Gaussian
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def lpips(a: torch.Tensor, b: torch.Tensor, net: str = "alex") -> float:
    """LPIPS through the optional ``lpips`` package (its weights must already be on this machine)."""
    try:
        import lpips as _lpips  # optional extra; never installed or downloaded by this package
    except ImportError:
        raise ValueError("LPIPS needs the optional 'lpips' package: pip install lpips") from None
    a, b = _image_pair(a, b)
    model = _lpips.LPIPS(net=net, verbose=False).to(a.device)
    with torch.no_grad():
        d = model(a.permute(0, 3, 1, 2) * 2 - 1, b.permute(0, 3, 1, 2) * 2 - 1)
    return float(d.mean())


def image_metrics(a: torch.Tensor, b: torch.Tensor) -> dict:
    return {"psnr": psnr(a, b), "ssim": ssim(a, b)}
