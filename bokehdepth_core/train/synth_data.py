"""``synth --train``: a ready-to-train set from procedural scenes (or user foreground/background
folders), no download needed.

Per scene: the all-in-focus image, metric depth (.npy, metres), a bokeh stack rendered with the
thin-lens renderer at the scene's K values, optionally a focus stack (fixed aperture, focus swept
uniformly in disparity), and the pinhole intrinsics. ``manifest.jsonl`` lists them in the release's
manifest format (``ref``, ``depth``, ``stack``, ``k``, ``split``) plus ``focus_stack``/
``focus_values`` and ``intrinsics``; the training and evaluation commands read the folder as is.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional

import numpy as np

from .. import render, synthetic
from ..images import save_rgb
from .data import MANIFEST_NAME


def write_training_set(out_dir: str, n: int, size: int = 256, seed: int = 0, n_k: int = 3,
                       focus_frames: int = 0, val_fraction: float = 0.2, fov_deg: float = 60.0,
                       foreground_dir: Optional[str] = None, background_dir: Optional[str] = None,
                       callback: Optional[Callable[[int, int], None]] = None) -> str:
    """Write ``n`` scenes under ``out_dir`` and return the manifest path. Scene ``i`` uses seed
    ``seed + i``; the last ``round(n * val_fraction)`` scenes form the ``val`` split."""
    if n < 1:
        raise ValueError(f"n (number of scenes) must be >= 1, got {n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if focus_frames < 0:
        raise ValueError(f"focus_frames must be >= 0, got {focus_frames}")
    fgs = synthetic.list_images(foreground_dir)  # same folder rules as `synth`
    bgs = synthetic.list_images(background_dir)
    for sub in ("images", "depth", "stacks"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    n_val = int(round(n * val_fraction))
    focal = 0.5 * size / float(np.tan(np.radians(fov_deg) / 2))
    intrinsics = [[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]]
    lines = []
    for i in range(n):
        s = seed + i
        scene = synthetic.make_scene(s, size, n_k, foreground=fgs[s % len(fgs)] if fgs else None,
                                     background=bgs[s % len(bgs)] if bgs else None)
        sid = f"{s:06d}"
        ref, depth = f"images/{sid}.png", f"depth/{sid}.npy"
        save_rgb(os.path.join(out_dir, ref), scene.image[0])
        np.save(os.path.join(out_dir, depth), scene.depth[0].numpy().astype(np.float32))
        stack = []
        for j, k in enumerate(scene.k_values):
            rel = f"stacks/{sid}_bokeh{j}.png"
            save_rgb(os.path.join(out_dir, rel), scene.render(k, gamma=2.2)[0])
            stack.append(rel)
        entry = {"id": sid, "ref": ref, "depth": depth, "stack": stack, "k": [float(k) for k in scene.k_values],
                 "intrinsics": intrinsics, "split": "val" if i >= n - n_val else "train",
                 "focus_m": scene.focus_m, "seed": s}
        if focus_frames:
            fds = render.uniform_focus_disparities(scene.disparity, focus_frames)
            frames = render.focus_stack(scene.image, scene.disparity, fds, scene.k_values[-1], gamma=2.2)
            entry["focus_stack"] = []
            for j in range(focus_frames):
                rel = f"stacks/{sid}_focus{j}.png"
                save_rgb(os.path.join(out_dir, rel), frames[0, j])
                entry["focus_stack"].append(rel)
            entry["focus_values"] = [float(v) for v in fds[0]]
            entry["focus_k"] = float(scene.k_values[-1])
        lines.append(json.dumps(entry))
        if callback is not None:
            callback(i + 1, n)
    path = os.path.join(out_dir, MANIFEST_NAME)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path
