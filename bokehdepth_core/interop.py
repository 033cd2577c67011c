"""Depth in and out as other tools pass it around: linear metres in a plain image or mask (for
EXR savers), a ControlNet-style depth image, and the geometry dicts of ComfyUI's own depth nodes.

Geometry dict layouts (as ComfyUI documents them in its MoGe and Depth Anything 3 nodes):

* ``MOGE_GEOMETRY``: ``depth`` [B,H,W] (metres for MoGe-2, +inf where masked), ``points`` [B,H,W,3]
  (OpenCV axes), ``mask`` [B,H,W] bool, ``intrinsics`` [B,3,3] **normalised** (fx divided by the
  width, fy and cy by the height, cx by the width; absent for panoramas), ``normal``, ``image``.
* ``DA3_GEOMETRY``: ``depth`` [B,H,W] (metres for the Metric variant, relative otherwise),
  ``image``, ``mode`` ("mono" / "multiview"), optional ``sky`` [B,H,W] probability, ``confidence``
  [B,H,W] (raw), and in multiview ``intrinsics`` [1,S,3,3] **in pixels** with pixel centres at integer
  coordinates, ``extrinsics`` [1,S,3,4].

Our intrinsics are pixels with pixel centres at ``u + 0.5`` (see :mod:`.camera`), so DA3's principal
point moves by half a pixel and MoGe's is scaled by the image size.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from .checks import depth_batch, number
from .depth_io import colorize, valid_mask
from .types import DepthMap

SKY_MODES = ("keep", "invalid")


def depth_as_image(depth, invalid: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear depth in metres as an IMAGE ``[B,H,W,3]`` (the same value in R, G, B) and a MASK
    ``[B,H,W]``, unclamped (values above 1 are metres, for float savers such as EXR); invalid pixels
    (NaN, inf, <= 0) become ``invalid``."""
    d = depth_batch(depth).float()
    d = torch.where(valid_mask(d), d, torch.full_like(d, float(invalid)))
    return d.unsqueeze(-1).expand(*d.shape, 3).contiguous(), d.contiguous()


def controlnet_image(depth, mode: str = "minmax") -> torch.Tensor:
    """A ControlNet-ready depth IMAGE ``[B,H,W,3]``: inverse depth normalised per image (``minmax`` as
    MiDaS-style maps are made, or the robust ``percentile`` 2..98), near = white, far and invalid = black."""
    return colorize(depth, cmap="gray", mode=mode, inverse=True)


def depth_from_moge(geometry: Mapping, scale: float = 1.0) -> DepthMap:
    """A DepthMap from ComfyUI's ``MOGE_GEOMETRY`` dict (see the module doc). Masked pixels stay
    invalid (+inf) and the mask becomes the confidence; perspective geometry keeps MoGe's own points
    and its camera in pixels, a panorama keeps its radial distance with no camera."""
    depth = _depth_of(geometry, "MOGE_GEOMETRY") * float(number("scale", scale, "> 0"))
    b = depth.shape[0]
    h, w = depth.shape[-2:]
    meta = {"source": "MoGe", "scale": float(scale)}
    conf = _batch_field(geometry, "mask", depth)
    conf = None if conf is None else conf.float()
    intr = points = None
    if geometry.get("intrinsics") is not None:
        k = torch.as_tensor(geometry["intrinsics"]).detach().float().cpu().reshape(-1, 3, 3)
        intr = (torch.diag(torch.tensor([float(w), float(h), 1.0])) @ k).expand(b, 3, 3).contiguous()
        if geometry.get("points") is not None and tuple(geometry["points"].shape) == (*depth.shape, 3):
            points = torch.as_tensor(geometry["points"]).detach().float().cpu() * float(scale)
    else:
        meta["projection"] = "equirectangular (no pinhole camera)"
    return DepthMap(depth=depth, confidence=conf, intrinsics=intr, points=points, meta=meta)


def depth_from_da3(geometry: Mapping, scale: float = 1.0, sky: str = "keep") -> DepthMap:
    """A DepthMap from ComfyUI's ``DA3_GEOMETRY`` dict (see the module doc). ``scale`` turns relative
    depth into metres (1 for the Metric variant); ``sky`` "invalid" drops pixels whose sky probability
    is >= 0.5. Multiview intrinsics come along (shifted to our pixel centres); the raw confidence too."""
    if sky not in SKY_MODES:
        raise ValueError(f"sky must be one of {', '.join(SKY_MODES)}, got {sky!r}")
    depth = _depth_of(geometry, "DA3_GEOMETRY") * float(number("scale", scale, "> 0"))
    meta = {"source": f"Depth Anything 3 ({geometry.get('mode', 'mono')})", "scale": float(scale)}
    sky_p = _batch_field(geometry, "sky", depth)
    if sky == "invalid" and sky_p is not None:
        depth = torch.where(sky_p >= 0.5, torch.full_like(depth, float("inf")), depth)
    conf = _batch_field(geometry, "confidence", depth)
    intr = None
    if geometry.get("intrinsics") is not None:
        k = torch.as_tensor(geometry["intrinsics"]).detach().float().cpu().reshape(-1, 3, 3).clone()
        if k.shape[0] == depth.shape[0] and bool((k[:, 0, 0] > 0).all()):
            k[:, 0, 2] += 0.5
            k[:, 1, 2] += 0.5
            intr = k
    return DepthMap(depth=depth, confidence=None if conf is None else conf.float(), intrinsics=intr, meta=meta)


def _depth_of(geometry: Mapping, kind: str) -> torch.Tensor:
    if not isinstance(geometry, Mapping) or geometry.get("depth") is None:
        raise ValueError(f"{kind}: expected the geometry dict of ComfyUI's node with a 'depth' entry, got "
                         f"{type(geometry).__name__}" + (f" with keys {sorted(geometry)}"
                                                         if isinstance(geometry, Mapping) else ""))
    return depth_batch(torch.as_tensor(geometry["depth"]).detach().float().cpu(), f"{kind} depth").clone()


def _batch_field(geometry: Mapping, key: str, depth: torch.Tensor) -> Optional[torch.Tensor]:
    value = geometry.get(key)
    if value is None:
        return None
    value = torch.as_tensor(value).detach().cpu()
    if tuple(value.shape) != tuple(depth.shape):
        raise ValueError(f"geometry '{key}' has shape {tuple(value.shape)}, expected the depth's {tuple(depth.shape)}")
    return value
