"""Coloured triangle meshes from metric depth: the pixel grid split into two triangles per quad,
cut where depth jumps (object edges) or edges grow too long, so foreground and background do
not get joined by "rubber sheet" walls.

Points come from :func:`~bokehdepth_core.pointcloud.points_for` (OpenCV camera axes, metres); the
``opengl`` axes turn them 180 degrees about x (y up, looking down -z), which keeps the winding.
Triangles face the camera (counter-clockwise seen from it).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from . import mesh_files
from .pointcloud import check_grid, views
from .types import DepthMap, ProgressFn

__all__ = ["grid_mesh", "write_meshes"]


def grid_mesh(points: torch.Tensor, colors: Optional[torch.Tensor] = None, confidence: Optional[torch.Tensor] = None,
              *, stride: int = 1, max_depth: float = 0.0, min_confidence: float = 0.0, max_depth_jump: float = 0.05,
              max_edge: float = 0.0, coordinates: str = "opencv") -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """One view's points ``[H,W,3]`` -> (vertices ``[N,3]`` float32, faces ``[M,3]`` int64, colours
    ``[N,3]`` uint8 or None).

    Every ``stride``-th pixel is a vertex; a pixel is usable when finite, z > 0, z <= ``max_depth``
    (0 = no limit) and its confidence (0..1) >= ``min_confidence``. A triangle is kept when its three
    pixels are usable, its depths differ by at most ``max_depth_jump`` x the nearest one (0 = no
    cut) and no edge is longer than ``max_edge`` metres (0 = no cut). Unused vertices are dropped.
    """
    check_grid(points, stride, coordinates)
    if max_depth_jump < 0 or max_edge < 0:
        raise ValueError(f"max_depth_jump and max_edge must be >= 0, got {max_depth_jump}, {max_edge}")
    h, w, _ = points.shape
    s = int(stride)
    pts = points[::s, ::s].float().cpu().numpy()
    gh, gw, _ = pts.shape
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(pts).all(-1) & (pts[..., 2] > 0)
        if max_depth and max_depth > 0:
            ok &= pts[..., 2] <= max_depth
    if confidence is not None:
        if tuple(confidence.shape) != (h, w):
            raise ValueError(f"confidence must be [H,W] = [{h},{w}], got {tuple(confidence.shape)}")
        if min_confidence and min_confidence > 0:
            ok &= confidence[::s, ::s].float().cpu().numpy() >= min_confidence
    idx = np.arange(gh * gw).reshape(gh, gw)
    tl, tr, bl, br = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    # (top-left, bottom-left, top-right) and (top-right, bottom-left, bottom-right): counter-clockwise
    # seen from the camera in OpenCV axes
    faces = np.concatenate([np.stack([tl, bl, tr], -1).reshape(-1, 3), np.stack([tr, bl, br], -1).reshape(-1, 3)])
    flat = pts.reshape(-1, 3)
    keep = ok.reshape(-1)[faces].all(1)
    faces = faces[keep]
    z = flat[faces, 2]
    if max_depth_jump > 0:
        faces = faces[(z.max(1) - z.min(1)) <= max_depth_jump * z.min(1)]
    if max_edge > 0:
        tri = flat[faces]
        edges = np.linalg.norm(tri - tri[:, [1, 2, 0]], axis=-1)
        faces = faces[edges.max(1) <= max_edge]
    used, faces = np.unique(faces, return_inverse=True)
    faces = faces.reshape(-1, 3).astype(np.int64)
    verts = flat[used].astype(np.float32)
    if coordinates == "opengl":
        verts = verts * np.array([1.0, -1.0, -1.0], dtype=np.float32)
    col = None
    if colors is not None:
        col = _grid_colors(colors, h, w, s).reshape(-1, 3)[used]
    return verts, faces, col


def _grid_colors(colors: torch.Tensor, h: int, w: int, s: int) -> np.ndarray:
    if colors.ndim != 3 or colors.shape[-1] != 3:
        raise ValueError(f"colors must be [H,W,3], got shape {tuple(colors.shape)}")
    if tuple(colors.shape[:2]) != (h, w):
        colors = torch.nn.functional.interpolate(colors.permute(2, 0, 1)[None].float(), size=(h, w),
                                                 mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    return (colors[::s, ::s].float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_meshes(paths: list, depth: DepthMap, colors: torch.Tensor, camera: Optional[torch.Tensor] = None, *,
                 stride: int = 1, max_depth: float = 0.0, min_confidence: float = 0.0, max_depth_jump: float = 0.05,
                 max_edge: float = 0.0, coordinates: str = "opengl", callback: ProgressFn = None) -> list[dict]:
    """One mesh file (``.glb`` / ``.ply`` by name) per batch item of ``depth``, coloured by ``colors``
    ``[B,H,W,3]`` (or one image for all). Returns per file its path and vertex / face counts."""
    out = []
    for i, (pts, col, conf, how) in enumerate(views(depth, colors, camera, len(paths))):
        verts, faces, rgb = grid_mesh(pts, col, conf, stride=stride, max_depth=max_depth, min_confidence=min_confidence,
                                      max_depth_jump=max_depth_jump, max_edge=max_edge, coordinates=coordinates)
        name = os.path.basename(os.fspath(paths[i]))
        if len(faces) == 0:
            raise ValueError(f"{name}: no triangle survived the cuts; raise max_depth_jump, lower "
                             "min_confidence or set max_depth to 0")
        mesh_files.save_mesh(paths[i], verts, faces, rgb)
        out.append({"path": os.fspath(paths[i]), "vertices": len(verts), "faces": len(faces), "camera": how})
        if callback is not None:
            callback(i + 1, len(paths))
    return out
