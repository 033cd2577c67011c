"""NumPy depth files: ``.npy`` (float32 metres) and ``.npz`` (depth + confidence + intrinsics), and
plain numeric arrays from elsewhere.

Every array's header (shape, dtype) is read and checked against the file's size and the read budget
(:data:`..checks.MAX_VALUES`) before its data is read or unpacked, so a small or damaged file cannot
make the reader allocate or decompress more than it declares.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import IO, Optional

import numpy as np

from ..checks import declared_size

_DEPTH_KEYS = ("depth", "depth_m", "arr_0")
_DAMAGED = "is damaged or truncated; save or copy it again"


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


def _header(fh: IO[bytes], name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data bytes) from an ``.npy`` header; the data must be plain numbers."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError("unsupported version")
        shape, _fortran, dtype = read(fh)
    except (ValueError, EOFError, OSError, SyntaxError, TypeError, zlib.error, zipfile.BadZipFile):
        raise ValueError(f"{name}: not a NumPy array file, or it {_DAMAGED}") from None
    if dtype.hasobject or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{name}: holds {dtype} values; only plain numeric arrays (e.g. float32 metres) are loaded")
    declared_size(name, shape)
    return tuple(shape), dtype, math.prod(shape) * dtype.itemsize


def _read_npy(path: str, name: str) -> np.ndarray:
    with open(path, "rb") as fh:
        shape, dtype, nbytes = _header(fh, name)
        if os.fstat(fh.fileno()).st_size - fh.tell() < nbytes:
            raise ValueError(f"{name}: ends before the {shape} {dtype} array it declares: the file {_DAMAGED}")
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError):
            raise ValueError(f"{name}: the file {_DAMAGED}") from None


def _read_npz_member(z: zipfile.ZipFile, key: str, name: str) -> np.ndarray:
    info = z.getinfo(key + ".npy")
    label = f"{name}[{key}]"
    with z.open(info) as fh:
        shape, dtype, nbytes = _header(fh, label)
        if info.file_size != fh.tell() + nbytes:  # the member unpacks to exactly what its header declares
            raise ValueError(f"{label}: its size does not match the {shape} {dtype} array it declares: "
                             f"the file {_DAMAGED}")
    try:
        with z.open(info) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except (ValueError, EOFError, OSError, zlib.error, zipfile.BadZipFile):
        raise ValueError(f"{label}: the file {_DAMAGED}") from None


def _read_npz(path: str, name: str):
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        raise ValueError(f"{name}: not a readable .npz (zip) archive, or it {_DAMAGED}") from None
    with z:
        keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        key = next((k for k in _DEPTH_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ValueError(f"{name}: no 'depth' array among {keys}; save the depth under the key 'depth'")
        extra = [_read_npz_member(z, k, name) if k in keys else None for k in ("confidence", "intrinsics")]
        return _read_npz_member(z, key, name), *extra


def read(path: str) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """(depth, confidence or None, intrinsics or None) of a ``.npy``/``.npz`` file. Depth is
    ``[H,W]`` or ``[B,H,W]``, or ``[H,W,C]`` / ``[B,H,W,C]`` with C = 3 or 4 channels (RGB/RGBA
    values, one map each: pick the channel that holds depth)."""
    name = os.path.basename(path)
    if os.path.splitext(path)[1].lower() == ".npz":
        arr, conf, intr = _read_npz(path, name)
    else:
        arr, conf, intr = _read_npy(path, name), None, None
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    channels = arr.shape[-1] in (3, 4) and arr.ndim in (3, 4)
    if (arr.ndim not in (2, 3) and not channels) or 0 in arr.shape:
        raise ValueError(f"{name}: expected a depth array [H,W] or [B,H,W] (or RGB values [H,W,3]), "
                         f"got shape {arr.shape}")
    return arr, conf, intr
