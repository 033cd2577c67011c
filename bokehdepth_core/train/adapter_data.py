"""Image pairs for adapter training: the release's I2I JSONL (``build_manifest.py`` output) or a
``synth --train`` folder (each stack frame is one target, its K the condition).

Geometry as the release's datasets: scale the short side to ``size`` (area filter), centre crop a
``size`` square, optional joint horizontal flip; images in [-1, 1].
"""

from __future__ import annotations

import math
import random
from typing import Optional

import numpy as np
import torch

from .data import first_key, load_manifest, read_depth, resolve_path


def _load_square(path: str, size: int, flip: bool) -> torch.Tensor:
    """``[3,size,size]`` in [-1, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        ratio = size / max(1, min(w, h))
        nw, nh = int(math.ceil(w * ratio)), int(math.ceil(h * ratio))
        im = im.resize((nw, nh), Image.BOX) if (nw, nh) != (w, h) else im
        left, top = max((nw - size) // 2, 0), max((nh - size) // 2, 0)
        im = im.crop((left, top, left + size, top + size))
        if flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1) * 2.0 - 1.0


def _k_of(entry: dict) -> Optional[float]:
    anns = entry.get("camera_anns")
    if isinstance(anns, dict):
        for key in ("dof-cond", "dof_cond"):
            if anns.get(key) is not None:
                return float(anns[key])
    for key in ("dof_cond", "dof-cond", "K", "k"):
        v = entry.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    return None


class I2IDataset(torch.utils.data.Dataset):
    """(input, target, K, caption[, depth]) samples; ``target_source="render"`` leaves the target to
    the recipe (rendered from the input and its depth)."""

    def __init__(self, manifest: str, size: int = 512, flip: bool = True, target_source: str = "file",
                 max_samples: Optional[int] = None):
        if target_source not in ("file", "render"):
            raise ValueError(f"target_source must be file or render, got {target_source!r}")
        self.size, self.flip, self.target_source = int(size), flip, target_source
        self.items = []
        for e in load_manifest(manifest, "train"):
            if e.get("foreground_clear") is False:
                continue  # the release drops these at collate time
            base = e["_base"]
            src = first_key(e, ("input_image_path", "ref", "image", "image_path"))
            if src is None:
                raise ValueError("adapter manifest entries need input_image_path (or ref/image)")
            caps = e.get("captions") or e.get("caption") or ""
            caption = caps[0] if isinstance(caps, list) and caps else (caps if isinstance(caps, str) else "")
            depth = first_key(e, ("depth_map_path", "depth"))
            common = {"input": resolve_path(src, base), "caption": caption,
                      "depth": resolve_path(depth, base) if depth else None, "focus_m": e.get("focus_m")}
            if target_source == "render":
                if not depth:
                    raise ValueError("target_source 'render' needs depth_map_path (or depth) in every entry")
                self.items.append({**common, "target": None, "k": 0.0})
            elif e.get("target_image_path"):
                k = _k_of(e)
                if k is None:
                    raise ValueError(f"entry {src!r} has a target but no dof_cond (camera_anns['dof-cond'])")
                self.items.append({**common, "target": resolve_path(e["target_image_path"], base), "k": k})
            elif e.get("stack") and e.get("k"):
                for p, k in zip(e["stack"], e["k"]):
                    self.items.append({**common, "target": resolve_path(p, base), "k": float(k)})
        if max_samples:
            self.items = self.items[: int(max_samples)]
        if not self.items:
            raise ValueError(f"no training pairs in {manifest!r}: entries need target_image_path + dof_cond, "
                             "stack + k, or (target_source render) a depth map")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        flip = self.flip and random.random() < 0.5
        out = {"image": _load_square(it["input"], self.size, flip), "k": it["k"], "caption": it["caption"],
               "flip": flip, "index": i}
        out["target"] = _load_square(it["target"], self.size, flip) if it["target"] else None
        return out

    def render_targets(self, batch: dict, ks) -> torch.Tensor:
        """Thin-lens renderings of the batch's inputs at ``ks`` (focus at the entry's focus_m or
        the median depth), same geometry as the inputs."""
        from .. import render

        outs = []
        for j, (i, k) in enumerate(zip(batch["index"].tolist(), ks)):
            it = self.items[i]
            img = (batch["images"][j].float().cpu().permute(1, 2, 0)[None] + 1) / 2
            depth = read_depth(it["depth"])[None, None]
            depth = torch.nn.functional.interpolate(depth, size=img.shape[1:3], mode="bilinear", align_corners=False)[0]
            if batch["flip"][j]:
                depth = depth.flip(-1)
            disp = 1.0 / depth.clamp_min(1e-3)
            focus = 1.0 / float(it["focus_m"]) if it.get("focus_m") else float(disp.median())
            outs.append(render.render_bokeh(img, disp, k, focus, gamma=2.2)[0].permute(2, 0, 1) * 2 - 1)
        return torch.stack(outs).to(batch["images"].device)


def collate_i2i(batch) -> dict:
    targets = [b["target"] for b in batch]
    return {"images": torch.stack([b["image"] for b in batch]),
            "target": None if any(t is None for t in targets) else torch.stack(targets),
            "k": torch.tensor([b["k"] for b in batch], dtype=torch.float32),
            "captions": [b["caption"] for b in batch], "flip": [b["flip"] for b in batch],
            "index": torch.tensor([b["index"] for b in batch])}
