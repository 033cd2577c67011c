"""``bench render``: thin-lens renders of a synthetic scene, radii up to 30 px."""

from __future__ import annotations

import time

import torch

from ..render import render_bokeh
from ..synthetic import make_scene
from . import device_of, peak_memory_mb, sync


def run(args) -> dict:
    """``size`` x ``size`` renders, focus on the subject (background blurred) and focus between
    subject and background (both blurred)."""
    size = int(getattr(args, "size", None) or 1024)
    device = device_of(args)
    repeat = max(1, int(getattr(args, "repeat", 3) or 3))
    scene = make_scene(seed=0, size=size)
    img = scene.image.to(device)
    disp = scene.disparity.to(device)
    fg = scene.alpha.to(device) >= 0.5
    cases = {"focus on subject": float(scene.focus_disparity),
             "focus between subject and background": 0.5 * (float(disp[fg].min()) + float(disp[~fg].max()))}
    results = []
    for name, fd in cases.items():
        k = 30.0 / float((disp - fd).abs().max())  # the most defocused pixel gets a 30 px radius
        render_bokeh(img, disp, k, fd)  # warm-up (FFT plans, allocator)
        walls, cpus = [], []
        for _ in range(repeat):
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            render_bokeh(img, disp, k, fd)
            sync(device)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        row = {"case": name, "size": size, "device": str(device), "threads": torch.get_num_threads(),
               "max_radius_px": 30.0, "seconds_best": min(walls), "seconds_mean": sum(walls) / repeat,
               "cpu_seconds_best": min(cpus), "repeat": repeat}
        row["peak_memory"], row["peak_memory_mb"] = peak_memory_mb(device)  # process peak so far (RSS on CPU)
        results.append(row)
        print(f"render {size}x{size}, radii up to 30 px, {name}, {device} ({row['threads']} threads): "
              f"best {row['seconds_best']:.2f} s wall, mean {row['seconds_mean']:.2f} s "
              f"(process CPU {row['cpu_seconds_best']:.2f} s) over {repeat} runs; peak memory "
              f"{row['peak_memory_mb']:.0f} MiB ({row['peak_memory']})")
    return {"target": "render", "results": results}
