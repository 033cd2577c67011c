"""Plain values that encode depth -> metres: the mappings for depth images and arrays from elsewhere.

A value becomes metres by ``metric`` (value x scale) or, normalised to 0..1, by ``disparity``
(1 = near, even in 1/depth), ``depth`` (0 = near, even in metres) or ``depth_inverted`` (1 = near,
even in metres) between ``near`` and ``far`` metres.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..checks import pixels
from ..color import luma

LOAD_MODES = ("auto", "metric", "disparity", "depth", "depth_inverted")
CHANNELS = ("auto", "luminance", "r", "g", "b")
IMAGE_CHANNELS = CHANNELS[1:]


def values_to_depth(values, mode: str, near: Optional[float] = None, far: Optional[float] = None,
                    scale: float = 1.0) -> torch.Tensor:
    """Map plain values to metres.

    metric: ``value * scale`` (scale = metres per unit, e.g. 0.001 for millimetre PNGs);
    disparity: 0..1, 1 = near, linear in 1/depth between ``far`` and ``near``;
    depth: 0..1, 0 = near, linear in depth; depth_inverted: 0..1, 1 = near, linear in depth.
    """
    v = torch.as_tensor(values).float()
    if mode == "metric":
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be > 0 (metres per stored unit), got {scale}")
        return v * float(scale)
    if mode not in ("disparity", "depth", "depth_inverted"):
        raise ValueError(f"mode must be one of {', '.join(LOAD_MODES[1:])}, got {mode!r}")
    if near is None or far is None or not (0 < near < far and math.isfinite(far)):
        raise ValueError(f"mode {mode!r} needs 0 < near < far in metres, got near={near}, far={far}")
    v = v.clamp(0.0, 1.0)
    if mode == "disparity":
        return 1.0 / (1.0 / far + v * (1.0 / near - 1.0 / far))
    if mode == "depth":
        return near + v * (far - near)
    return far - v * (far - near)


def pick_channel(values, channel: str = "auto", name: str = "image"):
    """The depth values of an image array ``[..., C]`` (torch or numpy). Single-channel images give
    their channel; RGB(A) gives ``r``, ``g``, ``b``, the ``luminance`` (Rec. 601 luma), or with
    ``auto`` the value of a grey image (a coloured one is refused: a colormap cannot be inverted)."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be auto, r, g, b or luminance, got {channel!r}")
    if values.shape[-1] < 3:
        return values[..., 0]
    rgb = values[..., :3]
    if channel in ("r", "g", "b"):
        return rgb[..., "rgb".index(channel)]
    if channel == "luminance":
        return luma(rgb)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]
    raise ValueError(f"{name}: the image is coloured (R, G, B differ), probably a colourised preview; a colormap "
                     "cannot be inverted reliably. Load the lossless depth file (.npy/.png16/.tif) instead, or "
                     "pick channel='r'/'g'/'b'/'luminance' if the depth really is stored that way.")


def image_to_depth(image: torch.Tensor, mode: str, near: Optional[float] = None, far: Optional[float] = None,
                   scale: float = 1.0, channel: str = "luminance", value_range: str = "full") -> torch.Tensor:
    """An image that encodes depth (``[B,H,W,C]``, values 0..1) -> metres ``[B,H,W]``.

    ``channel`` picks the values (:func:`pick_channel`); ``value_range`` "minmax" stretches each
    image's own min..max to 0..1 first; then :func:`values_to_depth` with ``mode``, ``near``,
    ``far`` and ``scale``.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] < 1:
        raise ValueError(f"image must be an IMAGE [B,H,W,C], got {tuple(getattr(image, 'shape', ()))}")
    if value_range not in ("full", "minmax"):
        raise ValueError(f"value_range must be 'full' or 'minmax', got {value_range!r}")
    v = pick_channel(pixels("image", image), channel)
    if value_range == "minmax":
        lo = v.amin(dim=(1, 2), keepdim=True)
        hi = v.amax(dim=(1, 2), keepdim=True)
        v = (v - lo) / (hi - lo).clamp_min(1e-12)
    return values_to_depth(v, mode, near=near, far=far, scale=scale)
