"""Depth maps in and out: colourised previews and lossless files.

* ``colorize`` turns metric depth ``[B,H,W]`` into an ``[B,H,W,3]`` image (near = warm/bright).
* ``save_depth`` writes float32 ``.npy``, ``.npz`` (depth + confidence + intrinsics), 16-bit PNG
  with the metric range in its text metadata, or float32 TIFF; plus an optional JSON sidecar.
* ``load_depth`` reads those back to metres, and also plain depth images (8/16-bit PNG, JPEG,
  TIFF) and ``.npy``/``.npz`` from elsewhere, given how their values map to metres.

Invalid depth is anything not finite or ``<= 0``. It stays NaN/inf in float formats and is code 0
in 16-bit PNGs (loaded back as 0 m, still invalid). OpenEXR is not written or read: neither Pillow
nor the core's dependencies handle it; use TIFF or NPY for lossless float depth.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .types import DepthMap

# --------------------------------------------------------------------------- colormaps

# RGB control points, evenly spaced, ordered so that the LAST entry is what near objects get.
# viridis/inferno/magma/turbo: 17 samples of matplotlib's tables; Spectral: ColorBrewer's 11
# classes reversed (Depth Anything shows disparity with Spectral_r, near = red).
_TABLES: dict[str, Sequence[tuple[float, float, float]]] = {
    "Spectral": [
        (0.3686, 0.3098, 0.6353), (0.1961, 0.5333, 0.7412), (0.4000, 0.7608, 0.6471),
        (0.6706, 0.8667, 0.6431), (0.9020, 0.9608, 0.5961), (1.0000, 1.0000, 0.7490),
        (0.9961, 0.8784, 0.5451), (0.9922, 0.6824, 0.3804), (0.9569, 0.4275, 0.2627),
        (0.8353, 0.2431, 0.3098), (0.6196, 0.0039, 0.2588),
    ],
    "turbo": [
        (0.1900, 0.0718, 0.2322), (0.2511, 0.2524, 0.6337), (0.2763, 0.4212, 0.8912),
        (0.2586, 0.5796, 0.9988), (0.1584, 0.7355, 0.9231), (0.0927, 0.8655, 0.7623),
        (0.1966, 0.9490, 0.5947), (0.4278, 0.9942, 0.3857), (0.6436, 0.9900, 0.2336),
        (0.7952, 0.9303, 0.2039), (0.9267, 0.8203, 0.2257), (0.9916, 0.6841, 0.2071),
        (0.9859, 0.5048, 0.1337), (0.9262, 0.3247, 0.0584), (0.8240, 0.1918, 0.0197),
        (0.6754, 0.0898, 0.0045), (0.4796, 0.0158, 0.0106),
    ],
    "inferno": [
        (0.0015, 0.0005, 0.0139), (0.0423, 0.0281, 0.1411), (0.1293, 0.0473, 0.2908),
        (0.2383, 0.0366, 0.3964), (0.3415, 0.0623, 0.4294), (0.4412, 0.0993, 0.4316),
        (0.5409, 0.1347, 0.4151), (0.6401, 0.1714, 0.3811), (0.7357, 0.2159, 0.3302),
        (0.8173, 0.2710, 0.2704), (0.8903, 0.3480, 0.1983), (0.9443, 0.4428, 0.1204),
        (0.9771, 0.5508, 0.0391), (0.9879, 0.6677, 0.0583), (0.9761, 0.7900, 0.1960),
        (0.9487, 0.9105, 0.3953), (0.9884, 0.9984, 0.6449),
    ],
    "viridis": [
        (0.2670, 0.0049, 0.3294), (0.2823, 0.0950, 0.4173), (0.2788, 0.1755, 0.4834),
        (0.2590, 0.2515, 0.5247), (0.2297, 0.3224, 0.5457), (0.1994, 0.3876, 0.5546),
        (0.1727, 0.4488, 0.5579), (0.1490, 0.5081, 0.5573), (0.1276, 0.5669, 0.5506),
        (0.1201, 0.6222, 0.5349), (0.1539, 0.6802, 0.5042), (0.2394, 0.7356, 0.4557),
        (0.3607, 0.7860, 0.3878), (0.5063, 0.8288, 0.3004), (0.6681, 0.8620, 0.1963),
        (0.8353, 0.8860, 0.1026), (0.9932, 0.9062, 0.1439),
    ],
    "magma": [
        (0.0015, 0.0005, 0.0139), (0.0396, 0.0311, 0.1335), (0.1131, 0.0655, 0.2768),
        (0.2117, 0.0620, 0.4186), (0.3167, 0.0717, 0.4854), (0.4147, 0.1104, 0.5047),
        (0.5128, 0.1482, 0.5076), (0.6136, 0.1818, 0.4985), (0.7164, 0.2150, 0.4753),
        (0.8109, 0.2529, 0.4393), (0.8996, 0.3146, 0.3910), (0.9585, 0.4113, 0.3600),
        (0.9857, 0.5281, 0.3794), (0.9958, 0.6463, 0.4414), (0.9970, 0.7624, 0.5288),
        (0.9928, 0.8772, 0.6331), (0.9871, 0.9914, 0.7495),
    ],
    "gray": [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)],
}
COLORMAPS = tuple(_TABLES)
RANGE_MODES = ("percentile", "minmax", "fixed")
SAVE_FORMATS = ("npy", "png16", "tiff", "npz")
PNG_ENCODINGS = ("linear", "inverse")
LOAD_MODES = ("auto", "metric", "disparity", "depth", "depth_inverted")
_EXT = {"npy": ".npy", "npz": ".npz", "png16": ".png", "tiff": ".tif"}
_META_KEY = "bokehdepth"  # PNG text chunk / TIFF description carrying our JSON metadata
_PNG_MAX = 65535


def valid_mask(depth: torch.Tensor) -> torch.Tensor:
    """True where depth is usable: finite and > 0."""
    return torch.isfinite(depth) & (depth > 0)


def apply_colormap(t: torch.Tensor, cmap: str = "Spectral") -> torch.Tensor:
    """Values in 0..1 (any shape) -> RGB ``[..., 3]``; 1 is the "near" end. ``<name>_r`` flips."""
    name, flip = (cmap[:-2], True) if cmap.endswith("_r") else (cmap, False)
    if name not in _TABLES:
        raise ValueError(f"cmap must be one of {', '.join(COLORMAPS)} (optionally with '_r'), got {cmap!r}")
    table = torch.tensor(_TABLES[name], dtype=torch.float32, device=t.device)
    if flip:
        table = table.flip(0)
    x = t.float().clamp(0, 1).nan_to_num(0.0) * (table.shape[0] - 1)
    i0 = x.floor().clamp_(max=table.shape[0] - 2)
    frac = (x - i0).reshape(-1, 1)
    i0 = i0.long().reshape(-1)
    rgb = torch.lerp(table.index_select(0, i0), table.index_select(0, i0 + 1), frac)
    return rgb.reshape(*t.shape, 3)


def _as_batch(depth) -> torch.Tensor:
    if isinstance(depth, DepthMap):
        depth = depth.depth
    depth = torch.as_tensor(depth)
    if depth.ndim == 2:
        depth = depth.unsqueeze(0)
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 3:
        raise ValueError(f"depth must be [B,H,W] or [H,W], got shape {tuple(depth.shape)}")
    return depth.float()


def _sample_quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    # torch.quantile refuses large inputs; a strided subsample of ~256k values is plenty for a preview.
    step = max(1, values.numel() // 262_144)
    v = values[::step].sort().values
    n = v.numel()
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        out.append(float(v[lo] + (v[hi] - v[lo]) * (pos - lo)))
    return out


def depth_range(depth, mode: str = "percentile", near: Optional[float] = None, far: Optional[float] = None,
                percentiles: tuple[float, float] = (2.0, 98.0)) -> list[tuple[float, float]]:
    """(near, far) in metres per batch item for ``mode`` percentile | minmax | fixed."""
    d = _as_batch(depth)
    if mode not in RANGE_MODES:
        raise ValueError(f"mode must be one of {', '.join(RANGE_MODES)}, got {mode!r}")
    if mode == "fixed":
        if near is None or far is None or not (0 < near < far) or not math.isfinite(far):
            raise ValueError(f"fixed range needs 0 < near < far (metres), got near={near}, far={far}")
        return [(float(near), float(far))] * d.shape[0]
    lo_q, hi_q = percentiles
    if not (0 <= lo_q < hi_q <= 100):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    out = []
    for item in d:
        vals = item[valid_mask(item)]
        if vals.numel() == 0:
            out.append((1.0, 2.0))  # nothing valid: any range, every pixel gets invalid_color
            continue
        if mode == "minmax":
            lo, hi = float(vals.min()), float(vals.max())
        else:
            lo, hi = _sample_quantiles(vals, (lo_q / 100.0, hi_q / 100.0))
        if hi <= lo:  # flat depth: widen a little so the division stays finite
            hi = lo * (1 + 1e-6) + 1e-9
        out.append((lo, hi))
    return out


def normalize_depth(depth, near: float, far: float, inverse: bool = True) -> torch.Tensor:
    """Depth -> 0..1 with ``near`` -> 1 and ``far`` -> 0, linear in 1/depth (``inverse``) or depth."""
    d = _as_batch(depth)
    if inverse:
        t = (1.0 / d - 1.0 / far) / (1.0 / near - 1.0 / far)
    else:
        t = (far - d) / (far - near)
    return t.clamp(0.0, 1.0)


def colorize(depth, cmap: str = "Spectral", mode: str = "percentile", near: Optional[float] = None,
             far: Optional[float] = None, inverse: bool = True,
             invalid_color: Sequence[float] = (0.0, 0.0, 0.0),
             percentiles: tuple[float, float] = (2.0, 98.0),
             ranges: Optional[Sequence[tuple[float, float]]] = None) -> torch.Tensor:
    """Metric depth ``[B,H,W]`` / ``[H,W]`` (or a DepthMap) -> ``[B,H,W,3]`` float32 in 0..1.

    Near objects get the colormap's warm/bright end. The range is per image: the 2nd..98th
    percentile of valid depth, its min..max, or a fixed ``near``..``far`` in metres; or ``ranges``,
    one ``(near, far)`` per image as ``depth_range`` returns them. Invalid pixels (NaN, inf, <= 0)
    get ``invalid_color``.
    """
    d = _as_batch(depth)
    if len(invalid_color) != 3:
        raise ValueError(f"invalid_color must be an RGB triple in 0..1, got {invalid_color!r}")
    if ranges is None:
        ranges = depth_range(d, mode, near, far, percentiles)
    elif len(ranges) != d.shape[0]:
        raise ValueError(f"ranges must give one (near, far) per image ({d.shape[0]}), got {len(ranges)}")
    out = torch.empty(*d.shape, 3, dtype=torch.float32, device=d.device)
    bad = torch.tensor([float(c) for c in invalid_color], dtype=torch.float32, device=d.device)
    for i, (lo, hi) in enumerate(ranges):
        ok = valid_mask(d[i])
        safe = torch.where(ok, d[i], torch.full_like(d[i], lo))
        rgb = apply_colormap(normalize_depth(safe, lo, hi, inverse)[0], cmap)
        out[i] = torch.where(ok.unsqueeze(-1), rgb, bad)
    return out


# --------------------------------------------------------------------------- helpers

def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _json_safe(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (np.integer, int, bool, str)) or value is None:
        return value.item() if isinstance(value, np.generic) else value
    return str(value)


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


def _stats(d: np.ndarray) -> dict:
    ok = np.isfinite(d) & (d > 0)
    if not ok.any():
        return {"valid_fraction": 0.0}
    v = d[ok]
    return {"valid_fraction": float(ok.mean()), "min": float(v.min()), "max": float(v.max()),
            "median": float(np.median(v))}


def format_for_path(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    for fmt, e in _EXT.items():
        if ext == e:
            return fmt
    if ext == ".tiff":
        return "tiff"
    raise ValueError(f"cannot tell the depth format of {path!r} from its extension: use .npy, .npz, .png "
                     f"(16-bit) or .tif, or pass fmt= one of {', '.join(SAVE_FORMATS)}")


def extension_for(fmt: str) -> str:
    if fmt not in _EXT:
        raise ValueError(f"format must be one of {', '.join(SAVE_FORMATS)}, got {fmt!r}"
                         + (" (EXR needs an OpenEXR library that is not installed; use tiff or npy for float depth)"
                            if str(fmt).lower() == "exr" else ""))
    return _EXT[fmt]


def sidecar_path(path: str) -> str:
    return os.path.splitext(path)[0] + ".json"


# --------------------------------------------------------------------------- save

def save_depth(path: str, depth, fmt: Optional[str] = None, *, index: int = 0, encoding: str = "linear",
               near: Optional[float] = None, far: Optional[float] = None, sidecar: bool = True,
               source: str = "", unit: str = "m") -> list[str]:
    """Write one depth map (``[H,W]``, or item ``index`` of a batch / DepthMap) losslessly.

    ``fmt``: npy (float32), npz (depth + confidence + intrinsics), png16 (16-bit; the metric range,
    ``encoding`` linear or inverse depth, sits in the PNG's text metadata; 0 = invalid; ``near``/
    ``far`` default to the valid min/max), tiff (float32, Pillow mode F). Returns the written paths
    (data file first, then the JSON sidecar when ``sidecar``).
    """
    fmt = fmt or format_for_path(path)
    extension_for(fmt)
    d, conf, intr, meta = _single(depth, index)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    info: dict[str, Any] = {
        "format": "bokehdepth-depth", "version": 1, "file": os.path.basename(path), "storage": fmt,
        "shape": [int(d.shape[0]), int(d.shape[1])], "unit": unit, "invalid": "NaN/inf/<=0",
        "stats": _stats(d), "intrinsics": None if intr is None else _json_safe(intr),
        "has_confidence": conf is not None, "source": source or meta.get("source", ""),
    }
    if fmt == "npy":
        np.save(path, d)
    elif fmt == "npz":
        arrays = {"depth": d}
        if conf is not None:
            arrays["confidence"] = conf.astype(np.float32)
        if intr is not None:
            arrays["intrinsics"] = intr.astype(np.float64)
        np.savez_compressed(path, **arrays)
    elif fmt == "png16":
        info.update(_encode_png16(path, d, encoding, near, far, info))
    elif fmt == "tiff":
        from PIL import Image

        info["storage_dtype"] = "float32"
        Image.fromarray(d).save(path, tiffinfo={270: json.dumps(_json_safe(info))})
    written = [path]
    if sidecar:
        side = sidecar_path(path)
        with open(side, "w", encoding="utf-8") as fh:
            json.dump(_json_safe({**info, "meta": meta}), fh, indent=2)
        written.append(side)
    return written


def _encode_png16(path: str, d: np.ndarray, encoding: str, near, far, info: dict) -> dict:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

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
    code = np.where(ok, 1 + np.rint(t * (_PNG_MAX - 1)), 0).astype(np.uint16)
    clipped = int((ok & ((d < near) | (d > far))).sum())
    extra = {"encoding": encoding, "near": near, "far": far, "code_invalid": 0, "code_near": 1,
             "code_far": _PNG_MAX, "clipped_pixels": clipped,
             "quantum": (far - near) / (_PNG_MAX - 1) if encoding == "linear"
             else (1.0 / near - 1.0 / far) / (_PNG_MAX - 1)}
    pnginfo = PngInfo()
    pnginfo.add_text(_META_KEY, json.dumps(_json_safe({**info, **extra})))
    Image.fromarray(code).save(path, pnginfo=pnginfo)
    return extra


# --------------------------------------------------------------------------- load

def values_to_depth(values, mode: str, near: Optional[float] = None, far: Optional[float] = None,
                    scale: float = 1.0) -> torch.Tensor:
    """Map plain values to metres.

    metric: ``value * scale`` (scale = metres per unit, e.g. 0.001 for millimetre PNGs);
    disparity: 0..1, 1 = near, linear in 1/depth between ``far`` and ``near``;
    depth: 0..1, 0 = near, linear in depth; depth_inverted: 0..1, 1 = near, linear in depth.
    """
    v = torch.as_tensor(values).float()
    if mode == "metric":
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be > 0 (metres per stored unit), got {scale}")
        return v * float(scale)
    if mode not in ("disparity", "depth", "depth_inverted"):
        raise ValueError(f"mode must be one of {', '.join(LOAD_MODES[1:])}, got {mode!r}")
    if near is None or far is None or not (0 < near < far and math.isfinite(far)):
        raise ValueError(f"mode {mode!r} needs 0 < near < far in metres, got near={near}, far={far}")
    v = v.clamp(0.0, 1.0)
    if mode == "disparity":
        return 1.0 / (1.0 / far + v * (1.0 / near - 1.0 / far))
    if mode == "depth":
        return near + v * (far - near)
    return far - v * (far - near)


IMAGE_CHANNELS = ("luminance", "r", "g", "b")


def image_to_depth(image: torch.Tensor, mode: str, near: Optional[float] = None, far: Optional[float] = None,
                   scale: float = 1.0, channel: str = "luminance", value_range: str = "full") -> torch.Tensor:
    """An image that encodes depth (``[B,H,W,C]``, values 0..1) -> metres ``[B,H,W]``.

    ``channel`` picks the values (luminance, r, g or b; single-channel images use their only one);
    ``value_range`` "minmax" stretches each image's own min..max to 0..1 first; then
    ``values_to_depth`` with ``mode``, ``near``, ``far`` and ``scale``.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] < 1:
        raise ValueError(f"image must be an IMAGE [B,H,W,C], got {tuple(getattr(image, 'shape', ()))}")
    if channel not in IMAGE_CHANNELS:
        raise ValueError(f"channel must be luminance, r, g or b, got {channel!r}")
    if value_range not in ("full", "minmax"):
        raise ValueError(f"value_range must be 'full' or 'minmax', got {value_range!r}")
    img = image.float()
    if img.shape[-1] < 3:
        v = img[..., 0]
    elif channel == "luminance":
        v = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    else:
        v = img[..., "rgb".index(channel)]
    if value_range == "minmax":
        lo = v.amin(dim=(1, 2), keepdim=True)
        hi = v.amax(dim=(1, 2), keepdim=True)
        v = (v - lo) / (hi - lo).clamp_min(1e-12)
    return values_to_depth(v, mode, near=near, far=far, scale=scale)


def _gray(arr: np.ndarray, channel: str, path: str) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] == 1:
        return arr[..., 0]
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"{path}: expected a single-channel or RGB depth image, got array shape {arr.shape}")
    rgb = arr[..., :3]
    if channel in ("r", "g", "b"):
        return rgb[..., "rgb".index(channel)]
    if channel == "luminance":
        return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if channel != "auto":
        raise ValueError(f"channel must be auto, r, g, b or luminance, got {channel!r}")
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]
    raise ValueError(f"{path}: the image is coloured (R, G, B differ), probably a colourised preview; a colormap "
                     "cannot be inverted reliably. Load the lossless depth file (.npy/.png16/.tif) instead, or "
                     "pick channel='r'/'g'/'b'/'luminance' if the depth really is stored that way.")


def _read_image(path: str):
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        text = dict(getattr(img, "text", {}) or {})
        desc = img.tag_v2.get(270) if hasattr(img, "tag_v2") else None
        mode = img.mode
        if mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr"):
            img = img.convert("RGB")
        arr = np.array(img)
    meta = None
    raw = text.get(_META_KEY) or desc
    if raw:
        try:
            parsed = json.loads(raw)
            meta = parsed if isinstance(parsed, dict) and parsed.get("format") == "bokehdepth-depth" else None
        except (TypeError, ValueError):
            meta = None
    return arr, mode, meta


def load_depth(path: str, mode: str = "auto", scale: Optional[float] = None, near: Optional[float] = None,
               far: Optional[float] = None, channel: str = "auto", normalize: str = "dtype") -> DepthMap:
    """Read a depth file into a DepthMap (metres).

    Our files (npy/npz/png16/tiff, sidecar JSON next to them) load as saved. Other files need
    ``mode``: ``metric`` (values x ``scale`` metres per unit; float files default to scale 1) or
    ``disparity`` / ``depth`` / ``depth_inverted`` (values normalised to 0..1 by their dtype's
    maximum, or by the image's own min..max with ``normalize="minmax"``, then mapped between
    ``near`` and ``far`` metres). ``auto`` = our metadata, else metric for float data, else an error
    that says which option to set.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"depth file not found: {path}")
    if mode not in LOAD_MODES:
        raise ValueError(f"mode must be one of {', '.join(LOAD_MODES)}, got {mode!r}")
    if normalize not in ("dtype", "minmax"):
        raise ValueError(f"normalize must be 'dtype' or 'minmax', got {normalize!r}")
    ext = os.path.splitext(path)[1].lower()
    name = os.path.basename(path)
    side = _read_sidecar(path)
    conf = intr = None
    meta: dict[str, Any] = {"file": name}
    if ext == ".exr":
        raise ValueError(f"{name}: OpenEXR is not supported (no EXR library installed); convert it to a float "
                         "TIFF or .npy (e.g. with your image editor or Blender's file output) and load that")
    if ext in (".npy", ".npz"):
        arr, conf, intr = _read_numpy(path)
        ours = side is not None
        meta["storage"] = ext[1:]
    else:
        try:
            arr, pil_mode, ours_meta = _read_image(path)
        except OSError as exc:
            raise ValueError(f"{name}: not a readable image or depth file ({exc}); use .npy, .npz, .png or .tif") from exc
        meta["pil_mode"] = pil_mode
        if ours_meta is not None and mode == "auto":
            side = {**(side or {}), **ours_meta}
            arr = np.asarray(arr)
            if ours_meta.get("storage") == "png16":
                depth = _decode_png16(arr, ours_meta, name)
                return _finish(depth, None, _intr_from(side), {**meta, **_pick(side)})
            ours = True
        else:
            ours = False
        arr = _gray(np.asarray(arr), channel, name)
    if ours and mode == "auto":
        depth = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return _finish(depth, conf, intr if intr is not None else _intr_from(side), {**meta, **_pick(side or {})})
    is_float = np.issubdtype(arr.dtype, np.floating)
    if mode == "auto":
        if not is_float:
            kind = "array" if ext in (".npy", ".npz") else "image"
            raise ValueError(
                f"{name}: a plain {arr.dtype.itemsize * 8}-bit integer depth {kind} without BokehDepth metadata; "
                "say how its values map to "
                "metres: mode='metric' with scale = metres per unit (e.g. 0.001 for millimetres, 1/256 for KITTI), "
                "or mode='disparity' (bright = near, e.g. Depth Anything / MiDaS maps) or 'depth' (bright = far) "
                "with near and far in metres")
        mode = "metric"
    values = arr.astype(np.float64)
    if mode == "metric":
        depth = values_to_depth(torch.from_numpy(values), "metric", scale=1.0 if scale is None else scale)
    else:
        if normalize == "minmax":
            fin = values[np.isfinite(values)]
            lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
            values = (values - lo) / (hi - lo if hi > lo else 1.0)
        elif not is_float:
            values = values / float(np.iinfo(arr.dtype).max)
        depth = values_to_depth(torch.from_numpy(values), mode, near, far)
    meta.update({"mode": mode, "scale": scale, "near": near, "far": far, "normalize": normalize})
    return _finish(depth.float(), conf, intr, meta)


def _read_numpy(path: str):
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


def _read_sidecar(path: str) -> Optional[dict]:
    side = sidecar_path(path)
    if not os.path.isfile(side) or os.path.abspath(side) == os.path.abspath(path):
        return None
    try:
        with open(side, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == "bokehdepth-depth" else None


def _pick(side: dict) -> dict:
    keys = ("source", "unit", "storage", "encoding", "near", "far", "meta")
    return {k: side[k] for k in keys if k in side}


def _intr_from(side: Optional[dict]):
    k = (side or {}).get("intrinsics")
    return None if k is None else np.asarray(k, dtype=np.float64)


def _decode_png16(code: np.ndarray, meta: dict, name: str) -> torch.Tensor:
    try:
        near, far, enc = float(meta["near"]), float(meta["far"]), meta.get("encoding", "linear")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name}: BokehDepth PNG metadata lacks near/far ({exc}); re-save it with Save Depth") from exc
    if code.ndim != 2:
        raise ValueError(f"{name}: BokehDepth PNG must be single-channel 16-bit, got shape {code.shape}")
    c = code.astype(np.float64)
    t = (c - 1) / (_PNG_MAX - 1)
    if enc == "linear":
        d = near + t * (far - near)
    elif enc == "inverse":
        d = 1.0 / (1.0 / near + t * (1.0 / far - 1.0 / near))
    else:
        raise ValueError(f"{name}: unknown depth encoding {enc!r} in its metadata (expected linear or inverse)")
    return torch.from_numpy(np.where(c > 0, d, 0.0).astype(np.float32))


def _finish(depth: torch.Tensor, conf, intr, meta: dict) -> DepthMap:
    depth = depth.float()
    if depth.ndim == 2:
        depth = depth[None]
    c = None if conf is None else torch.as_tensor(np.asarray(conf, dtype=np.float32)).reshape(depth.shape)
    k = None if intr is None else torch.as_tensor(np.asarray(intr, dtype=np.float32)).reshape(-1, 3, 3)
    return DepthMap(depth=depth, confidence=c, intrinsics=k, meta=meta)


def describe(dm: DepthMap) -> str:
    """One-line human summary: size, valid fraction and range in metres."""
    d = dm.depth
    ok = valid_mask(d)
    b, h, w = d.shape
    if not ok.any():
        return f"{b}x{w}x{h} depth, no valid pixels"
    v = d[ok]
    return (f"{b} x {w}x{h} depth, {100.0 * ok.float().mean().item():.1f}% valid, "
            f"{v.min().item():.3g}..{v.max().item():.3g} m (median {v.median().item():.3g} m)")
