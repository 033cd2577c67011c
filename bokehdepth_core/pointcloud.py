"""3-D points from metric depth and pinhole intrinsics, and coloured point-cloud files (GLB / PLY
through :mod:`.mesh_files`).

Camera coordinates are OpenCV's (x right, y down, z forward, metres); pixel ``(u, v)`` has its
centre at ``(u + 0.5, v + 0.5)``, the convention of UniDepthV2's rays, so points computed here
from its depth and intrinsics match its own point output. ``"opengl"`` flips y and z (y up,
camera looking down -z), which is what Blender, MeshLab and three.js viewers show upright.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional

import numpy as np
import torch

from . import mesh_files
from .camera import check_camera, pixel_grid
from .checks import depth_batch, image_batch
from .types import DepthMap, ProgressFn

__all__ = ["depth_to_points", "points_for", "unit_confidence", "check_grid", "point_cloud", "views", "write_point_clouds", "COORDINATES"]

COORDINATES = ("opencv", "opengl")


def depth_to_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """depth ``[B,H,W]`` (z, metres) + intrinsics ``[B,3,3]`` -> points ``[B,H,W,3]``: ``z * K^-1 (u+.5, v+.5, 1)``."""
    depth = depth_batch(depth)
    b, h, w = depth.shape
    k = check_camera(intrinsics, b, name="intrinsics").to(depth.device)
    pix = pixel_grid(1, h, w, depth.device)[0].reshape(3, -1).T  # [HW,3], same pixel centres as Stage-2
    rays = pix @ torch.linalg.inv(k).transpose(1, 2)  # [B,HW,3], z = 1
    return rays.reshape(b, h, w, 3) * depth.unsqueeze(-1)


def points_for(depth: DepthMap, camera: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, str]:
    """Camera-space points ``[B,H,W,3]`` (CPU) of a DepthMap and how they were found: unprojected with
    ``camera`` when given, else the model's own points, else unprojected with its predicted camera."""
    d = depth_batch(depth).cpu()
    if camera is not None:
        return depth_to_points(d, torch.as_tensor(camera).float().cpu()), "connected camera"
    if depth.points is not None:
        return depth.points.float().cpu(), "model's own 3-D points"
    if depth.intrinsics is not None:
        return depth_to_points(d, depth.intrinsics.float().cpu()), "predicted camera"
    raise ValueError("camera: this depth has no intrinsics (only UniDepthV2 predicts them); connect a "
                     "'Camera Intrinsics' node")


def unit_confidence(depth: DepthMap) -> Optional[torch.Tensor]:
    """The depth's confidence scaled to 0..1 per image (float32 ``[B,H,W]``), or None."""
    if depth.confidence is None:
        return None
    conf = depth.confidence.float()
    return conf / conf.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


def check_grid(points: torch.Tensor, stride: int, coordinates: str) -> None:
    """The options every export of one view's ``[H,W,3]`` points shares."""
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [H,W,3], got shape {tuple(points.shape)}")
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")


def point_cloud(points: torch.Tensor, colors: Optional[torch.Tensor] = None, confidence: Optional[torch.Tensor] = None,
                stride: int = 1, max_depth: float = 0.0, min_confidence: float = 0.0,
                coordinates: str = "opencv") -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """One view's points ``[H,W,3]`` (+ colours ``[H,W,3]`` 0..1, confidence ``[H,W]``) -> flat
    float32 ``[M,3]``, uint8 colours ``[M,3]`` and confidence ``[M]``, keeping finite points with
    z > 0, every ``stride``-th pixel, z <= ``max_depth`` (0 = no limit) and confidence >=
    ``min_confidence``."""
    check_grid(points, stride, coordinates)
    h, w, _ = points.shape
    s = int(stride)
    pts = points[::s, ::s].float().cpu()
    keep = torch.isfinite(pts).all(-1) & (pts[..., 2] > 0)
    if max_depth and max_depth > 0:
        keep &= pts[..., 2] <= max_depth
    conf = None
    if confidence is not None:
        if tuple(confidence.shape) != (h, w):
            raise ValueError(f"confidence must be [H,W] = [{h},{w}], got {tuple(confidence.shape)}")
        conf = confidence[::s, ::s].float().cpu()
        if min_confidence and min_confidence > 0:
            keep &= conf >= min_confidence
    col = None
    if colors is not None:
        if colors.ndim != 3 or colors.shape[-1] != 3:
            raise ValueError(f"colors must be [H,W,3], got shape {tuple(colors.shape)}")
        if tuple(colors.shape[:2]) != (h, w):
            colors = torch.nn.functional.interpolate(colors.permute(2, 0, 1)[None].float(), size=(h, w),
                                                     mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
        col = (colors[::s, ::s].float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)[keep].numpy()
    xyz = pts[keep]
    if coordinates == "opengl":
        xyz = xyz * torch.tensor([1.0, -1.0, -1.0])
    return (xyz.numpy().astype(np.float32), col, None if conf is None else conf[keep].numpy().astype(np.float32))


def views(depth: DepthMap, colors: torch.Tensor, camera: Optional[torch.Tensor], count: int
          ) -> Iterator[tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], str]]:
    """Per batch item of ``depth``: its points ``[H,W,3]`` (:func:`points_for`), colours ``[H,W,3]``
    (``colors`` is ``[B,H,W,3]`` or one image for all), confidence ``[H,W]`` in 0..1 or None, and how
    the points were found; ``count`` (the number of files to write) must match the batch."""
    points, how = points_for(depth, camera)
    b = points.shape[0]
    colors = image_batch(colors, "image")
    if colors.shape[0] not in (1, b) or count != b:
        raise ValueError(f"image batch {colors.shape[0]} (and {count} paths) must match the depth batch {b}")
    conf = unit_confidence(depth)
    for i in range(b):
        yield points[i], colors[min(i, colors.shape[0] - 1)], None if conf is None else conf[i].cpu(), how


def write_point_clouds(paths: list, depth: DepthMap, colors: torch.Tensor, camera: Optional[torch.Tensor] = None, *,
                       stride: int = 1, max_depth: float = 0.0, min_confidence: float = 0.0,
                       coordinates: str = "opencv", callback: ProgressFn = None) -> list[str]:
    """One point cloud per batch item of ``depth`` (see :func:`views`, :func:`point_cloud`), GLB or PLY
    by each path's extension; the confidence becomes a PLY vertex property. Returns ``paths``."""
    for i, (pts, col, conf, _how) in enumerate(views(depth, colors, camera, len(paths))):
        xyz, rgb, c = point_cloud(pts, col, conf, stride=int(stride), max_depth=float(max_depth),
                                  min_confidence=float(min_confidence), coordinates=coordinates)
        mesh_files.save_points(paths[i], xyz, rgb, c)
        if callback is not None:
            callback(i + 1, len(paths))
    return [os.fspath(p) for p in paths]
