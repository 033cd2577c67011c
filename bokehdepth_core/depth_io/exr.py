"""OpenEXR depth through the ``OpenEXR`` package: float32 channel ``Z`` (+ ``confidence``), our JSON
header plus plain attributes other tools read (units, bokeh K, focus distance, intrinsics), and any
EXR's depth channel read back (Blender ``ViewLayer.Depth.Z``, Nuke ``depth.Z``, a plain ``R`` ...).

Values are stored as they are, so a round trip is bit-exact, NaN and inf included.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from ..checks import declared_size
from .metadata import EMBED_KEY, embedded, json_safe

DEPTH_CHANNEL = "Z"
CONFIDENCE_CHANNEL = "confidence"
# What "auto" looks for, in order: the EXR convention and Nuke's depth layer, then Blender's
# "<view layer>.Depth.Z" (any "<layer>.Z"), then grey / red images.
_AUTO_NAMES = ("Z", "depth.Z", "depth.z", "depth", "Depth")
_AUTO_SUFFIXES = (".Depth.Z", ".Z")
_AUTO_LAST = ("Y", "R")


def _openexr():
    try:
        import OpenEXR  # noqa: PLC0415 - optional at import time so the other formats work without it
    except ImportError as exc:
        raise ValueError("EXR needs the OpenEXR package (pip install OpenEXR); or save as tiff/npy") from exc
    return OpenEXR


def write(path: str, d: np.ndarray, info: dict, confidence: Optional[np.ndarray] = None,
          intrinsics: Optional[np.ndarray] = None, **_) -> dict:
    """Write depth ``d [H,W]`` (float32, metres) as channel Z, confidence as a second channel."""
    exr = _openexr()
    extra = {"storage_dtype": "float32", "channel": DEPTH_CHANNEL}
    header = {"compression": exr.ZIP_COMPRESSION, "type": exr.scanlineimage,
              EMBED_KEY: json.dumps(json_safe({**info, **extra})), "units": str(info.get("unit", "m"))}
    # 32-bit attributes for other tools; the exact values live in the JSON header above
    for attr, key in (("bokehK", "K"), ("focusDistance", "focus_m")):
        if isinstance(info.get(key), (int, float)):
            header[attr] = float(info[key])
    if intrinsics is not None:
        header["intrinsics"] = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    channels = {DEPTH_CHANNEL: np.ascontiguousarray(d, dtype=np.float32)}
    if confidence is not None:
        channels[CONFIDENCE_CHANNEL] = np.ascontiguousarray(confidence, dtype=np.float32)
    with exr.File(header, channels) as f:
        f.write(path)
    return extra


def channel_names(path: str) -> list[str]:
    """Every channel name of an EXR file (all parts)."""
    with _open(path) as f:
        return [name for part in f.parts for name in part.channels]


def read(path: str, channel: str = "auto") -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray],
                                                     Optional[dict], str]:
    """(depth values ``[H,W]`` float32, confidence or None, intrinsics ``[3,3]`` or None, our header or
    None, the channel read). ``channel`` is a channel name or ``auto`` (our Z, else the first of
    Z, depth.Z, ``*.Depth.Z``, ``*.Z``, Y, R that the file has)."""
    name = os.path.basename(path)
    with _open(path) as f:
        found = {}
        for part in f.parts:
            for ch, data in part.channels.items():
                found.setdefault(ch, data.pixels)
        header = embedded(_text(f.header().get(EMBED_KEY)))
        intr = f.header().get("intrinsics")
    chosen = _choose(list(found), channel, name)
    values = np.asarray(found[chosen])
    conf = found.get(CONFIDENCE_CHANNEL) if header is not None else None
    intr = None if intr is None or np.shape(intr) != (3, 3) else np.asarray(intr, dtype=np.float64)
    conf = None if conf is None else np.asarray(conf, dtype=np.float32)
    return values.astype(np.float32, copy=False), conf, intr, header, chosen


def _open(path: str):
    """The file with its pixels, after its declared size (every part's data window times its
    channels) was checked against the read budget from the header alone."""
    exr = _openexr()
    name = os.path.basename(path)
    try:
        with exr.File(path, header_only=True) as f:
            for part in f.parts:
                (x0, y0), (x1, y1) = part.header["dataWindow"]
                declared_size(name, (int(y1) - int(y0) + 1, int(x1) - int(x0) + 1, len(part.header["channels"])))
        return exr.File(path, separate_channels=True)
    except (RuntimeError, KeyError, TypeError):
        raise ValueError(f"{name}: not a readable OpenEXR file (or it is damaged); re-export it") from None


def _text(value) -> Optional[str]:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _choose(names: list[str], channel: str, file_name: str) -> str:
    if channel and channel != "auto":
        if channel in names:
            return channel
        raise ValueError(f"{file_name}: no EXR channel {channel!r}; it has {', '.join(names)}")
    hit = next((n for n in _AUTO_NAMES if n in names), None)
    hit = hit or next((n for suffix in _AUTO_SUFFIXES for n in names if n.endswith(suffix)), None)
    hit = hit or next((n for n in _AUTO_LAST if n in names), None)
    if hit:
        return hit
    if len(names) == 1:
        return names[0]
    raise ValueError(f"{file_name}: cannot tell which EXR channel holds depth among {', '.join(names)}; "
                     "name it in the channel input")
