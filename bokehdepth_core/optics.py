"""Thin-lens calibration: the bokeh strength ``K`` from lens data or a photo's EXIF.

``K`` is the paper's ``dof_cond`` (BokehDepth Eq. 17/25): the circle-of-confusion *radius* in
output pixels per unit of inverse-depth offset, so ``r = K * |1/S1 - 1/S2|`` (Eq. 15/26).
Distances are metres, focal lengths and sensor sizes millimetres, image sizes pixels.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

FULL_FRAME_DIAGONAL_MM = 43.27  # the authors' constant for a 36x24 mm diagonal
FULL_FRAME_WIDTH_MM = 36.0
K_CONDITION_RANGE = (1.0, 30.0)  # what the Stage-1 adapter was trained on
REFERENCE_WIDTH = 512


def _positive(name: str, value: float, allowed: str = "> 0") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number {allowed}, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return v


def _image_size(width: float, height: float) -> tuple[float, float]:
    return _positive("width", width, "> 0 pixels"), _positive("height", height, "> 0 pixels")


# --------------------------------------------------------------------------- sensor and K

def crop_factor(focal_mm: float, focal_35mm: float) -> float:
    """Crop factor of the body: 35 mm-equivalent focal length over the real one."""
    return _positive("focal_35mm", focal_35mm, "> 0 mm") / _positive("focal_mm", focal_mm, "> 0 mm")


def sensor_width(width: float, height: float, focal_mm: float, focal_35mm: float) -> float:
    """Sensor width in mm implied by the crop factor and the image aspect (authors' formula)."""
    w, h = _image_size(width, height)
    diag = FULL_FRAME_DIAGONAL_MM / crop_factor(focal_mm, focal_35mm)
    return diag / math.sqrt(1.0 + 1.0 / (w / h) ** 2)


def focal_35mm_from_sensor(focal_mm: float, sensor_width_mm: float, width: float, height: float) -> float:
    """Inverse of :func:`sensor_width`: the 35 mm-equivalent focal length of a known sensor."""
    w, h = _image_size(width, height)
    sw = _positive("sensor_width_mm", sensor_width_mm, "> 0 mm")
    diag = sw * math.sqrt(1.0 + 1.0 / (w / h) ** 2)
    return _positive("focal_mm", focal_mm, "> 0 mm") * FULL_FRAME_DIAGONAL_MM / diag


def _check_lens(f_number: float, focal_mm: float, focus_m: float) -> tuple[float, float, float]:
    n = _positive("f_number", f_number, "> 0 (e.g. 1.4 .. 22)")
    fmm = _positive("focal_mm", focal_mm, "> 0 mm")
    s1 = _positive("focus_m", focus_m, "> 0 m")
    if s1 <= fmm / 1000.0:
        raise ValueError(
            f"focus_m must be greater than the focal length ({fmm / 1000.0:.4f} m), got {focus_m!r}: "
            "a thin lens cannot focus closer than its focal length"
        )
    return n, fmm, s1


def calc_dof_cond(f_number: float, focal_mm: float, focal_35mm: float, focus_m: float,
                  width: float, height: float) -> float:
    """The authors' ``K`` at the native image width: ``|f^2 S1 / (2N(S1-f))| * 1000 * W / sensor_width``."""
    n, fmm, s1 = _check_lens(f_number, focal_mm, focus_m)
    w, h = _image_size(width, height)
    f = fmm * 1e-3
    k_mm = abs(f * f * s1 / (2.0 * n * (s1 - f))) * 1000.0
    return k_mm * w / sensor_width(w, h, fmm, focal_35mm)


def dof_cond_at_reference(k: float, width: float, ref_width: float = REFERENCE_WIDTH) -> float:
    """Rescale ``K`` from an image ``width`` pixels wide to ``ref_width`` pixels (blur scales with width)."""
    return float(k) * _positive("ref_width", ref_width) / _positive("width", width, "> 0 pixels")


def dof_cond_crop(k: float, width: float, focal_mm: float, focal_35mm: float,
                  ref_width: float = REFERENCE_WIDTH) -> float:
    """``dof-cond-crop``: the reference-width ``K`` divided by the crop factor (full-frame aligned)."""
    return dof_cond_at_reference(k, width, ref_width) / crop_factor(focal_mm, focal_35mm)


def normalize_k(k: Union[float, torch.Tensor]) -> Union[float, torch.Tensor]:
    """What the Stage-1 adapter consumes: ``clamp(K, 1, 30) / 30``."""
    lo, hi = K_CONDITION_RANGE
    if isinstance(k, torch.Tensor):
        return k.clamp(lo, hi) / hi
    return min(max(float(k), lo), hi) / hi


def f_number_from_k(k: float) -> float:
    """The authors' stack-script mapping from ``K`` to a nominal f-number: ``max(1, 30/K)``."""
    return max(1.0, 30.0 / _positive("k", k))


def k_from_f_number(f_number: float) -> float:
    """Inverse of :func:`f_number_from_k` (f/1 maps to K = 30, the top of the trained range)."""
    return 30.0 / max(1.0, _positive("f_number", f_number))


# --------------------------------------------------------------------------- circle of confusion

def coc_diameter_mm(f_number: float, focal_mm: float, focus_m: float, subject_m):
    """Circle-of-confusion diameter on the sensor in mm (Eq. 14): ``f^2/(N(S1-f)) * |S2-S1|/S2``."""
    n, fmm, s1 = _check_lens(f_number, focal_mm, focus_m)
    f = fmm * 1e-3
    s2 = subject_m
    if isinstance(s2, torch.Tensor):
        return (f * f / (n * (s1 - f))) * (s2 - s1).abs() / s2 * 1000.0
    s2 = _positive("subject_m", s2, "> 0 m")
    return f * f / (n * (s1 - f)) * abs(s2 - s1) / s2 * 1000.0


def blur_radius_px(k: float, focus_m: float, depth_m):
    """Blur radius in output pixels (Eq. 15/26): ``K * |1/S1 - 1/S2|`` for a scalar or a depth tensor."""
    s1 = _positive("focus_m", focus_m, "> 0 m")
    if isinstance(depth_m, torch.Tensor):
        return float(k) * (1.0 / s1 - 1.0 / depth_m).abs()
    return float(k) * abs(1.0 / s1 - 1.0 / _positive("depth_m", depth_m, "> 0 m"))


def default_coc_mm(sensor_width_mm: float, aspect: float = 1.5) -> float:
    """Acceptable CoC from the sensor size: diagonal / 1442 (0.03 mm on full frame)."""
    sw = _positive("sensor_width_mm", sensor_width_mm, "> 0 mm")
    return sw * math.sqrt(1.0 + 1.0 / aspect ** 2) / 1442.0


def dof_limits(f_number: float, focal_mm: float, focus_m: float, coc_mm: float) -> tuple[float, float]:
    """Near and far limits (m) of the depth of field for an acceptable CoC; far is ``inf`` past the
    hyperfocal distance. Exact thin-lens form: points whose Eq. 14 diameter is at most ``coc_mm``."""
    n, fmm, s1 = _check_lens(f_number, focal_mm, focus_m)
    c = _positive("coc_mm", coc_mm, "> 0 mm") * 1e-3
    f = fmm * 1e-3
    a = f * f / (n * (s1 - f))  # d = a * |S2 - S1| / S2
    near = a * s1 / (a + c)
    far = a * s1 / (a - c) if a > c else math.inf
    return near, far


def foreground_in_focus(f_number: float, focal_mm: float, focus_m: float, foreground_m: float,
                        coc_mm: float) -> bool:
    """The paper's ``foreground_clear`` test (Sec. 8.3): the foreground plane lies inside the DoF."""
    near, far = dof_limits(f_number, focal_mm, focus_m, coc_mm)
    fg = _positive("foreground_m", foreground_m, "> 0 m")
    return near <= fg <= far


# --------------------------------------------------------------------------- focus from depth

def focus_from_mask(depth: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Focus distance per batch item: median depth over a (salient / foreground) mask. ``[B]``."""
    if depth.ndim == 2:
        depth = depth.unsqueeze(0)
    if mask is None:
        mask = torch.ones_like(depth, dtype=torch.bool)
    mask = mask.reshape(depth.shape).bool() & torch.isfinite(depth) & (depth > 0)
    out = []
    for d, m in zip(depth, mask):
        if not bool(m.any()):
            raise ValueError("mask selects no valid depth pixel: cannot estimate the focus distance")
        out.append(d[m].median())
    return torch.stack(out)


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(values)
    v, w = values[order], weights[order]
    cdf = torch.cumsum(w, 0)
    idx = torch.searchsorted(cdf, cdf[-1] * 0.5)
    return v[idx.clamp(max=v.numel() - 1)]


def focus_from_edges(depth: torch.Tensor, image: torch.Tensor, edge_quantile: float = 0.9) -> torch.Tensor:
    """Focus distance from the sharp image's high-frequency edges (Sec. 8.3, Aperture recipe):
    the gradient-magnitude-weighted median of depth over pixels whose gradient is in the top
    ``1 - edge_quantile``. ``depth [B,H,W]``, ``image [B,H,W,3]`` of the same size. Returns ``[B]``."""
    if depth.ndim == 2:
        depth = depth.unsqueeze(0)
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if tuple(image.shape[:3]) != tuple(depth.shape):
        raise ValueError(f"image {tuple(image.shape)} and depth {tuple(depth.shape)} must share [B,H,W]")
    lum = (image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114).unsqueeze(1)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=lum.dtype)
    gx = torch.nn.functional.conv2d(torch.nn.functional.pad(lum, (1, 1, 1, 1), mode="replicate"), kx.view(1, 1, 3, 3))
    gy = torch.nn.functional.conv2d(torch.nn.functional.pad(lum, (1, 1, 1, 1), mode="replicate"), kx.t().reshape(1, 1, 3, 3))
    grad = torch.sqrt(gx * gx + gy * gy)[:, 0]
    out = []
    for d, g in zip(depth, grad):
        valid = torch.isfinite(d) & (d > 0)
        if not bool(valid.any()):
            raise ValueError("depth has no valid pixel: cannot estimate the focus distance")
        gv = g[valid]
        thr = torch.quantile(gv, edge_quantile) if gv.numel() > 1 else gv.min()
        keep = valid & (g >= thr) & (g > 0)
        if not bool(keep.any()):  # textureless image: fall back to the plain median
            out.append(d[valid].median())
            continue
        out.append(_weighted_median(d[keep], g[keep]))
    return torch.stack(out)


# --------------------------------------------------------------------------- K lists

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_k_list(text: str) -> list[float]:
    """``"10, 20, 30"`` (commas, spaces, semicolons or new lines) -> ``[10.0, 20.0, 30.0]``."""
    if text is None:
        raise ValueError("k_list is empty: give numbers such as '10, 20, 30'")
    parts = [p for p in re.split(r"[,\s;]+", str(text).strip()) if p]
    if not parts:
        raise ValueError("k_list is empty: give numbers such as '10, 20, 30'")
    values = []
    for p in parts:
        if not _NUMBER.match(p):
            raise ValueError(f"k_list entry {p!r} is not a number: give numbers > 0 such as '10, 20, 30'")
        v = float(p)
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"k_list entry {p!r} must be > 0 (K is a blur strength in px*m)")
        values.append(v)
    return values


def k_range(k_min: float, k_max: float, k_step: float) -> list[float]:
    """Inclusive ``k_min .. k_max`` in steps of ``k_step``."""
    lo = _positive("k_min", k_min)
    hi = _positive("k_max", k_max)
    step = _positive("k_step", k_step)
    if hi < lo:
        raise ValueError(f"k_max must be >= k_min, got k_min={k_min}, k_max={k_max}")
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if n > 256:
        raise ValueError(f"k_step {k_step} gives {n} values from {lo} to {hi}: at most 256 are allowed")
    return [round(lo + i * step, 6) for i in range(n)]


# --------------------------------------------------------------------------- EXIF

# Common bodies and phones (sensor width in mm), matched case-insensitively against Make + Model.
SENSOR_WIDTHS_MM: dict[str, float] = {
    "canon eos 5d": 36.0, "canon eos 6d": 35.8, "canon eos r5": 36.0, "canon eos r6": 35.9,
    "canon eos r ": 36.0, "canon eos 1d x": 36.0, "canon eos 90d": 22.3, "canon eos 80d": 22.3,
    "canon eos 7d": 22.3, "canon eos r7": 22.3, "canon eos r10": 22.3, "canon eos rebel": 22.3,
    "nikon z 6": 35.9, "nikon z 7": 35.9, "nikon z 8": 35.9, "nikon z 9": 35.9, "nikon d850": 35.9,
    "nikon d750": 35.9, "nikon d7500": 23.5, "nikon z 50": 23.5, "nikon z fc": 23.5,
    "sony ilce-7": 35.9, "sony ilce-9": 35.6, "sony ilce-1": 35.9, "sony ilce-6": 23.5,
    "fujifilm x-t": 23.5, "fujifilm x-s": 23.5, "fujifilm x100": 23.5, "fujifilm gfx": 43.8,
    "olympus": 17.3, "om digital": 17.3, "panasonic dc-g": 17.3, "panasonic dc-s": 35.6,
    "leica q": 36.0, "leica m": 35.8, "sony dsc-rx100": 13.2, "gopro": 6.17,
    "apple iphone": 7.6, "google pixel": 8.2, "samsung sm-s": 9.8,
}


@dataclass
class LensInfo:
    """Lens data of one photo, with where each value came from."""

    width: int
    height: int
    f_number: Optional[float] = None
    focal_mm: Optional[float] = None
    focal_35mm: Optional[float] = None
    focus_m: Optional[float] = None
    sensor_width_mm: Optional[float] = None
    focal_plane_x_resolution: Optional[float] = None
    focal_plane_resolution_unit: Optional[int] = None
    camera_model: Optional[str] = None
    read: list[str] = field(default_factory=list)
    estimated: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.width}x{self.height}"]
        if self.camera_model:
            parts.append(self.camera_model)
        for name in ("f_number", "focal_mm", "focal_35mm", "focus_m", "sensor_width_mm"):
            v = getattr(self, name)
            if v is not None:
                tag = " (estimated)" if name in self.estimated else ""
                parts.append(f"{name}={v:.4g}{tag}")
        if self.missing:
            parts.append("missing: " + ", ".join(self.missing))
        return "; ".join(parts)


_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit: inch, cm, mm, um


def _ratio(v: Any) -> Optional[float]:
    if v is None:
        return None
    try:
        if isinstance(v, tuple) and len(v) == 2:
            return float(v[0]) / float(v[1]) if float(v[1]) else None
        f = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if math.isfinite(f) else None


def _table_sensor_width(model: Optional[str]) -> Optional[float]:
    if not model:
        return None
    key = " ".join(model.lower().split()) + " "
    best = None
    for name, w in SENSOR_WIDTHS_MM.items():
        if name in key and (best is None or len(name) > len(best[0])):
            best = (name, w)
    return best[1] if best else None


def read_lens_exif(source: Union[str, os.PathLike, "Image.Image"]) -> LensInfo:  # noqa: F821
    """Read f-number, focal lengths, focus distance, focal-plane resolution, size and model.

    Sensor width falls back in order: focal-plane resolution -> focal_mm/focal_35mm -> the
    :data:`SENSOR_WIDTHS_MM` table. Values derived that way are listed in ``estimated``; values no
    route could give are in ``missing`` (``focus_m`` is often absent: photos seldom record it).
    """
    from PIL import ExifTags, Image

    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise ValueError(f"image file not found: {os.fspath(source)!r}")
        with Image.open(source) as img:
            img.load()
            return read_lens_exif(img)
    img = source
    exif = img.getexif()
    sub = exif.get_ifd(ExifTags.IFD.Exif) if exif else {}
    tags = {**dict(exif), **dict(sub)}
    T = ExifTags.Base
    orientation = tags.get(T.Orientation, 1)
    width, height = img.size
    if orientation in (5, 6, 7, 8):  # the pixels are shown rotated by 90 degrees
        width, height = height, width
    info = LensInfo(width=width, height=height)
    make, model = (str(tags.get(t) or "").strip(" \x00") for t in (T.Make, T.Model))
    if model:
        # Models such as "ILCE-7M3" lack the maker's name that the sensor table matches on.
        first = make.lower().split()[0] if make else ""
        info.camera_model = model if model.lower().startswith(first) else f"{make} {model}"
        info.read.append("camera_model")

    fn = _ratio(tags.get(T.FNumber))
    if fn and fn > 0:
        info.f_number = fn
        info.read.append("f_number")
    else:
        av = _ratio(tags.get(T.ApertureValue))
        if av is not None:
            info.f_number = 2.0 ** (av / 2.0)
            info.estimated["f_number"] = "from ApertureValue (APEX)"
    fl = _ratio(tags.get(T.FocalLength))
    if fl and fl > 0:
        info.focal_mm = fl
        info.read.append("focal_mm")
    f35 = _ratio(tags.get(T.FocalLengthIn35mmFilm))
    if f35 and f35 > 0:
        info.focal_35mm = f35
        info.read.append("focal_35mm")
    sd = _ratio(tags.get(T.SubjectDistance))
    if sd and 0 < sd < 1e6:  # 0 means unknown, 0xFFFFFFFF/1 infinity
        info.focus_m = sd
        info.read.append("focus_m")

    fpx = _ratio(tags.get(T.FocalPlaneXResolution))
    unit = tags.get(T.FocalPlaneResolutionUnit)
    if fpx:
        info.focal_plane_x_resolution = fpx
        info.read.append("focal_plane_x_resolution")
    if unit is not None:
        info.focal_plane_resolution_unit = int(unit)
        info.read.append("focal_plane_resolution_unit")

    # Sensor width, most direct route first.
    pixel_x = _ratio(tags.get(T.ExifImageWidth)) or float(img.size[0])
    if fpx and fpx > 0 and int(unit or 2) in _UNIT_MM:
        info.sensor_width_mm = pixel_x / fpx * _UNIT_MM[int(unit or 2)]
        info.estimated["sensor_width_mm"] = "from focal-plane resolution"
    elif info.focal_mm and info.focal_35mm:
        info.sensor_width_mm = sensor_width(width, height, info.focal_mm, info.focal_35mm)
        info.estimated["sensor_width_mm"] = "from focal_mm / focal_35mm"
    else:
        sw = _table_sensor_width(info.camera_model)
        if sw is not None:
            info.sensor_width_mm = sw
            info.estimated["sensor_width_mm"] = f"from the sensor table ({info.camera_model})"

    if info.focal_35mm is None and info.focal_mm and info.sensor_width_mm:
        info.focal_35mm = focal_35mm_from_sensor(info.focal_mm, info.sensor_width_mm, width, height)
        info.estimated["focal_35mm"] = "from focal_mm and the sensor width"

    for name in ("f_number", "focal_mm", "focal_35mm", "focus_m", "sensor_width_mm"):
        if getattr(info, name) is None:
            info.missing.append(name)
    return info


@dataclass
class Calibration:
    """``K`` at the native width, at 512 px, crop-corrected, and the lens data it came from."""

    k: float
    k_512: float
    k_crop: float
    f_number: float
    focal_mm: float
    focal_35mm: float
    focus_m: float
    width: int
    height: int
    sensor_width_mm: float
    estimated: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        est = f"; estimated: {', '.join(f'{k} ({v})' for k, v in self.estimated.items())}" if self.estimated else ""
        return (
            f"K = {self.k:.3f} px*m at {self.width}x{self.height} (K@512 = {self.k_512:.3f}, "
            f"crop-corrected = {self.k_crop:.3f}); f/{self.f_number:.3g}, {self.focal_mm:.4g} mm "
            f"({self.focal_35mm:.4g} mm equiv., sensor {self.sensor_width_mm:.3g} mm), focus {self.focus_m:.3g} m; "
            f"blur radius {self.k * 0.5 / self.focus_m:.2f} px at twice the focus distance{est}"
        )


def calibrate(f_number: float, focal_mm: float, focal_35mm: float, focus_m: float,
              width: int, height: int, estimated: Optional[dict[str, str]] = None) -> Calibration:
    """All calibration outputs for one lens setting."""
    k = calc_dof_cond(f_number, focal_mm, focal_35mm, focus_m, width, height)
    return Calibration(
        k=k,
        k_512=dof_cond_at_reference(k, width),
        k_crop=dof_cond_crop(k, width, focal_mm, focal_35mm),
        f_number=float(f_number), focal_mm=float(focal_mm), focal_35mm=float(focal_35mm),
        focus_m=float(focus_m), width=int(width), height=int(height),
        sensor_width_mm=sensor_width(width, height, focal_mm, focal_35mm),
        estimated=dict(estimated or {}),
    )


def calibrate_from_exif(info: LensInfo, f_number: Optional[float] = None, focal_mm: Optional[float] = None,
                        focal_35mm: Optional[float] = None, focus_m: Optional[float] = None,
                        sensor_width_mm: Optional[float] = None) -> Calibration:
    """Calibrate a photo from its :class:`LensInfo`; non-None overrides win over EXIF values."""
    estimated = dict(info.estimated)
    vals = {
        "f_number": info.f_number, "focal_mm": info.focal_mm, "focal_35mm": info.focal_35mm,
        "focus_m": info.focus_m, "sensor_width_mm": info.sensor_width_mm,
    }
    for name, override in (("f_number", f_number), ("focal_mm", focal_mm), ("focal_35mm", focal_35mm),
                           ("focus_m", focus_m), ("sensor_width_mm", sensor_width_mm)):
        if override is not None:
            vals[name] = float(override)
            estimated.pop(name, None)
            estimated[name] = "given by the user"
    if vals["focal_35mm"] is None and vals["focal_mm"] and vals["sensor_width_mm"]:
        vals["focal_35mm"] = focal_35mm_from_sensor(vals["focal_mm"], vals["sensor_width_mm"], info.width, info.height)
        estimated["focal_35mm"] = "from focal_mm and the sensor width"
    elif sensor_width_mm is not None and vals["focal_mm"]:
        vals["focal_35mm"] = focal_35mm_from_sensor(vals["focal_mm"], vals["sensor_width_mm"], info.width, info.height)
        estimated["focal_35mm"] = "from focal_mm and the given sensor width"
    hints = {
        "f_number": "set f_number (the aperture, e.g. 1.8)",
        "focal_mm": "set focal_length_mm (the lens focal length)",
        "focal_35mm": "set focal_length_35mm or sensor_width_mm",
        "focus_m": "set focus_distance_m (EXIF seldom records it; estimate it from a depth map)",
    }
    for name, hint in hints.items():
        if vals[name] is None:
            raise ValueError(f"EXIF lacks {name} and no override was given: {hint}")
    return calibrate(vals["f_number"], vals["focal_mm"], vals["focal_35mm"], vals["focus_m"],
                     info.width, info.height, estimated)
