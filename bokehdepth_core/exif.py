"""A photo's lens data from its EXIF: f-number, focal lengths, focus distance and sensor width.

Values a photo does not record are estimated where a route exists (sensor width from the
focal-plane resolution, from the two focal lengths, or from a table of common bodies) and every
estimate says where it came from. A tag outside :data:`PLAUSIBLE` (f/1e-6, a 1e9 mm sensor, an
infinite distance) or of the wrong type counts as missing and leaves a warning naming it; 0, which
EXIF uses for "unknown", counts as missing silently. :func:`calibrate_from_exif` turns the result
into ``K``, values the user gives taking precedence over tags.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from PIL import ExifTags, Image

from .images import PathLike, open_image, to_tensor
from .optics import Calibration, calibrate, focal_35mm_from_sensor, sensor_width

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
    warnings: dict[str, str] = field(default_factory=dict)  # value name -> why its tag was ignored

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
        parts += [f"ignored {w}" for w in self.warnings.values()]
        return "; ".join(parts)


_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit: inch, cm, mm, um
T = ExifTags.Base
# Plausible lens values (inclusive): a tag outside its range is ignored with a warning.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "f_number": (0.5, 300.0), "focal_mm": (0.5, 10000.0), "focal_35mm": (4.0, 30000.0),
    "focus_m": (0.005, 1e5), "sensor_width_mm": (1.0, 300.0),
}
_LENS_TAGS = ((T.FNumber, "f_number"), (T.FocalLength, "focal_mm"), (T.FocalLengthIn35mmFilm, "focal_35mm"),
              (T.SubjectDistance, "focus_m"))


def _ratio(v: Any) -> Optional[float]:
    """A tag's number, or None when it is absent, not a number or not finite."""
    if v is None:
        return None
    try:
        if isinstance(v, tuple) and len(v) == 2:
            return float(v[0]) / float(v[1]) if float(v[1]) else None
        f = float(v)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _plausible(info: "LensInfo", name: str, value: Optional[float], tag: str) -> Optional[float]:
    """``value`` when it lies in :data:`PLAUSIBLE`; otherwise None, with a warning (0 = unknown: none)."""
    if value is None or value == 0:
        return None
    lo, hi = PLAUSIBLE[name]
    if lo <= value <= hi:
        return value
    info.warnings.setdefault(name, f"{tag} = {value:.4g} (implausible for {name}: expected {lo:g}..{hi:g})")
    return None


def _table_sensor_width(model: Optional[str]) -> Optional[float]:
    if not model:
        return None
    key = " ".join(model.lower().split()) + " "
    best = None
    for name, w in SENSOR_WIDTHS_MM.items():
        if name in key and (best is None or len(name) > len(best[0])):
            best = (name, w)
    return best[1] if best else None


def read_lens_exif(source: Union[PathLike, Image.Image]) -> LensInfo:
    """Read f-number, focal lengths, focus distance, focal-plane resolution, size and model.

    Sensor width falls back in order: focal-plane resolution -> focal_mm/focal_35mm -> the
    :data:`SENSOR_WIDTHS_MM` table. Values derived that way are listed in ``estimated``; values no
    route could give are in ``missing`` (``focus_m`` is often absent: photos seldom record it).
    """
    if not isinstance(source, Image.Image):
        with open_image(source) as img:
            return read_lens_exif(img)
    img = source
    damaged = False
    with warnings.catch_warnings(record=True) as noted:  # Pillow warns about damaged EXIF blocks
        warnings.simplefilter("always")
        try:
            exif = img.getexif()
            tags = {**dict(exif), **dict(exif.get_ifd(ExifTags.IFD.Exif) if exif else {})}
        except Exception:  # noqa: BLE001 - its parser raises many kinds for damaged blocks
            tags, damaged = {}, True
    damaged = damaged or bool(noted)
    orientation = tags.get(T.Orientation, 1)
    width, height = img.size
    if orientation in (5, 6, 7, 8):  # the pixels are shown rotated by 90 degrees
        width, height = height, width
    info = LensInfo(width=width, height=height)
    if damaged:
        info.warnings["exif_block"] = "block (damaged: only its readable tags were used)"
    make, model = (str(tags.get(t) or "").strip(" \x00") for t in (T.Make, T.Model))
    if model:
        # Models such as "ILCE-7M3" lack the maker's name that the sensor table matches on.
        first = make.lower().split()[0] if make else ""
        info.camera_model = model if model.lower().startswith(first) else f"{make} {model}"
        info.read.append("camera_model")

    for tag, name in _LENS_TAGS:
        v = _plausible(info, name, _ratio(tags.get(tag)), T(tag).name)
        if v is not None:
            setattr(info, name, v)
            info.read.append(name)
    if info.f_number is None:
        av = _ratio(tags.get(T.ApertureValue))
        f = _plausible(info, "f_number", None if av is None else 2.0 ** (math.copysign(min(abs(av), 64.0), av) / 2),
                       "ApertureValue (APEX)")
        if f is not None:
            info.f_number = f
            info.estimated["f_number"] = "from ApertureValue (APEX)"

    fpx = _ratio(tags.get(T.FocalPlaneXResolution))
    unit = _ratio(tags.get(T.FocalPlaneResolutionUnit))
    unit = int(unit) if unit is not None and unit == int(unit) else None
    if fpx and fpx > 0:
        info.focal_plane_x_resolution = fpx
        info.read.append("focal_plane_x_resolution")
    if unit is not None:
        info.focal_plane_resolution_unit = unit
        info.read.append("focal_plane_resolution_unit")

    # Sensor width, most direct route first; an implausible result falls through to the next route.
    pixel_x = _ratio(tags.get(T.ExifImageWidth))
    pixel_x = pixel_x if pixel_x and pixel_x > 0 else float(img.size[0])
    routes = []
    if fpx and fpx > 0 and (unit or 2) in _UNIT_MM:
        routes.append((lambda: pixel_x / fpx * _UNIT_MM[unit or 2], "from focal-plane resolution",
                       "FocalPlaneXResolution"))
    if info.focal_mm and info.focal_35mm:
        routes.append((lambda: sensor_width(width, height, info.focal_mm, info.focal_35mm),
                       "from focal_mm / focal_35mm", "FocalLength / FocalLengthIn35mmFilm"))
    routes.append((lambda: _table_sensor_width(info.camera_model), f"from the sensor table ({info.camera_model})",
                   "the sensor table"))
    for width_of, how, tag in routes:
        sw = _plausible(info, "sensor_width_mm", width_of(), tag)
        if sw is not None:
            info.sensor_width_mm = sw
            info.estimated["sensor_width_mm"] = how
            break

    if info.focal_35mm is None and info.focal_mm and info.sensor_width_mm:
        f35 = _plausible(info, "focal_35mm", focal_35mm_from_sensor(info.focal_mm, info.sensor_width_mm, width, height),
                         "focal_mm and the sensor width")
        if f35 is not None:
            info.focal_35mm = f35
            info.estimated["focal_35mm"] = "from focal_mm and the sensor width"

    for name in ("f_number", "focal_mm", "focal_35mm", "focus_m", "sensor_width_mm"):
        if getattr(info, name) is None:
            info.missing.append(name)
    return info


def read_photo(path: PathLike) -> tuple[LensInfo, torch.Tensor]:
    """A photo file's lens data and its pixels ``[1,H,W,3]`` (upright by its EXIF orientation)."""
    with open_image(path) as img:
        return read_lens_exif(img), to_tensor(img)


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
    for name, why in info.warnings.items():  # say which tags were ignored, beside what was used instead
        estimated[name] = f"{estimated[name]}; ignored EXIF {why}" if name in estimated else f"ignored EXIF {why}"
    hints = {
        "f_number": "set f_number (the aperture, e.g. 1.8)",
        "focal_mm": "set focal_length_mm (the lens focal length)",
        "focal_35mm": "set focal_length_35mm or sensor_width_mm",
        "focus_m": "set focus_distance_m (EXIF seldom records it; estimate it from a depth map)",
    }
    for name, hint in hints.items():
        if vals[name] is None:
            why = f" (ignored {info.warnings[name]})" if name in info.warnings else ""
            raise ValueError(f"EXIF lacks {name}{why} and no override was given: {hint}")
    return calibrate(vals["f_number"], vals["focal_mm"], vals["focal_35mm"], vals["focus_m"],
                     info.width, info.height, estimated)
