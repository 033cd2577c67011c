"""16-bit PNG depth: codes 1..65535 spread evenly over near..far in metres (``linear``) or in
1/depth (``inverse``), 0 for invalid pixels; the mapping sits in the PNG's text metadata."""

from __future__ import annotations

import json
import math
from typing import Optional

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .metadata import EMBED_KEY, json_safe

PNG_ENCODINGS = ("linear", "inverse")
CODE_MAX = 65535


def write(path: str, d: np.ndarray, info: dict, encoding: str = "linear", near: Optional[float] = None,
          far: Optional[float] = None, **_) -> dict:
    """Write depth ``d [H,W]`` as 16-bit codes between ``near`` and ``far`` (default: the valid
    min/max, from ``info``'s stats); returns the mapping, which also goes into the PNG's text."""
    if encoding not in PNG_ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(PNG_ENCODINGS)}, got {encoding!r}")
    ok = np.isfinite(d) & (d > 0)
    stats = info["stats"]
    near = float(near) if near else stats.get("min", 1.0)
    far = float(far) if far else stats.get("max", 2.0)
    if not (0 < near < far and math.isfinite(far)):
        if near == far and near > 0:  # flat depth map: any small span keeps it exact
            far = near * (1 + 1e-6)
        else:
            raise ValueError(f"png16 needs 0 < near < far (metres), got near={near}, far={far}")
    dc = np.clip(np.where(ok, d, near), near, far).astype(np.float64)
    if encoding == "linear":
        t = (dc - near) / (far - near)
    else:
        t = (1.0 / dc - 1.0 / near) / (1.0 / far - 1.0 / near)
    # codes 1..65535 carry near..far; 0 marks invalid pixels
    code = np.where(ok, 1 + np.rint(t * (CODE_MAX - 1)), 0).astype(np.uint16)
    clipped = int((ok & ((d < near) | (d > far))).sum())
    extra = {"encoding": encoding, "near": near, "far": far, "code_invalid": 0, "code_near": 1,
             "code_far": CODE_MAX, "clipped_pixels": clipped,
             "quantum": (far - near) / (CODE_MAX - 1) if encoding == "linear"
             else (1.0 / near - 1.0 / far) / (CODE_MAX - 1)}
    pnginfo = PngInfo()
    pnginfo.add_text(EMBED_KEY, json.dumps(json_safe({**info, **extra})))
    Image.fromarray(code).save(path, pnginfo=pnginfo)
    return extra


def decode(code: np.ndarray, meta: dict, name: str) -> torch.Tensor:
    """Metres ``[H,W]`` from the codes of one of our PNGs and its header (0 m where invalid)."""
    try:
        near, far, enc = float(meta["near"]), float(meta["far"]), meta.get("encoding", "linear")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name}: BokehDepth PNG metadata lacks near/far ({exc}); re-save it with Save Depth") from exc
    if code.ndim != 2:
        raise ValueError(f"{name}: BokehDepth PNG must be single-channel 16-bit, got shape {code.shape}")
    c = code.astype(np.float64)
    t = (c - 1) / (CODE_MAX - 1)
    if enc == "linear":
        d = near + t * (far - near)
    elif enc == "inverse":
        d = 1.0 / (1.0 / near + t * (1.0 / far - 1.0 / near))
    else:
        raise ValueError(f"{name}: unknown depth encoding {enc!r} in its metadata (expected linear or inverse)")
    return torch.from_numpy(np.where(c > 0, d, 0.0).astype(np.float32))
