"""Checks for data entering the core: images, stacks, depth maps, K values, plain numbers.

Every public entry point of the core validates its arguments here, once, and the engines behind it
trust what they get. Messages name the argument, what was expected, what came, and the fix.
"""

from __future__ import annotations

import math
from typing import Iterable, Union

import torch

Number = Union[int, float]


def number(name: str, value, allowed: str = "> 0", *, minimum: float = 0.0, inclusive: bool = False) -> float:
    """A finite float above ``minimum`` (or equal to it when ``inclusive``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number {allowed}, got {value!r}") from None
    if not math.isfinite(v) or v < minimum or (v == minimum and not inclusive):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return v


def per_item(name: str, value, batch: int, device=None, *, positive: bool = False,
             allow_negative: bool = True) -> torch.Tensor:
    """One number or one per batch item -> finite float32 ``[batch]``."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{name} must be one number or one per batch item ({batch}), got {t.numel()} values")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    if positive and bool((t <= 0).any()):
        raise ValueError(f"{name} must be > 0, got {t.tolist()}")
    if not allow_negative and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0, got {t.tolist()}")
    return t.contiguous()


def k_values(values: Union[Number, Iterable[Number], torch.Tensor, None], name: str = "k_values") -> list[float]:
    """Raw K values (px*m): a non-empty list of finite numbers > 0."""
    if values is None:
        raise ValueError(f"{name}: no K values; give at least one, e.g. '10, 20, 30' (a Bokeh K List node)")
    if isinstance(values, str):
        raise ValueError(f"{name} must be numbers, got the text {values!r}; parse it with optics.parse_k_list")
    if isinstance(values, torch.Tensor):
        values = values.detach().flatten().tolist()
    elif isinstance(values, (int, float)):
        values = [values]
    try:
        ks = [float(k) for k in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}") from None
    if not ks:
        raise ValueError(f"{name} is empty; give at least one K, e.g. '10, 20, 30' (a Bokeh K List node)")
    bad = [k for k in ks if not math.isfinite(k) or k <= 0]
    if bad:
        raise ValueError(f"{name} must be finite numbers > 0 (K is a blur strength in px*m), got {bad}")
    return ks


def _tensor(name: str, t, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor {layout}, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    return t


def image_batch(image, name: str = "image") -> torch.Tensor:
    """An RGB image batch ``[B,H,W,3]`` (or one image ``[H,W,3]``), finite, as float32."""
    layout = "[B,H,W,3] (RGB, channels last, 0..1)"
    image = _tensor(name, image, layout)
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(image.shape)}")
    image = image.float()
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name} contains NaN or infinite values; clean the image (e.g. clamp to 0..1) first")
    return image


def depth_batch(depth, name: str = "depth") -> torch.Tensor:
    """A depth-like map as float32 ``[B,H,W]`` (accepts ``[H,W]``, ``[B,H,W,1]`` or a DepthMap)."""
    from .types import DepthMap

    if isinstance(depth, DepthMap):
        depth = depth.depth
    if not isinstance(depth, torch.Tensor):
        depth = torch.as_tensor(depth)
    depth = _tensor(name, depth, "[B,H,W]")
    if depth.ndim == 2:
        depth = depth.unsqueeze(0)
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 3:
        raise ValueError(f"{name} must be [B,H,W] or [H,W], got shape {tuple(depth.shape)}")
    return depth.float()
