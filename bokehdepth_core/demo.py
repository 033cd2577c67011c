"""The README's main job: an offline run on a built-in example, no weights, no downloads.

Synthetic scene -> bokeh stack (thin-lens renderer) -> depth from the bokeh sweep -> metrics,
written as PNGs and ``report.json`` (with the lens calibration examples).
"""

from __future__ import annotations

import json
import os
import time

import torch

from . import dfb, metrics, optics, render, synthetic
from .checks import integer
from .depth_io import colorize
from .depth_io.metadata import json_safe
from .images import save_rgb

# A portrait lens on full frame and a phone main camera, both at a typical subject distance.
EXAMPLE_LENSES = (
    {"name": "85mm f/1.8 full frame", "f_number": 1.8, "focal_mm": 85.0, "focal_35mm": 85.0, "focus_m": 2.0},
    {"name": "phone 6.9mm f/1.8", "f_number": 1.8, "focal_mm": 6.9, "focal_35mm": 24.0, "focus_m": 1.0},
)
STACK_FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # of the scene's strongest K (its f/1.4 equivalent)


def calibration_report(width: int, height: int) -> list[dict]:
    rows = []
    for lens in EXAMPLE_LENSES:
        cal = optics.calibrate(lens["f_number"], lens["focal_mm"], lens["focal_35mm"], lens["focus_m"], width, height)
        rows.append({"lens": lens["name"], **cal.__dict__, "summary": cal.summary(),
                     "stage1_condition": optics.normalize_k(cal.k_512)})
    return rows


def _depth_png(path: str, depth: torch.Tensor, near: float, far: float) -> None:
    save_rgb(path, colorize(depth, mode="fixed", near=near, far=far)[0])


def physics_demo(out_dir: str, seed: int = 0, size: int = 256) -> dict:
    """Run the weight-free pipeline on one synthetic scene; write PNGs; return the report."""
    t0 = time.perf_counter()
    scene = synthetic.make_scene(seed, size)
    k_max = scene.meta["k_range"][1]
    ks = [k_max * f for f in STACK_FRACTIONS]
    t = time.perf_counter()
    frames = render.bokeh_stack(scene.image, scene.disparity, ks, scene.focus_disparity)
    t_render = time.perf_counter() - t
    t = time.perf_counter()
    res = dfb.depth_from_bokeh_sweep(scene.image, frames, ks, scene.focus_m, side="behind")
    t_dfb = time.perf_counter() - t

    gt = scene.depth
    conf = res["confidence"]
    confident = conf > 0.5
    true_delta = (scene.focus_disparity - scene.disparity).abs()
    # The acceptance regime: confident pixels whose strongest blur is 2..20 px.
    regime = confident & (true_delta * ks[-1] >= 2) & (true_delta * ks[-1] <= 20)
    rel = (res["delta"] - true_delta).abs() / true_delta.clamp_min(1e-9)
    report = {
        "scene": {"seed": seed, "size": size, "focus_m": scene.focus_m, "focus_disparity": scene.focus_disparity,
                  "depth_range_m": [float(gt.min()), float(gt.max())], **scene.meta},
        "stack": {"k_values": ks, "f_numbers": [synthetic.f_number_for_k(k, k_max) for k in ks],
                  "max_radius_px": float(true_delta.max() * ks[-1]), "render_seconds": t_render,
                  "frames_vs_all_in_focus": [metrics.image_metrics(frames[:, i], scene.image) for i in range(len(ks))]},
        "depth_from_bokeh": {
            "seconds": t_dfb,
            "confident_fraction": float(confident.float().mean()),
            "delta_median_rel_error_confident_2_20px": float(rel[regime].median()) if bool(regime.any()) else None,
            "pixels_in_that_regime": int(regime.sum()),
            "linearity_overall": float(res["linearity_overall"][0]),
            "k_consistency": [float(v) for v in res["k_consistency"][0]],
            "linearity_report": dfb.linearity_report(res),
            "depth_metrics_all": metrics.depth_metrics(res["depth"], gt),
            "depth_metrics_confident": metrics.depth_metrics(res["depth"], gt, confident) if bool(confident.any()) else None,
        },
    }
    near, far = float(gt.min()), float(gt.max())
    save_rgb(os.path.join(out_dir, "all_in_focus.png"), scene.image[0])
    for i, k in enumerate(ks):
        save_rgb(os.path.join(out_dir, f"bokeh_{i}_K{k:.1f}.png"), frames[0, i])
    _depth_png(os.path.join(out_dir, "depth_ground_truth.png"), gt, near, far)
    _depth_png(os.path.join(out_dir, "depth_from_bokeh.png"), res["depth"].clamp(near, far), near, far)
    save_rgb(os.path.join(out_dir, "confidence.png"), conf[0].unsqueeze(-1).expand(-1, -1, 3))
    report["files"] = sorted(f for f in os.listdir(out_dir) if f.endswith(".png"))
    report["seconds_total"] = time.perf_counter() - t0
    return report


def run_demo(out_dir: str, seed: int = 0, size: int = 256) -> str:
    size = integer("size", size, 32, 4096)
    os.makedirs(out_dir, exist_ok=True)
    report = {"calibration": calibration_report(size, size)}
    for row in report["calibration"]:
        print(f"{row['lens']}: {row['summary']}")
    report["physics"] = physics_demo(out_dir, seed=seed, size=size)
    p = report["physics"]
    d = p["depth_from_bokeh"]
    print(f"synthetic scene {size}x{size} (seed {seed}), focus {p['scene']['focus_m']:.2f} m; "
          f"bokeh stack K = {', '.join(f'{k:.1f}' for k in p['stack']['k_values'])} rendered in {p['stack']['render_seconds']:.2f} s")
    print(d["linearity_report"])
    err = d["delta_median_rel_error_confident_2_20px"]
    print(f"depth from bokeh: {100 * d['confident_fraction']:.0f}% confident pixels; median relative error of "
          f"the inverse-depth offset there (2..20 px blur) {'n/a' if err is None else f'{100 * err:.1f}%'}")
    if d["depth_metrics_confident"]:
        print("depth metrics on confident pixels: " + metrics.format_depth_metrics(d["depth_metrics_confident"]))
    path = os.path.join(out_dir, "report.json")
    with open(path, "w") as f:
        json.dump(json_safe(report), f, indent=2)
    return path
