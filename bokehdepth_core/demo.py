"""The README's main job: an offline run on a built-in example, no weights, no downloads."""

from __future__ import annotations

import json
import os

from . import optics

# A portrait lens on full frame and a phone main camera, both at a typical subject distance.
EXAMPLE_LENSES = (
    {"name": "85mm f/1.8 full frame", "f_number": 1.8, "focal_mm": 85.0, "focal_35mm": 85.0, "focus_m": 2.0},
    {"name": "phone 6.9mm f/1.8", "f_number": 1.8, "focal_mm": 6.9, "focal_35mm": 24.0, "focus_m": 1.0},
)


def calibration_report(width: int, height: int) -> list[dict]:
    rows = []
    for lens in EXAMPLE_LENSES:
        cal = optics.calibrate(lens["f_number"], lens["focal_mm"], lens["focal_35mm"], lens["focus_m"], width, height)
        rows.append({"lens": lens["name"], **cal.__dict__, "summary": cal.summary(),
                     "stage1_condition": optics.normalize_k(cal.k_512)})
    return rows


def run_demo(out_dir: str, seed: int = 0, size: int = 256) -> str:
    os.makedirs(out_dir, exist_ok=True)
    report = {"calibration": calibration_report(size, size)}
    path = os.path.join(out_dir, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    for row in report["calibration"]:
        print(f"{row['lens']}: {row['summary']}")
    return path
