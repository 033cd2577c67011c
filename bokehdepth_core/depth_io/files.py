"""Saving and loading depth files: the format chosen from the name or asked for, one writer or
reader per format (:mod:`.numpy_format`, :mod:`.png16`, :mod:`.pil_files`, :mod:`.exr`), the header
embedded and as a sidecar (:mod:`.metadata`), plain values mapped to metres (:mod:`.mapping`).

Invalid depth (not finite, ``<= 0``) stays NaN/inf in float formats and is code 0 in 16-bit PNGs.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch

from ..types import DepthMap
from . import exr, metadata, numpy_format, pil_files, png16
from .mapping import LOAD_MODES, pick_channel, values_to_depth

SAVE_FORMATS = ("npy", "png16", "tiff", "npz", "exr")
_EXT = {"npy": ".npy", "npz": ".npz", "png16": ".png", "tiff": ".tif", "exr": ".exr"}
_WRITERS = {"npy": numpy_format.write_npy, "npz": numpy_format.write_npz, "png16": png16.write,
            "tiff": pil_files.write_tiff, "exr": exr.write}
READ_EXTENSIONS = (".npy", ".npz", ".exr", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".webp", ".bmp")


def format_for_path(path: str) -> str:
    """The save format that a file name's extension asks for."""
    ext = os.path.splitext(path)[1].lower()
    for fmt, e in _EXT.items():
        if ext == e:
            return fmt
    if ext == ".tiff":
        return "tiff"
    raise ValueError(f"cannot tell the depth format of {path!r} from its extension: use .npy, .npz, .png "
                     f"(16-bit), .tif or .exr, or pass fmt= one of {', '.join(SAVE_FORMATS)}")


def extension_for(fmt: str) -> str:
    """The file extension of a save format."""
    if fmt not in _EXT:
        raise ValueError(f"format must be one of {', '.join(SAVE_FORMATS)}, got {fmt!r}")
    return _EXT[fmt]


def save_depth(path: str, depth, fmt: Optional[str] = None, *, index: int = 0, encoding: str = "linear",
               near: Optional[float] = None, far: Optional[float] = None, sidecar: bool = True,
               source: str = "", unit: str = "m", extra: Optional[dict] = None) -> list[str]:
    """Write one depth map (``[H,W]``, or item ``index`` of a batch / DepthMap) losslessly.

    ``fmt``: npy (float32), npz (depth + confidence + intrinsics), png16 (16-bit; the metric range,
    ``encoding`` linear or inverse depth, sits in the PNG's text metadata; 0 = invalid; ``near``/
    ``far`` default to the valid min/max), tiff (float32, Pillow mode F), exr (float32 channel Z +
    confidence, :mod:`.exr`). ``extra`` adds header entries (e.g. ``K``, ``focus_m``). Returns the
    written paths (data file first, then the JSON sidecar when ``sidecar``).
    """
    fmt = fmt or format_for_path(path)
    extension_for(fmt)
    d, conf, intr, meta = _single(depth, index)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    info: dict[str, Any] = metadata.header(path, fmt, d, conf, intr, source or meta.get("source", ""), unit)
    info.update(extra or {})
    info.update(_WRITERS[fmt](path, d, info=info, confidence=conf, intrinsics=intr, encoding=encoding,
                              near=near, far=far))
    return [path, metadata.write_sidecar(path, info, meta)] if sidecar else [path]


def _single(depth, index: int = 0):
    """(depth [H,W] float32 numpy, confidence or None, intrinsics [3,3] or None, meta)."""
    conf = intr = None
    meta: dict = {}
    if isinstance(depth, DepthMap):
        conf, intr, meta = depth.confidence, depth.intrinsics, dict(depth.meta)
        depth = depth.depth
    d = torch.as_tensor(depth).detach().float().cpu()
    if d.ndim == 3:
        if not 0 <= index < d.shape[0]:
            raise ValueError(f"index {index} out of range for a batch of {d.shape[0]} depth maps")
        d = d[index]
        conf = None if conf is None else conf[index]
        if intr is not None and intr.ndim == 3:
            intr = intr[index if intr.shape[0] > 1 else 0]
    if d.ndim != 2 or d.shape[0] == 0 or d.shape[1] == 0:
        raise ValueError(f"depth must be [H,W] or [B,H,W] with H, W > 0, got shape {tuple(d.shape)}")
    conf = None if conf is None else torch.as_tensor(conf).detach().float().cpu().numpy()
    intr = None if intr is None else torch.as_tensor(intr).detach().double().cpu().numpy()
    return d.numpy().astype(np.float32), conf, intr, meta


def load_depth(path: str, mode: str = "auto", scale: Optional[float] = None, near: Optional[float] = None,
               far: Optional[float] = None, channel: str = "auto", normalize: str = "dtype",
               exr_channel: str = "auto") -> DepthMap:
    """Read a depth file into a DepthMap (metres).

    Our files (npy/npz/png16/tiff, sidecar JSON next to them) load as saved. Other files need
    ``mode``: ``metric`` (values x ``scale`` metres per unit; float files default to scale 1) or
    ``disparity`` / ``depth`` / ``depth_inverted`` (values normalised to 0..1 by their dtype's
    maximum, or by the image's own min..max with ``normalize="minmax"``, then mapped between
    ``near`` and ``far`` metres). ``auto`` = our metadata, else metric for float data, else an error
    that says which option to set. ``channel`` picks the values of an RGB image (:func:`.pick_channel`),
    ``exr_channel`` the channel of an EXR file (``auto``: Z, depth.Z, Blender's ``*.Depth.Z`` ...).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"depth file not found: {path}")
    if mode not in LOAD_MODES:
        raise ValueError(f"mode must be one of {', '.join(LOAD_MODES)}, got {mode!r}")
    if normalize not in ("dtype", "minmax"):
        raise ValueError(f"normalize must be 'dtype' or 'minmax', got {normalize!r}")
    ext = os.path.splitext(path)[1].lower()
    name = os.path.basename(path)
    side = metadata.read_sidecar(path)
    conf = intr = None
    meta: dict[str, Any] = {"file": name}
    if ext == ".exr":
        arr, conf, intr, header, meta["exr_channel"] = exr.read(path, exr_channel)
        ours = header is not None and mode == "auto"
        side = {**(side or {}), **header} if ours else side
    elif ext in (".npy", ".npz"):
        arr, conf, intr = numpy_format.read(path)
        meta["storage"] = ext[1:]
        ours = side is not None and mode == "auto"
    else:
        try:
            arr, meta["pil_mode"], header = pil_files.read(path)
        except OSError as exc:
            raise ValueError(f"{name}: not a readable image or depth file ({exc}); use .npy, .npz, .png or .tif") from exc
        ours = header is not None and mode == "auto"
        if ours:
            side = {**(side or {}), **header}
            if header.get("storage") == "png16":
                return _finish(png16.decode(arr, header, name), None, metadata.intrinsics(side, name),
                               {**meta, **metadata.summary(side)})
    if ours:
        depth = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        about = (f"{os.path.basename(metadata.sidecar_path(path))} (the sidecar of {name})"
                 if ext in (".npy", ".npz") else name)
        return _finish(depth, conf, intr if intr is not None else metadata.intrinsics(side, about),
                       {**meta, **metadata.summary(side)})
    kind = "array" if ext in (".npy", ".npz") else "image"
    depth, mode = _to_metres(arr, kind, mode, scale, near, far, channel, normalize, name)
    meta.update({"mode": mode, "scale": scale, "near": near, "far": far, "normalize": normalize})
    return _finish(depth.float(), conf, intr, meta)


def _to_metres(arr: np.ndarray, kind: str, mode: str, scale, near, far, channel: str, normalize: str,
               name: str) -> tuple[torch.Tensor, str]:
    """Plain stored values -> metres by ``mode`` (``auto``: float data as metres); returns the mode used."""
    is_float = np.issubdtype(arr.dtype, np.floating)  # of the stored values, before any channel mixing
    channels = arr.ndim == 3 if kind == "image" else arr.ndim >= 3 and arr.shape[-1] in (3, 4)
    values = arr.astype(np.float32, copy=False)  # float32 throughout: no float64 copies of large maps
    values = pick_channel(values, channel, name) if channels else values
    if mode == "auto" and not is_float:
        raise ValueError(
            f"{name}: a plain {arr.dtype.itemsize * 8}-bit integer depth {kind} without BokehDepth metadata; "
            "say how its values map to metres: mode='metric' with scale = metres per unit (e.g. 0.001 for "
            "millimetres, 1/256 for KITTI), or mode='disparity' (bright = near, e.g. Depth Anything / MiDaS "
            "maps) or 'depth' (bright = far) with near and far in metres")
    mode = "metric" if mode == "auto" else mode
    if mode == "metric":
        return values_to_depth(torch.from_numpy(values), "metric", scale=1.0 if scale is None else scale), mode
    if normalize == "minmax":
        fin = values[np.isfinite(values)]
        lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
        values = (values - lo) / (hi - lo if hi > lo else 1.0)
    elif not is_float:
        values = values / np.float32(np.iinfo(arr.dtype).max)
    return values_to_depth(torch.from_numpy(values), mode, near, far), mode


def _finish(depth: torch.Tensor, conf, intr, meta: dict) -> DepthMap:
    depth = depth.float()
    if depth.ndim == 2:
        depth = depth[None]
    name = meta.get("file", "depth file")
    c = k = None
    if conf is not None:
        if np.size(conf) != depth.numel():
            raise ValueError(f"{name}: its confidence has {np.size(conf)} values for {depth.numel()} depth pixels; "
                             "re-save the file with Save Depth")
        c = torch.as_tensor(np.asarray(conf, dtype=np.float32)).reshape(depth.shape)
    if intr is not None:
        k = torch.from_numpy(metadata.check_intrinsics(intr, name)).float()
    return DepthMap(depth=depth, confidence=c, intrinsics=k, meta=meta)
