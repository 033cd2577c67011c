"""Depth in files Pillow handles: float32 TIFF written with our header in its ImageDescription,
and any PNG, JPEG, TIFF, WebP or BMP read back as an array with the header it carries, if any."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np
from PIL import Image

from ..images import open_image
from .metadata import EMBED_KEY, embedded, json_safe

_DESCRIPTION = 270  # TIFF ImageDescription tag
_TO_RGB = ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr")  # modes read as RGB


def write_tiff(path: str, d: np.ndarray, info: dict, **_) -> dict:
    """Write depth ``d [H,W]`` as a float32 TIFF (Pillow mode F) with the header embedded."""
    extra = {"storage_dtype": "float32"}
    Image.fromarray(d).save(path, tiffinfo={_DESCRIPTION: json.dumps(json_safe({**info, **extra}))})
    return extra


def read(path: str) -> tuple[np.ndarray, str, Optional[dict]]:
    """(pixel array, Pillow mode, our embedded header or None) of an image file (size checked
    before decoding, :func:`..images.open_image`)."""
    with open_image(path) as img:
        text = dict(getattr(img, "text", {}) or {})
        desc = img.tag_v2.get(_DESCRIPTION) if hasattr(img, "tag_v2") else None
        mode = img.mode
        if mode in _TO_RGB:
            img = img.convert("RGB")
        elif mode == "1":  # bilevel: 0 / 255 like any 8-bit grey image
            img = img.convert("L")
        arr = np.array(img)
    return arr, mode, embedded(text.get(EMBED_KEY) or desc)
