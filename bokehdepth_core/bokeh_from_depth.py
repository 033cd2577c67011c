"""Bokeh from an image and its metric depth: the depth checked against the image and resized to
it, the focus chosen (:mod:`.focus`), then one frame, a bokeh stack or a focus stack rendered.

Work runs on ``device`` (default: the image's); results come back on the image's device.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import render
from .checks import image_batch, k_table, map_like
from .focus import resolve_focus
from .types import BokehStack, DepthMap, ProgressFn


def depth_for_image(depth, image: torch.Tensor, confidence: Optional[torch.Tensor] = None
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Metric depth (a DepthMap or ``[B,H,W]`` metres) and its confidence, checked, resized to
    ``image [B,H,W,3]`` and broadcast over its batch, on the image's device. A DepthMap brings its
    own confidence unless one is given."""
    if isinstance(depth, DepthMap):
        confidence = depth.confidence if confidence is None else confidence
    d = map_like(depth, image, "depth", resize=True, positive=True)
    c = None if confidence is None else map_like(confidence, image, "confidence", resize=True)
    return d, c


def _inputs(image, depth, device) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(image, metric depth, confidence) on the device that does the work."""
    image = image_batch(image)
    work = image.to(device) if device is not None else image
    return (work, *depth_for_image(depth, work))


def render_from_depth(image: torch.Tensor, depth, k, focus_mode: str = "distance", focus_m: float = 2.0, *,
                      mask: Optional[torch.Tensor] = None, use_confidence: bool = True, device=None,
                      callback: ProgressFn = None, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """One thin-lens bokeh frame: ``(frame [B,H,W,3], focus distance used [B] in m)``. ``options``
    go to :func:`.render.render_bokeh`; the depth's confidence smooths uncertain blur radii."""
    home = image.device
    work, d, conf = _inputs(image, depth, device)
    focus = resolve_focus(d, work, focus_mode, focus_m, mask)
    out = render.render_bokeh(work, 1.0 / d, k, 1.0 / focus, confidence=conf if use_confidence else None,
                              callback=callback, **options)
    return out.to(home), focus.to(home)


def bokeh_stack_from_depth(image: torch.Tensor, depth, k_values, focus_mode: str = "distance",
                           focus_m: float = 2.0, *, mask: Optional[torch.Tensor] = None, device=None,
                           callback: ProgressFn = None, **options) -> BokehStack:
    """One frame per ``K`` at a fixed focus: a BokehStack (source ``render``) with the image as its
    reference and the focus distance and render options in its meta."""
    home = image.device
    work, d, _ = _inputs(image, depth, device)
    focus = resolve_focus(d, work, focus_mode, focus_m, mask)
    ks = k_table(k_values, work.shape[0], name="k_list")
    frames = render.bokeh_stack(work, 1.0 / d, ks, 1.0 / focus, callback=callback, **options)
    return BokehStack(frames=frames.to(home), k_values=ks.cpu(), reference=image_batch(image), source="render",
                      meta={"focus_m": [float(f) for f in focus], "renderer": dict(options)})


def focus_stack_from_depth(image: torch.Tensor, depth, k, frames: int, margin: float = 0.0, *, device=None,
                           callback: ProgressFn = None, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed aperture, ``frames`` focus positions uniform in disparity from far to near, leaving
    ``margin`` of the disparity range out at each end: ``(frames [B,N,H,W,3], focus distances [B,N] m)``."""
    home = image.device
    work, d, _ = _inputs(image, depth, device)
    disparity = 1.0 / d
    fds = render.uniform_focus_disparities(disparity, int(frames), margin)
    out = render.focus_stack(work, disparity, fds, k, callback=callback, **options)
    return out.to(home), (1.0 / fds).to(home)
