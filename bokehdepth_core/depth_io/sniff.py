"""What a file in the input folder is, read from its header only: one of our depth files, float or
integer depth from elsewhere, a photo, or neither. Pickers list only what their node can read."""

from __future__ import annotations

import os
import warnings
import zipfile

import numpy as np
from PIL import Image

from .metadata import EMBED_KEY, embedded, read_sidecar

OURS, FLOAT, INTEGER, PHOTO, OTHER = "ours", "float", "integer", "photo", "other"
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".png", ".heic", ".heif")
_DEPTH_MODES = ("F", "I", "I;16", "I;16B", "I;16L", "I;16N")  # Pillow modes of float / 16-32 bit grey images
_TIFF_DESCRIPTION = 270


def kind(path: str) -> str:
    """``ours`` (saved by BokehDepth), ``float`` / ``integer`` (depth values without our header),
    ``photo`` (an 8-bit colour or grey picture) or ``other`` (unreadable or unknown)."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            return _array_kind(path, _npy_dtype(path))
        if ext == ".npz":
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith(".npy")]
                with z.open(next((n for n in names if n.startswith("depth")), names[0])) as fh:
                    return _array_kind(path, _npy_dtype_from(fh))
        if ext == ".exr":
            return _exr_kind(path)
        return _image_kind(path)
    except (OSError, ValueError, IndexError, StopIteration, KeyError, zipfile.BadZipFile, SyntaxError,
            Image.DecompressionBombError):  # an oversized image: the reader refuses it with a clear message
        return OTHER


def is_depth_file(path: str) -> bool:
    return kind(path) in (OURS, FLOAT, INTEGER)


def is_photo(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in PHOTO_EXTENSIONS and kind(path) == PHOTO


def _npy_dtype(path: str) -> np.dtype:
    with open(path, "rb") as fh:
        return _npy_dtype_from(fh)


def _npy_dtype_from(fh) -> np.dtype:
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(fh)[2]


def _array_kind(path: str, dtype: np.dtype) -> str:
    if read_sidecar(path) is not None:
        return OURS
    if np.issubdtype(dtype, np.floating):
        return FLOAT
    return INTEGER if np.issubdtype(dtype, np.integer) else OTHER


def _exr_kind(path: str) -> str:
    import OpenEXR  # noqa: PLC0415 - only when an EXR file is met

    try:
        with OpenEXR.File(path, header_only=True) as f:
            raw = f.header().get(EMBED_KEY)
    except RuntimeError:
        return OTHER
    return OURS if embedded(raw.decode() if isinstance(raw, bytes) else raw) else FLOAT


def _image_kind(path: str) -> str:
    with warnings.catch_warnings():  # oversized images are refused when read, not while listing
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)  # reads the header only
    with img:
        text = dict(getattr(img, "text", {}) or {})
        desc = img.tag_v2.get(_TIFF_DESCRIPTION) if hasattr(img, "tag_v2") else None
        mode = img.mode
    if embedded(text.get(EMBED_KEY) or desc) or read_sidecar(path) is not None:
        return OURS
    if mode == "F":
        return FLOAT
    if mode in _DEPTH_MODES:
        return INTEGER
    return PHOTO
