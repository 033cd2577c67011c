"""8-bit image files and ComfyUI-layout tensors (``[B,H,W,3]`` float32 in 0..1)."""

from __future__ import annotations

import os
import warnings
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .checks import MAX_VALUES, declared_size

PathLike = Union[str, os.PathLike]


def max_pixels() -> int:
    """Pixels an image file may declare: Pillow's decompression-bomb limit (which an application
    may raise or lower), capped by the core's read budget."""
    return int(min(Image.MAX_IMAGE_PIXELS or MAX_VALUES, MAX_VALUES))


def open_image(path: PathLike) -> Image.Image:
    """Open and decode an image file. Its declared size is checked against :func:`max_pixels`
    before any pixel is decoded; a missing, damaged or oversized file is a ``ValueError`` naming it."""
    name = os.path.basename(os.fspath(path))
    if not os.path.isfile(path):
        raise ValueError(f"image file not found: {name!r}")
    try:
        with warnings.catch_warnings():  # an oversized image is refused below, a damaged EXIF block noted by .exif
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", "Corrupt EXIF", UserWarning)
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise ValueError(f"{name}: declares more pixels than Pillow's limit of {max_pixels():,}; "
                         "downscale it before loading") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise ValueError(f"{name}: not a readable image (not a format Pillow reads, or damaged); "
                         "re-save it as PNG, JPEG or TIFF") from None
    try:
        declared_size(name, (img.height, img.width), max_pixels(), "pixels")
        img.load()
    except ValueError:
        img.close()
        raise
    except Exception:  # noqa: BLE001 - Pillow's decoders raise many kinds for damaged data
        img.close()
        raise ValueError(f"{name}: the image data is damaged or truncated; re-save or re-upload the file") from None
    return img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image as RGB ``[1,H,W,3]`` in 0..1, turned upright by its EXIF orientation."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: keep the pixels as stored
        pass
    rgb = img.convert("RGB")
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
