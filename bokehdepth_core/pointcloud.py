"""3-D points from metric depth and pinhole intrinsics, and a binary PLY writer with colours.

Camera coordinates are OpenCV's (x right, y down, z forward, metres); pixel ``(u, v)`` has its
centre at ``(u + 0.5, v + 0.5)``, the convention of UniDepthV2's rays, so points computed here
from its depth and intrinsics match its own point output. ``"opengl"`` flips y and z (y up,
camera looking down -z), which is what Blender, MeshLab and three.js viewers show upright.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import torch

from .camera import check_camera, pixel_grid
from .checks import depth_batch, image_batch
from .types import DepthMap, ProgressFn

__all__ = ["depth_to_points", "points_for", "unit_confidence", "point_cloud", "write_point_clouds", "write_ply",
           "read_ply", "COORDINATES"]

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


def point_cloud(points: torch.Tensor, colors: Optional[torch.Tensor] = None, confidence: Optional[torch.Tensor] = None,
                stride: int = 1, max_depth: float = 0.0, min_confidence: float = 0.0,
                coordinates: str = "opencv") -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """One view's points ``[H,W,3]`` (+ colours ``[H,W,3]`` 0..1, confidence ``[H,W]``) -> flat
    float32 ``[M,3]``, uint8 colours ``[M,3]`` and confidence ``[M]``, keeping finite points with
    z > 0, every ``stride``-th pixel, z <= ``max_depth`` (0 = no limit) and confidence >=
    ``min_confidence``."""
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [H,W,3], got shape {tuple(points.shape)}")
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
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


def write_ply(path: Union[str, os.PathLike], points: np.ndarray, colors: Optional[np.ndarray] = None,
              confidence: Optional[np.ndarray] = None, comment: str = "") -> str:
    """Binary little-endian PLY: float x, y, z [, uchar red, green, blue] [, float confidence]."""
    pts = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    n = len(pts)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != (n, 3):
            raise ValueError(f"colors must be [{n},3], got {colors.shape}")
        if colors.dtype != np.uint8:
            colors = (np.clip(colors, 0, 1) * 255).round().astype(np.uint8)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float32).reshape(-1)
        if len(confidence) != n:
            raise ValueError(f"confidence must have {n} values, got {len(confidence)}")
        fields.append(("confidence", "<f4"))
    rec = np.empty(n, dtype=fields)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        rec["red"], rec["green"], rec["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    if confidence is not None:
        rec["confidence"] = confidence
    ply_type = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {line}" for line in comment.splitlines() if line.strip()]
    header.append(f"element vertex {n}")
    header += [f"property {ply_type[t]} {name}" for name, t in fields]
    header.append("end_header")
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rec.tobytes())
    return os.fspath(path)


def write_point_clouds(paths: list, depth: DepthMap, colors: torch.Tensor, camera: Optional[torch.Tensor] = None, *,
                       stride: int = 1, max_depth: float = 0.0, min_confidence: float = 0.0,
                       coordinates: str = "opencv", callback: ProgressFn = None) -> list[str]:
    """One PLY per batch item of ``depth`` (see :func:`points_for`, :func:`point_cloud`), coloured by
    ``colors [B,H,W,3]`` (or one image for all), confidence scaled to 0..1 per image. Returns ``paths``."""
    points, how = points_for(depth, camera)
    b = points.shape[0]
    colors = image_batch(colors, "image")
    if colors.shape[0] not in (1, b) or len(paths) != b:
        raise ValueError(f"image batch {colors.shape[0]} (and {len(paths)} paths) must match the depth batch {b}")
    conf = unit_confidence(depth)
    for i, path in enumerate(paths):
        xyz, rgb, c = point_cloud(points[i], colors[min(i, colors.shape[0] - 1)], None if conf is None else conf[i].cpu(),
                                  stride=int(stride), max_depth=float(max_depth), min_confidence=float(min_confidence),
                                  coordinates=coordinates)
        write_ply(path, xyz, rgb, c, comment=f"BokehDepth point cloud ({how}, {coordinates} axes, m)")
        if callback is not None:
            callback(i + 1, b)
    return [os.fspath(p) for p in paths]


def read_ply(path: Union[str, os.PathLike]) -> dict[str, np.ndarray]:
    """Read back a binary little-endian vertex-only PLY (as :func:`write_ply` writes): property -> array."""
    types = {"float": "<f4", "float32": "<f4", "uchar": "u1", "uint8": "u1", "double": "<f8", "int": "<i4"}
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{os.fspath(path)} is not a PLY file")
        n, fields, fmt = 0, [], None
        while True:
            line = f.readline()
            if not line:
                raise ValueError("PLY header has no end_header")
            parts = line.decode("ascii").split()
            if not parts:
                continue
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element" and parts[1] == "vertex":
                n = int(parts[2])
            elif parts[0] == "property":
                fields.append((parts[2], types[parts[1]]))
            elif parts[0] == "end_header":
                break
        if fmt != "binary_little_endian":
            raise ValueError(f"only binary_little_endian PLY is read here, got {fmt}")
        rec = np.frombuffer(f.read(), dtype=fields, count=n)
    return {name: rec[name] for name, _ in fields}
