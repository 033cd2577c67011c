"""Pinhole cameras: intrinsics from lens values or EXIF, the authors' guessed camera, rays, field
of view. Shared by Stage-2 (UniDepthV2), point clouds and the camera nodes.

Intrinsics are ``[B,3,3]`` in pixels: ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``; pixel centres sit at
``(u + 0.5, v + 0.5)`` (UniDepthV2's convention).
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from .checks import number
from .exif import read_lens_exif
from .optics import FULL_FRAME_WIDTH_MM

AUTHORS_GUESS = "authors_guess"  # fx = fy = 0.7 W, principal point at the centre (their pipeline)


def intrinsics_matrix(fx, fy, cx, cy) -> torch.Tensor:
    """``[B,3,3]`` from per-item (or scalar) focal lengths and principal point, in pixels."""
    fx, fy, cx, cy = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (fx, fy, cx, cy))
    b = max(len(fx), len(fy), len(cx), len(cy))
    k = torch.zeros(b, 3, 3)
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = fx, fy, cx, cy, 1.0
    return k


def focal_px(width: float, focal_35mm: Optional[float] = None, focal_mm: Optional[float] = None,
             sensor_width_mm: Optional[float] = None) -> float:
    """Focal length in pixels: ``focal_35mm / 36 * W`` (35 mm-equivalent, full-frame width), else
    ``focal_mm / sensor_width_mm * W``."""
    w = number("width", width, "> 0 pixels")
    if focal_35mm:
        return number("focal_35mm", focal_35mm, "> 0 mm") / FULL_FRAME_WIDTH_MM * w
    if focal_mm and sensor_width_mm:
        return number("focal_mm", focal_mm, "> 0 mm") / number("sensor_width_mm", sensor_width_mm, "> 0 mm") * w
    raise ValueError("give focal_35mm, or focal_mm together with sensor_width_mm, to compute the focal length "
                     "in pixels")


def intrinsics_from_lens(width: int, height: int, focal_35mm: Optional[float] = None, focal_mm: Optional[float] = None,
                         sensor_width_mm: Optional[float] = None, batch: int = 1) -> torch.Tensor:
    """Pinhole ``[B,3,3]`` from lens values (see :func:`focal_px`), principal point at the centre."""
    f = focal_px(width, focal_35mm, focal_mm, sensor_width_mm)
    return intrinsics_matrix(f, f, 0.5 * width, 0.5 * height).expand(batch, 3, 3).clone()


def intrinsics_from_exif(info, width: Optional[int] = None, height: Optional[int] = None,
                         batch: int = 1) -> torch.Tensor:
    """Pinhole ``[B,3,3]`` from an :class:`~bokehdepth_core.exif.LensInfo` (EXIF) for an image of
    ``width x height`` (default: the photo's own size; focal lengths scale with width)."""
    w = int(width or info.width)
    h = int(height or info.height)
    if info.focal_35mm or (info.focal_mm and info.sensor_width_mm):
        return intrinsics_from_lens(w, h, info.focal_35mm, info.focal_mm, info.sensor_width_mm, batch)
    raise ValueError("the photo's EXIF has no 35 mm-equivalent focal length and no focal length + sensor width: "
                     "enter the focal length by hand, or leave the camera unconnected to let the model predict it")


def default_camera(width: int, height: int, batch: int = 1) -> torch.Tensor:
    """The authors' guessed camera: ``fx = fy = 0.7 * W``, ``cx = W/2``, ``cy = H/2``."""
    return intrinsics_matrix(0.7 * width, 0.7 * width, 0.5 * width, 0.5 * height).expand(batch, 3, 3).clone()


def check_camera(camera, batch: int, width: Optional[int] = None,
                 height: Optional[int] = None, name: str = "camera") -> Optional[torch.Tensor]:
    """Validate a camera argument and return a fresh float32 ``[B,3,3]`` copy (never the caller's
    tensor), or None to let the model predict it. ``camera`` may be None, ``"authors_guess"``,
    or a pinhole matrix ``[3,3]``, ``[1,3,3]`` or ``[B,3,3]``; errors call it ``name``."""
    if camera is None:
        return None
    if isinstance(camera, str):
        if camera == AUTHORS_GUESS:
            if width is None or height is None:
                raise ValueError(f"{name}='authors_guess' needs the image size")
            return default_camera(width, height, batch)
        raise ValueError(f"{name} must be None, '{AUTHORS_GUESS}' or a [B,3,3] pinhole matrix, got {camera!r}")
    if not isinstance(camera, torch.Tensor):
        try:
            camera = torch.as_tensor(camera, dtype=torch.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a [B,3,3] pinhole matrix, got {type(camera).__name__}") from None
    k = camera.detach().to(device="cpu", dtype=torch.float32).clone()
    if k.ndim == 2:
        k = k.unsqueeze(0)
    if k.ndim != 3 or tuple(k.shape[-2:]) != (3, 3):
        raise ValueError(f"{name} must be a 3x3 pinhole matrix, [3,3] or [B,3,3]; got shape {tuple(camera.shape)}")
    if k.shape[0] == 1 and batch > 1:
        k = k.expand(batch, 3, 3).clone()
    if k.shape[0] != batch:
        raise ValueError(f"{name} has batch {k.shape[0]} but the image batch is {batch}: "
                         "give one matrix or one per image")
    if not torch.isfinite(k).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (k[:, 0, 0] <= 0).any() or (k[:, 1, 1] <= 0).any():
        raise ValueError(f"{name} focal lengths fx, fy must be > 0 pixels, got fx={k[:, 0, 0].tolist()}, "
                         f"fy={k[:, 1, 1].tolist()}")
    bottom = torch.tensor([0.0, 0.0, 1.0])
    if not torch.allclose(k[:, 2], bottom.expand_as(k[:, 2]), atol=1e-6) or (k[:, 1, 0].abs() > 1e-6).any():
        raise ValueError(f"{name} must be a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] in pixels; "
                         f"got rows 2-3 {k[0, 1:].tolist()}")
    return k


# --------------------------------------------------------------------------- rays

def pixel_grid(batch: int, height: int, width: int, device=None) -> torch.Tensor:
    """Homogeneous pixel centres ``[B,3,H,W]``: (u + 0.5, v + 0.5, 1)."""
    u = torch.linspace(0.5, width - 0.5, width, device=device)
    v = torch.linspace(0.5, height - 0.5, height, device=device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv, torch.ones_like(uu)]).unsqueeze(0).expand(batch, 3, height, width)


def camera_rays(k: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unit rays ``[B,3,H,W]`` of a given pinhole camera (full inverse, so skew is honoured);
    computed in float32 as UniDepthV2 does for input cameras."""
    k = k.float()
    b = k.shape[0]
    xyz = torch.linalg.inv(k) @ pixel_grid(b, height, width, k.device).reshape(b, 3, -1)
    xyz = xyz / xyz[:, 2:].clamp(min=1e-4)
    xyz = xyz.reshape(b, 3, height, width)
    return xyz / xyz.norm(dim=1, keepdim=True).clamp(min=1e-4)


def pinhole_rays(fx, fy, cx, cy, height: int, width: int) -> torch.Tensor:
    """Unit rays ``[B,3,H,W]`` of predicted intrinsics (per-item tensors ``[B]``), in their dtype."""
    grid = pixel_grid(fx.shape[0], height, width, fx.device).to(fx.dtype)
    # written as the rows of K^-1 applied to (u, v, 1), the way UniDepthV2 computes it
    x = grid[:, 0] * (1.0 / fx).view(-1, 1, 1) + (-cx / fx).view(-1, 1, 1)
    y = grid[:, 1] * (1.0 / fy).view(-1, 1, 1) + (-cy / fy).view(-1, 1, 1)
    rays = torch.stack([x, y, torch.ones_like(x)], dim=1)
    return rays / rays.norm(dim=1, keepdim=True).clamp(min=1e-5)


def field_of_view_deg(intrinsics: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical field of view ``[B]`` in degrees of ``[B,3,3]`` intrinsics."""
    k = intrinsics.float()
    return (2 * torch.atan(width / (2 * k[:, 0, 0]))).rad2deg(), (2 * torch.atan(height / (2 * k[:, 1, 1]))).rad2deg()


# --------------------------------------------------------------------------- cameras for the nodes

SOURCES = ("f35", "sensor", "exif", "manual", "guess")


def intrinsics_for(source: str, width: int, height: int, batch: int = 1, *, focal_35mm: Optional[float] = None,
                   focal_mm: Optional[float] = None, sensor_width_mm: Optional[float] = None,
                   fx: Optional[float] = None, fy: Optional[float] = None, cx: Optional[float] = None,
                   cy: Optional[float] = None, photo: Optional[str] = None) -> tuple[torch.Tensor, str]:
    """Checked pinhole ``[B,3,3]`` for a ``width x height`` image and where it came from: ``f35``
    (35 mm-equivalent focal length), ``sensor`` (focal length + sensor width), ``exif`` (the EXIF of
    the ``photo`` file), ``manual`` (fx, fy and the principal point; None or < 0 = the centre) or
    ``guess`` (:func:`default_camera`)."""
    if source == "f35":
        k = intrinsics_from_lens(width, height, focal_35mm=focal_35mm, batch=batch)
        note = f"{focal_35mm:g} mm (35 mm equiv.)"
    elif source == "sensor":
        k = intrinsics_from_lens(width, height, focal_mm=focal_mm, sensor_width_mm=sensor_width_mm, batch=batch)
        note = f"{focal_mm:g} mm on a {sensor_width_mm:g} mm wide sensor"
    elif source == "exif":
        if not photo:
            raise ValueError("photo: give the file name of a photo (JPEG/TIFF with EXIF) for the EXIF camera")
        info = read_lens_exif(photo)
        k, note = intrinsics_from_exif(info, width, height, batch), f"EXIF of {os.path.basename(photo)} ({info.summary()})"
    elif source == "manual":
        centre = (cx if cx is not None and cx >= 0 else 0.5 * width, cy if cy is not None and cy >= 0 else 0.5 * height)
        k, note = intrinsics_matrix(fx, fy, *centre).expand(batch, 3, 3).clone(), "manual"
    elif source == "guess":
        k, note = default_camera(width, height, batch), "authors' guess"
    else:
        raise ValueError(f"camera source must be one of {', '.join(SOURCES)}, got {source!r}")
    return check_camera(k, batch), note


def describe_intrinsics(intrinsics: torch.Tensor, width: int, height: int) -> str:
    """One line per camera: focal lengths and principal point (px) and the field of view."""
    k = intrinsics.float()
    fov_x, fov_y = field_of_view_deg(k, width, height)
    return "\n".join(f"#{i}: fx={k[i, 0, 0]:.2f} fy={k[i, 1, 1]:.2f} cx={k[i, 0, 2]:.2f} cy={k[i, 1, 2]:.2f} px "
                     f"for {width}x{height}, FoV {fov_x[i]:.1f} x {fov_y[i]:.1f} deg" for i in range(k.shape[0]))
