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

    def encode(block: np.ndarray) -> np.ndarray:
        valid = np.isfinite(block) & (block > 0)
        dc = np.clip(np.where(valid, block, near), near, far).astype(np.float64)
        if encoding == "linear":
            t = (dc - near) / (far - near)
        else:
            t = (1.0 / dc - 1.0 / near) / (1.0 / far - 1.0 / near)
        return np.where(valid, 1 + np.rint(t * (CODE_MAX - 1)), 0)  # codes 1..65535 carry near..far; 0 = invalid

    code = _by_rows(d, encode, np.uint16)
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
    except (KeyError, TypeError, ValueError):
        near = far = math.nan
        enc = "linear"
    if not (0 < near < far < math.inf):
        raise ValueError(f"{name}: its BokehDepth metadata lacks a valid near/far range (0 < near < far metres); "
                         "re-save the depth with Save Depth")
    if code.ndim != 2:
        raise ValueError(f"{name}: BokehDepth PNG must be single-channel 16-bit, got shape {code.shape}")
    if enc not in PNG_ENCODINGS:
        raise ValueError(f"{name}: unknown depth encoding {enc!r} in its metadata (expected linear or inverse)")

    def to_metres(block: np.ndarray) -> np.ndarray:
        c = block.astype(np.float64)
        t = (c - 1) / (CODE_MAX - 1)
        d = near + t * (far - near) if enc == "linear" else 1.0 / (1.0 / near + t * (1.0 / far - 1.0 / near))
        return np.where(c > 0, d, 0.0)

    return torch.from_numpy(_by_rows(code, to_metres, np.float32))


def _by_rows(values: np.ndarray, fn, dtype) -> np.ndarray:
    """``fn`` applied to blocks of about a million pixels: float64 arithmetic (16-bit codes need it
    for exact round trips) without a float64 copy of the whole map."""
    out = np.empty(values.shape, dtype)
    step = max(1, (1 << 20) // max(1, values.shape[-1]))
    for y in range(0, values.shape[0], step):
        out[y:y + step] = fn(values[y:y + step])
    return out
