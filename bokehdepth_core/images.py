"""8-bit image files and ComfyUI-layout tensors (``[B,H,W,3]`` float32 in 0..1)."""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps

PathLike = Union[str, os.PathLike]


def open_image(path: PathLike) -> Image.Image:
    """Open and decode an image file; a missing or unreadable file is a ``ValueError`` naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"image file not found: {os.fspath(path)!r}")
    try:
        img = Image.open(path)
        img.load()
    except OSError as exc:
        raise ValueError(f"{os.path.basename(os.fspath(path))}: not a readable image ({exc})") from exc
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image as RGB ``[1,H,W,3]`` in 0..1, turned upright by its EXIF orientation."""
    rgb = ImageOps.exif_transpose(img).convert("RGB")
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]


def to_rgb8(image: torch.Tensor) -> np.ndarray:
    """``[H,W,3]`` in 0..1 -> uint8, rounded half up."""
    return (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def save_rgb(path: PathLike, image: torch.Tensor, quality: Optional[int] = None) -> None:
    """Write ``[H,W,3]`` in 0..1 as an 8-bit file; the format follows the extension (``quality`` for JPEG)."""
    im = Image.fromarray(to_rgb8(image))
    if quality is None:
        im.save(path)
    else:
        im.save(path, quality=quality)
