"""NumPy depth files: ``.npy`` (float32 metres) and ``.npz`` (depth + confidence + intrinsics), and
plain numeric arrays from elsewhere."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np


def write_npy(path: str, depth: np.ndarray, **_) -> dict:
    np.save(path, depth)
    return {}


def write_npz(path: str, depth: np.ndarray, confidence: Optional[np.ndarray] = None,
              intrinsics: Optional[np.ndarray] = None, **_) -> dict:
    arrays = {"depth": depth}
    if confidence is not None:
        arrays["confidence"] = confidence.astype(np.float32)
    if intrinsics is not None:
        arrays["intrinsics"] = intrinsics.astype(np.float64)
    np.savez_compressed(path, **arrays)
    return {}


def read(path: str) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """(depth ``[H,W]`` or ``[B,H,W]``, confidence or None, intrinsics or None) of a ``.npy``/``.npz`` file."""
    name = os.path.basename(path)
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{name}: holds Python objects; only plain numeric arrays are loaded ({exc})") from exc
    conf = intr = None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = list(data.keys())
            key = next((k for k in ("depth", "depth_m", "arr_0") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{name}: no 'depth' array among {keys}; save the depth under the key 'depth'")
            arr = data[key]
            conf = data["confidence"] if "confidence" in keys else None
            intr = data["intrinsics"] if "intrinsics" in keys else None
    else:
        arr = data
    arr = np.asarray(arr)
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected a numeric [H,W] or [B,H,W] depth array, got shape {arr.shape} "
                         f"dtype {arr.dtype}")
    return arr, conf, intr
