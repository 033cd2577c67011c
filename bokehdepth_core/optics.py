"""Thin-lens calibration: the bokeh strength ``K``, circles of confusion, depth of field, K lists.

``K`` is the paper's ``dof_cond`` (BokehDepth Eq. 17/25): the circle-of-confusion *radius* in
output pixels per unit of inverse-depth offset, so ``r = K * |1/S1 - 1/S2|`` (Eq. 15/26).
Distances are metres, focal lengths and sensor sizes millimetres, image sizes pixels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Optional, Union

import torch

from .checks import MAX_K_VALUES, k_values, number

FULL_FRAME_DIAGONAL_MM = 43.27  # the authors' constant for a 36x24 mm diagonal
FULL_FRAME_WIDTH_MM = 36.0
K_CONDITION_RANGE = (1.0, 30.0)  # what the Stage-1 adapter was trained on
REFERENCE_WIDTH = 512


def _image_size(width: float, height: float) -> tuple[float, float]:
    return number("width", width, "> 0 pixels"), number("height", height, "> 0 pixels")


# --------------------------------------------------------------------------- sensor and K

def crop_factor(focal_mm: float, focal_35mm: float) -> float:
    """Crop factor of the body: 35 mm-equivalent focal length over the real one."""
    return number("focal_35mm", focal_35mm, "> 0 mm") / number("focal_mm", focal_mm, "> 0 mm")


def sensor_width(width: float, height: float, focal_mm: float, focal_35mm: float) -> float:
    """Sensor width in mm implied by the crop factor and the image aspect (authors' formula)."""
    w, h = _image_size(width, height)
    diag = FULL_FRAME_DIAGONAL_MM / crop_factor(focal_mm, focal_35mm)
    return diag / math.sqrt(1.0 + 1.0 / (w / h) ** 2)


def focal_35mm_from_sensor(focal_mm: float, sensor_width_mm: float, width: float, height: float) -> float:
    """Inverse of :func:`sensor_width`: the 35 mm-equivalent focal length of a known sensor."""
    w, h = _image_size(width, height)
    sw = number("sensor_width_mm", sensor_width_mm, "> 0 mm")
    diag = sw * math.sqrt(1.0 + 1.0 / (w / h) ** 2)
    return number("focal_mm", focal_mm, "> 0 mm") * FULL_FRAME_DIAGONAL_MM / diag


def _check_lens(f_number: float, focal_mm: float, focus_m: float) -> tuple[float, float, float]:
    n = number("f_number", f_number, "> 0 (e.g. 1.4 .. 22)")
    fmm = number("focal_mm", focal_mm, "> 0 mm")
    s1 = number("focus_m", focus_m, "> 0 m")
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
    return float(k) * number("ref_width", ref_width) / number("width", width, "> 0 pixels")


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
    return max(1.0, 30.0 / number("k", k))


def k_from_f_number(f_number: float) -> float:
    """Inverse of :func:`f_number_from_k` (f/1 maps to K = 30, the top of the trained range)."""
    return 30.0 / max(1.0, number("f_number", f_number))


# --------------------------------------------------------------------------- circle of confusion

def coc_diameter_mm(f_number: float, focal_mm: float, focus_m: float, subject_m):
    """Circle-of-confusion diameter on the sensor in mm (Eq. 14): ``f^2/(N(S1-f)) * |S2-S1|/S2``."""
    n, fmm, s1 = _check_lens(f_number, focal_mm, focus_m)
    f = fmm * 1e-3
    s2 = subject_m
    if isinstance(s2, torch.Tensor):
        return (f * f / (n * (s1 - f))) * (s2 - s1).abs() / s2 * 1000.0
    s2 = number("subject_m", s2, "> 0 m")
    return f * f / (n * (s1 - f)) * abs(s2 - s1) / s2 * 1000.0


def blur_radius_px(k: float, focus_m: float, depth_m):
    """Blur radius in output pixels (Eq. 15/26): ``K * |1/S1 - 1/S2|`` for a scalar or a depth tensor."""
    s1 = number("focus_m", focus_m, "> 0 m")
    if isinstance(depth_m, torch.Tensor):
        return float(k) * (1.0 / s1 - 1.0 / depth_m).abs()
    return float(k) * abs(1.0 / s1 - 1.0 / number("depth_m", depth_m, "> 0 m"))


def default_coc_mm(sensor_width_mm: float, aspect: float = 1.5) -> float:
    """Acceptable CoC from the sensor size: diagonal / 1442 (0.03 mm on full frame)."""
    sw = number("sensor_width_mm", sensor_width_mm, "> 0 mm")
    return sw * math.sqrt(1.0 + 1.0 / aspect ** 2) / 1442.0


def dof_limits(f_number: float, focal_mm: float, focus_m: float, coc_mm: float) -> tuple[float, float]:
    """Near and far limits (m) of the depth of field for an acceptable CoC; far is ``inf`` past the
    hyperfocal distance. Exact thin-lens form: points whose Eq. 14 diameter is at most ``coc_mm``."""
    n, fmm, s1 = _check_lens(f_number, focal_mm, focus_m)
    c = number("coc_mm", coc_mm, "> 0 mm") * 1e-3
    f = fmm * 1e-3
    a = f * f / (n * (s1 - f))  # d = a * |S2 - S1| / S2
    near = a * s1 / (a + c)
    far = a * s1 / (a - c) if a > c else math.inf
    return near, far


def foreground_in_focus(f_number: float, focal_mm: float, focus_m: float, foreground_m: float,
                        coc_mm: float) -> bool:
    """The paper's ``foreground_clear`` test (Sec. 8.3): the foreground plane lies inside the DoF."""
    near, far = dof_limits(f_number, focal_mm, focus_m, coc_mm)
    fg = number("foreground_m", foreground_m, "> 0 m")
    return near <= fg <= far


# --------------------------------------------------------------------------- K lists

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_K_MULTIPLE = re.compile(r"^((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)?\*?[kK]$")  # "K", "2K", "0.5*K"


def parse_k_list(text: str, k: Optional[float] = None) -> list[float]:
    """``"10, 20, 30"`` (commas, spaces, semicolons or new lines) -> ``[10.0, 20.0, 30.0]``. With a
    calibrated ``k``, entries may be multiples of it: ``"0.5K, K, 2K"`` -> ``[k/2, k, 2k]``."""
    parts = [p for p in re.split(r"[,\s;]+", str(text or "").strip()) if p]
    values = []
    for p in parts:
        m = _K_MULTIPLE.match(p)
        if m:
            if k is None:
                raise ValueError(f"k_list entry {p!r} is a multiple of K: connect a K (e.g. from Bokeh K from Lens)")
            values.append(float(m.group(1) or 1.0) * number("K", k))
        elif _NUMBER.match(p):
            values.append(float(p))
        else:
            raise ValueError(f"k_list entry {p!r} is not a number: give numbers > 0 such as '10, 20, 30' "
                             "(or multiples of a connected K such as '0.5K, K, 2K')")
    return k_values(values, "k_list")


def k_range(k_min: float, k_max: float, k_step: float) -> list[float]:
    """Inclusive ``k_min .. k_max`` in steps of ``k_step``."""
    lo = number("k_min", k_min)
    hi = number("k_max", k_max)
    step = number("k_step", k_step)
    if hi < lo:
        raise ValueError(f"k_max must be >= k_min, got k_min={k_min}, k_max={k_max}")
    n = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if n > MAX_K_VALUES:
        raise ValueError(f"k_step {k_step} gives {n} values from {lo} to {hi}: at most {MAX_K_VALUES} are allowed")
    return [round(lo + i * step, 6) for i in range(n)]


def k_list(mode: str, text: str = "", k_min: float = 0.0, k_max: float = 0.0, k_step: float = 0.0,
           k: Optional[float] = None) -> list[float]:
    """A K list typed out (``mode="list"``, :func:`parse_k_list`) or ``k_min..k_max`` (``"range"``)."""
    if mode == "list":
        return parse_k_list(text, k)
    if mode == "range":
        return k_range(k_min, k_max, k_step)
    raise ValueError(f"mode must be 'list' or 'range', got {mode!r}")


# --------------------------------------------------------------------------- calibration

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
