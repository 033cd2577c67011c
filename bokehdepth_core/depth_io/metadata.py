"""What a depth file says about itself: a JSON header (format, shape, unit, value statistics,
intrinsics, source) embedded in the file where the format allows and written as a sidecar next to it."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Optional

import numpy as np
import torch

FORMAT_ID = "bokehdepth-depth"
EMBED_KEY = "bokehdepth"  # PNG text chunk carrying the header (TIFF files use their ImageDescription)
MAX_SIDECAR_BYTES = 1 << 20
log = logging.getLogger("BokehDepth")


def header(path: str, storage: str, depth: np.ndarray, confidence, intrinsics, source: str, unit: str) -> dict:
    """The header of one depth map ``[H,W]`` about to be written to ``path``."""
    return {
        "format": FORMAT_ID, "version": 1, "file": os.path.basename(path), "storage": storage,
        "shape": [int(depth.shape[0]), int(depth.shape[1])], "unit": unit, "invalid": "NaN/inf/<=0",
        "stats": stats(depth), "intrinsics": None if intrinsics is None else json_safe(intrinsics),
        "has_confidence": confidence is not None, "source": source,
    }


def embedded(raw: Optional[str]) -> Optional[dict]:
    """A header read back from JSON text (a file's text metadata or a sidecar), or None when it is not ours."""
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) and parsed.get("format") == FORMAT_ID else None


def json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return json_safe(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer, int, bool, str)) or value is None:
        return value.item() if isinstance(value, np.generic) else value
    return str(value)


def stats(d: np.ndarray) -> dict:
    """Valid fraction and the min, max and median of the valid values of ``d``."""
    ok = np.isfinite(d) & (d > 0)
    if not ok.any():
        return {"valid_fraction": 0.0}
    v = d[ok]
    return {"valid_fraction": float(ok.mean()), "min": float(v.min()), "max": float(v.max()),
            "median": float(np.median(v))}


def sidecar_path(path: str) -> str:
    """The JSON sidecar next to a depth file: same name, ``.json``."""
    return os.path.splitext(path)[0] + ".json"


def write_sidecar(path: str, info: dict, meta: dict) -> str:
    """Write the header (and the depth map's free-form ``meta``) as JSON next to ``path``."""
    side = sidecar_path(path)
    with open(side, "w", encoding="utf-8") as fh:
        json.dump(json_safe({**info, "meta": meta}), fh, indent=2)
    return side


def read_sidecar(path: str) -> Optional[dict]:
    """The header in the sidecar next to ``path``, or None when there is none of ours."""
    side = sidecar_path(path)
    if not os.path.isfile(side) or os.path.abspath(side) == os.path.abspath(path):
        return None
    if os.path.getsize(side) > MAX_SIDECAR_BYTES:  # ours are a few kB: another program's file
        log.warning("BokehDepth: ignoring %s (%d bytes, not a depth sidecar)", os.path.basename(side),
                    os.path.getsize(side))
        return None
    try:
        with open(side, encoding="utf-8") as fh:
            return embedded(fh.read())
    except (OSError, UnicodeDecodeError):
        return None


def summary(side: dict) -> dict:
    """The header entries a loaded DepthMap keeps in its meta."""
    keys = ("source", "unit", "storage", "encoding", "near", "far", "K", "focus_m", "meta")
    return {k: side[k] for k in keys if k in side}


def intrinsics(side: Optional[dict], name: str = "metadata") -> Optional[np.ndarray]:
    """The header's pinhole intrinsics ``[B,3,3]`` as float64, or None; ``name`` is where they were read."""
    k = (side or {}).get("intrinsics")
    return None if k is None else check_intrinsics(k, name)


def check_intrinsics(k, name: str) -> np.ndarray:
    """Stored intrinsics as float64 ``[B,3,3]``: whole 3x3 matrices of finite numbers, or a ValueError naming ``name``."""
    try:
        arr = np.asarray(k, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.size == 0 or arr.size % 9 or not np.isfinite(arr).all():
        raise ValueError(f"{name}: its intrinsics are not 3x3 matrices of finite numbers; fix or delete them "
                         "(or re-save the depth with Save Depth)")
    return arr.reshape(-1, 3, 3)
