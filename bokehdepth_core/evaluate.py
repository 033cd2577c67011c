"""``python -m bokehdepth_core eval``: the paper's depth protocol on a data set, with and without bokeh.

Per image: AbsRel, SqRel, RMSE, RMSE-log, delta1-3 from :func:`metrics.depth_metrics` inside the
protocol's evaluation mask (NYUv2: Eigen crop rows 45..471, columns 41..601 of 480x640, depth
1e-3..10 m; KITTI: Garg crop, or Eigen, 1e-3..80 m; generic: the whole image); the summary is the
mean over images. ``--model`` is a Stage-2 weight file (any ``build_from_checkpoint`` reads) or a
folder of predicted depth maps (``<id>.npy``, metres). Stacks: ``none``; ``generated`` (the
manifest's stack frames); ``render`` (thin-lens renderings of the ground truth at the manifest's K,
the conventional pipeline); or a folder of ``<id>_k<K>.png`` frames. Each run also evaluates
without the stack, and writes ``per_image.csv``, ``summary.json`` and ``comparison.md``. Rows
already in ``per_image.csv`` are skipped (resume); under ``accelerate launch`` images are sharded
across processes.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from typing import Optional

import numpy as np
import torch

from .metrics import DEPTH_KEYS, depth_metrics
from .train.data import DEPTH_KEYS as MANIFEST_DEPTH_KEYS
from .train.data import IMAGE_KEYS, first_key, load_manifest, read_depth, read_rgb, resolve_path, stack_of

PROTOCOLS = {
    "generic": {"min_depth": 1e-3, "max_depth": float("inf"), "crop": None},
    "nyu": {"min_depth": 1e-3, "max_depth": 10.0, "crop": "eigen_nyu"},
    "kitti": {"min_depth": 1e-3, "max_depth": 80.0, "crop": "garg"},
    "kitti_eigen": {"min_depth": 1e-3, "max_depth": 80.0, "crop": "eigen"},
}
FIELDS = ["id", "stack"] + list(DEPTH_KEYS) + ["valid_pixels"]


def eval_mask(height: int, width: int, crop: Optional[str]) -> torch.Tensor:
    """Boolean ``[H,W]`` evaluation region of a protocol's crop."""
    m = torch.zeros(height, width, dtype=torch.bool)
    if crop is None:
        m[:] = True
    elif crop == "eigen_nyu":  # 480x640 Eigen crop, scaled for other sizes
        m[round(45 / 480 * height): round(471 / 480 * height), round(41 / 640 * width): round(601 / 640 * width)] = True
    elif crop == "garg":
        m[int(0.40810811 * height): int(0.99189189 * height), int(0.03594771 * width): int(0.96405229 * width)] = True
    elif crop == "eigen":
        m[int(0.3324324 * height): int(0.91351351 * height), int(0.03594771 * width): int(0.96405229 * width)] = True
    else:
        raise ValueError(f"unknown crop {crop!r}")
    return m


def image_row(pred: torch.Tensor, gt: torch.Tensor, protocol: dict, align: str = "none",
              mask: Optional[torch.Tensor] = None) -> dict:
    """Metrics of one prediction ``[H,W]`` against ground truth ``[H,W]`` under ``protocol``."""
    region = eval_mask(*gt.shape[-2:], protocol["crop"])
    if mask is not None:
        region = region & mask.bool()
    return depth_metrics(pred, gt, region, align=align, min_depth=protocol["min_depth"],
                         max_depth=protocol["max_depth"])


def summarize(rows: list[dict]) -> dict:
    """Mean of the per-image metrics for each stack mode."""
    out = {}
    for mode in dict.fromkeys(r["stack"] for r in rows):
        sel = [r for r in rows if r["stack"] == mode]
        out[mode] = {k: float(np.mean([float(r[k]) for r in sel])) for k in DEPTH_KEYS}
        out[mode]["images"] = len(sel)
    return out


def comparison_table(summary: dict) -> str:
    head = "| stack | " + " | ".join(DEPTH_KEYS) + " | images |\n|" + "---|" * (len(DEPTH_KEYS) + 2) + "\n"
    body = "".join(f"| {mode} | " + " | ".join(f"{s[k]:.4f}" for k in DEPTH_KEYS) + f" | {s['images']} |\n"
                   for mode, s in summary.items())
    return head + body


# --------------------------------------------------------------------------- data and models

def _sample_id(entry: dict, index: int) -> str:
    if entry.get("id"):
        return str(entry["id"])
    img = first_key(entry, IMAGE_KEYS) or f"{index:06d}"
    return os.path.splitext(os.path.basename(img))[0]


def _folder_stack(folder: str, sid: str) -> tuple[list[str], list[float]]:
    files = sorted(glob.glob(os.path.join(glob.escape(folder), f"{glob.escape(sid)}_k*.png")))
    pairs = []
    for f in files:
        m = re.search(r"_k([0-9.eE+-]+)\.png$", f)
        if m:
            pairs.append((float(m.group(1)), f))
    if not pairs:
        raise ValueError(f"stack folder {folder!r} has no frames for {sid!r} (expected {sid}_k<K>.png)")
    pairs.sort()
    return [p for _, p in pairs], [k for k, _ in pairs]


def load_sample(entry: dict, index: int, stack: str, depth_scale: float = 1.0) -> dict:
    """Image ``[1,H,W,3]``, ground truth ``[H,W]`` and the stack for one manifest entry."""
    img = first_key(entry, IMAGE_KEYS)
    dep = first_key(entry, MANIFEST_DEPTH_KEYS)
    if img is None or dep is None:
        raise ValueError(f"manifest entry {index} needs an image and a depth path")
    image = read_rgb(resolve_path(img, entry["_base"]))[None]
    gt = read_depth(resolve_path(dep, entry["_base"]), depth_scale)
    sid = _sample_id(entry, index)
    frames, ks = None, None
    if stack == "generated":
        paths, ks = stack_of(entry, "bokeh")
        frames = torch.stack([read_rgb(p) for p in paths])[None]
    elif stack == "render":
        from . import render

        _, ks = stack_of(entry, "bokeh")
        disp = 1.0 / gt.clamp_min(1e-3)
        focus = 1.0 / float(entry["focus_m"]) if entry.get("focus_m") else float(disp.median())
        frames = render.bokeh_stack(image, disp[None], [ks], focus, gamma=2.2)
    elif stack != "none":
        paths, ks = _folder_stack(stack, sid)
        frames = torch.stack([read_rgb(p) for p in paths])[None]
    return {"id": sid, "image": image, "gt": gt, "stack": frames,
            "k": torch.tensor([ks], dtype=torch.float32) if ks is not None else None}


def make_predictor(model_path: str, input_size: int = 518, device=None):
    """``predict(sample, use_stack) -> [H,W]`` for a weight file or a folder of ``<id>.npy`` maps."""
    if os.path.isdir(model_path):
        def from_folder(sample, use_stack):
            path = os.path.join(model_path, f"{sample['id']}.npy")
            if not os.path.isfile(path):
                raise ValueError(f"prediction folder {model_path!r} has no {sample['id']}.npy")
            return torch.from_numpy(np.load(path).astype(np.float32))
        return from_folder, False
    from .stage2 import build_from_checkpoint, estimate_depth

    model = build_from_checkpoint(model_path, device=device)

    def from_model(sample, use_stack):
        stack, k = (sample["stack"], sample["k"]) if use_stack and sample["stack"] is not None else (None, None)
        return estimate_depth(model, sample["image"], stack, k, input_size=input_size, device=device).depth[0].cpu()
    return from_model, bool(getattr(model, "has_dsfa", False))


def _read_rows(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def evaluate(model: str, data: str, out_dir: str, stack: str = "generated", protocol: str = "generic",
             align: str = "none", input_size: int = 518, depth_scale: float = 1.0, split: Optional[str] = None,
             max_depth: Optional[float] = None, accelerator=None, device=None) -> dict:
    """Run the protocol; returns the summary (also written to ``out_dir``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    proto = dict(PROTOCOLS[protocol])
    if max_depth is not None:
        proto["max_depth"] = float(max_depth)
    if stack not in ("none", "render", "generated") and not os.path.isdir(stack):
        raise ValueError(f"--stack must be none, render, generated or a folder of <id>_k<K>.png frames, got {stack!r}")
    entries = load_manifest(data, split)
    predict, has_dsfa = make_predictor(model, input_size, device)
    modes = ["none"] if stack == "none" else [stack, "none"]
    if stack != "none" and not has_dsfa and not os.path.isdir(model):
        raise ValueError("this model has no DSFA weights: it cannot use a stack; run with --stack none")
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    os.makedirs(out_dir, exist_ok=True)
    part = os.path.join(out_dir, "per_image.csv" if world == 1 else f"per_image.rank{rank}.csv")
    done = {(r["id"], r["stack"]) for r in _read_rows(part)}
    new_file = not os.path.isfile(part)
    with open(part, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for index in range(rank, len(entries), world):
            entry = entries[index]
            sid = _sample_id(entry, index)
            todo = [m for m in modes if (sid, m) not in done]
            if not todo:
                continue
            sample = load_sample(entry, index, stack if stack in todo else "none", depth_scale)
            for mode in todo:
                pred = predict(sample, mode != "none")
                if tuple(pred.shape) != tuple(sample["gt"].shape):
                    raise ValueError(f"prediction for {sid} is {tuple(pred.shape)}, "
                                     f"ground truth {tuple(sample['gt'].shape)}")
                m = image_row(pred, sample["gt"], proto, align)
                writer.writerow({"id": sid, "stack": mode, **{k: m[k] for k in DEPTH_KEYS},
                                 "valid_pixels": m["valid_pixels"]})
                f.flush()
    if accelerator is not None:
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return {}
        if world > 1:
            rows = [r for i in range(world) for r in _read_rows(os.path.join(out_dir, f"per_image.rank{i}.csv"))]
            with open(os.path.join(out_dir, "per_image.csv"), "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=FIELDS)
                w.writeheader()
                w.writerows(rows)
    rows = _read_rows(os.path.join(out_dir, "per_image.csv"))
    summary = summarize(rows)
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump({"model": model, "data": data, "protocol": protocol, "align": align, "results": summary}, f, indent=2)
    with open(os.path.join(out_dir, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(comparison_table(summary))
    return summary


def add_eval_arguments(p) -> None:
    p.add_argument("--model", required=True, help="Stage-2 weight file, or a folder of <id>.npy depth predictions")
    p.add_argument("--data", required=True, help="manifest (.json/.jsonl) or a folder with manifest.jsonl")
    p.add_argument("--stack", default="generated", help="none | render | generated | FOLDER of <id>_k<K>.png")
    p.add_argument("--protocol", default="generic", choices=sorted(PROTOCOLS))
    p.add_argument("--align", default="none", choices=("none", "median"), help="median scale alignment per image")
    p.add_argument("--out", default="bokehdepth_eval", help="output folder (per_image.csv, summary.json, comparison.md)")
    p.add_argument("--input-size", dest="input_size", type=int, default=518)
    p.add_argument("--depth-scale", dest="depth_scale", type=float, default=1.0, help="ground truth x this = metres")
    p.add_argument("--max-depth", dest="max_depth", type=float, default=None, help="override the protocol's depth cap")
    p.add_argument("--split", default=None, help="only manifest entries of this split (e.g. val, test)")
    p.add_argument("--seed", type=int, default=0)


def run_from_args(args) -> int:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    acc = Accelerator()
    set_seed(args.seed)
    summary = evaluate(args.model, args.data, args.out, stack=args.stack, protocol=args.protocol, align=args.align,
                       input_size=args.input_size, depth_scale=args.depth_scale, split=args.split,
                       max_depth=args.max_depth, accelerator=acc, device=acc.device)
    if acc.is_main_process:
        print(comparison_table(summary))
        print(f"written to {args.out}/ (per_image.csv, summary.json, comparison.md)")
    return 0
