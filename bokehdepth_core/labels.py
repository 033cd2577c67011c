"""Text drawn onto images with Pillow: a caption per frame (e.g. ``K = 20``) so that previews say
what they show."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .checks import image_batch


def font(size: int):
    """Pillow's bundled scalable font (no system fonts needed)."""
    return ImageFont.load_default(size=max(8, int(size)))


def to_pil(image: torch.Tensor) -> Image.Image:
    """One image ``[H,W,3]`` in 0..1 as an 8-bit Pillow image."""
    return Image.fromarray((image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def from_pil(img: Image.Image) -> torch.Tensor:
    """A Pillow image as ``[H,W,3]`` float32 in 0..1."""
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)


def caption(images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """Copies of ``images [B,H,W,3]`` with ``texts[i]`` in a dark box at the top-left of image ``i``;
    the text size follows the image height."""
    images = image_batch(images, "images")
    if len(texts) != images.shape[0]:
        raise ValueError(f"need one caption per image: {images.shape[0]} images, {len(texts)} captions")
    out = []
    for img, text in zip(images, texts):
        pil = to_pil(img)
        f = font(pil.height / 14)
        draw = ImageDraw.Draw(pil)
        pad = max(2, pil.height // 80)
        left, top, right, bottom = draw.textbbox((pad * 2, pad * 2), text, font=f)
        draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(0, 0, 0))
        draw.text((pad * 2, pad * 2), text, font=f, fill=(255, 255, 255))
        out.append(from_pil(pil))
    return torch.stack(out).to(images.device)


def k_captions(k_values: torch.Tensor) -> list[str]:
    """``K = ...`` for every frame of a stack's ``k_values [B,N]``, image-major."""
    return [f"K = {float(k):.4g}" for k in torch.as_tensor(k_values).reshape(-1)]
