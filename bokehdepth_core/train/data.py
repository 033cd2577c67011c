"""Training and evaluation samples from manifests: the release's formats as they are.

A manifest is a JSON list (or one object) or JSON Lines, one sample per entry; relative paths
resolve against the manifest's folder (a folder is read through its ``manifest.jsonl``, what
``synth --train`` writes). Keys, as the release's ``DefocusStackDataset`` and UniDepth manifests
use them:

* image: ``ref`` | ``source_rgb`` | ``image`` | ``image_path`` | ``input_image_path``
* depth (metres after ``depth_scale``): ``depth`` | ``depth_path`` | ``gt_depth`` | ``target_depth_path``
  (.npy, .npz with a ``depth`` array, or a 16-bit PNG)
* mask (optional): ``mask`` | ``valid_mask`` | ``mask_path``
* bokeh stack: ``stack`` + ``k`` (paths and raw K), or ``ids`` + ``k_values`` (+ ``stack_dir``)
* focus stack (``stack_source: focus``): ``focus_stack`` + ``focus_values`` (focus disparity, 1/m)
* optional: ``intrinsics`` (3x3, pixels of the stored image), ``split`` (train/val/test)
"""

from __future__ import annotations

import json
import math
import os
import random
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..stage2.dav2 import lower_bound_size
from ..stage2.inputs import normalize_imagenet

IMAGE_KEYS = ("ref", "source_rgb", "image", "image_path", "input_image_path")
DEPTH_KEYS = ("depth", "depth_path", "gt_depth", "target_depth_path")
MASK_KEYS = ("mask", "valid_mask", "mask_path")
MANIFEST_NAME = "manifest.jsonl"


def manifest_file(path: str) -> str:
    """The manifest file for ``path`` (a file, or a folder holding ``manifest.jsonl``)."""
    if os.path.isdir(path):
        cand = os.path.join(path, MANIFEST_NAME)
        if not os.path.isfile(cand):
            raise ValueError(f"folder {path!r} has no {MANIFEST_NAME}; write one with "
                             "`python -m bokehdepth_core synth --train --out FOLDER` or give a manifest file")
        return cand
    if not os.path.isfile(path):
        raise ValueError(f"manifest not found: {path!r}")
    return path


def val_split(train_manifest: str, val_manifest: str) -> Optional[str]:
    """Validating on the training manifest uses its ``val`` entries; another manifest, all of them."""
    same = os.path.abspath(manifest_file(train_manifest)) == os.path.abspath(manifest_file(val_manifest))
    return "val" if same else None


def load_manifest(path: str, split: Optional[str] = None) -> list[dict]:
    """Entries of a manifest (``split`` keeps entries of that split and those without one)."""
    path = manifest_file(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.lower().endswith(".json"):
        data = json.loads(text)
        entries = data if isinstance(data, list) else [data]
    else:
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for e in entries:
        if split and e.get("split") and str(e["split"]).lower() != split:
            continue
        e = dict(e)
        e["_base"] = base
        out.append(e)
    if not out:
        raise ValueError(f"manifest {path!r} has no samples" + (f" for split {split!r}" if split else ""))
    return out


def first_key(sample: dict, keys: Iterable[str]) -> Optional[str]:
    for k in keys:
        if sample.get(k):
            return str(sample[k])
    return None


def resolve_path(path: str, base: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def read_rgb(path: str) -> torch.Tensor:
    """``[H,W,3]`` float32 0..1."""
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)


def read_depth(path: str, scale: float = 1.0) -> torch.Tensor:
    """``[H,W]`` float32 (times ``scale``) from .npy, .npz (``depth`` or first array) or an image file."""
    low = path.lower()
    if low.endswith(".npy"):
        d = np.load(path)
    elif low.endswith(".npz"):
        with np.load(path) as z:
            d = z["depth"] if "depth" in z.files else z[z.files[0]]
    else:
        from PIL import Image

        with Image.open(path) as im:
            d = np.asarray(im)
    d = np.asarray(d, dtype=np.float32)
    if d.ndim == 3:
        d = d[..., 0]
    return torch.from_numpy(d * float(scale))


def stack_of(sample: dict, source: str = "bokeh", indices: Optional[Sequence[int]] = None) -> tuple[list[str], list[float]]:
    """(frame paths, per-frame values) of a sample's bokeh or focus stack."""
    base = sample["_base"]
    if source == "focus":
        if "focus_stack" not in sample:
            raise ValueError("stack_source is 'focus' but a manifest entry has no focus_stack/focus_values "
                             "(write the data with `synth --train --focus-frames N`)")
        paths = [resolve_path(p, base) for p in sample["focus_stack"]]
        values = [float(v) for v in sample["focus_values"]]
    elif "stack" in sample and "k" in sample:
        paths = [resolve_path(p, base) for p in sample["stack"]]
        values = [float(v) for v in sample["k"]]
    elif "ids" in sample and "k_values" in sample:
        ids = [str(i) for i in sample["ids"]]
        kv = sample["k_values"]
        values = [float(kv[i]) for i in ids] if isinstance(kv, dict) else [float(v) for v in kv]
        sdir = sample.get("stack_dir") or sample.get("defocus_stack_dir")
        if sdir is None and "stack_index" in sample:
            sdir = os.path.dirname(resolve_path(sample["stack_index"], base))
        sdir = resolve_path(sdir or "defocus_stack", base)
        paths = [os.path.join(sdir, f"{i}.png") for i in ids]
    elif source == "none":
        return [], []
    else:
        raise ValueError("each manifest entry needs stack/k or ids/k_values (its bokeh stack)")
    if len(paths) != len(values):
        raise ValueError(f"a manifest entry has {len(paths)} stack frames but {len(values)} values")
    if indices:
        keep = [i for i in indices if 0 <= i < len(paths)]
        if not keep:
            raise ValueError(f"stack_indices {list(indices)} select no frame of a {len(paths)}-frame stack")
        paths, values = [paths[i] for i in keep], [values[i] for i in keep]
    return paths, values


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``[C,H,W]`` -> ``[C,h,w]``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x[None], size=size, mode=mode, **kw)[0]


class DepthStackDataset(torch.utils.data.Dataset):
    """Samples as the release's ``DefocusStackDataset`` gives them: ImageNet-normalised image and
    stack resized (keep aspect, lower bound ``size``, multiples of 14); in ``train`` mode also the
    depth and mask, then one random ``size`` crop shared by all (``augment=False``: centre crop).
    Other modes keep depth and mask at their stored size (evaluation at full resolution)."""

    def __init__(self, manifest: str, mode: str = "train", size: int = 518, stack_source: str = "bokeh",
                 stack_indices: Optional[Sequence[int]] = None, depth_scale: float = 1.0,
                 min_depth: float = 1e-3, max_depth: float = 80.0, augment: bool = True,
                 max_samples: Optional[int] = None, split: Optional[str] = None):
        if mode not in ("train", "val", "eval"):
            raise ValueError(f"mode must be train, val or eval, got {mode!r}")
        if stack_source not in ("bokeh", "focus", "none"):
            raise ValueError(f"stack_source must be bokeh, focus or none, got {stack_source!r}")
        self.samples = load_manifest(manifest, split)
        if max_samples:
            self.samples = self.samples[: int(max_samples)]
        self.mode, self.size, self.stack_source = mode, int(size), stack_source
        self.stack_indices = list(stack_indices) if stack_indices else None
        self.depth_scale, self.min_depth, self.max_depth = float(depth_scale), float(min_depth), float(max_depth)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def paths(self, index: int) -> tuple[str, str]:
        s = self.samples[index]
        img, dep = first_key(s, IMAGE_KEYS), first_key(s, DEPTH_KEYS)
        if img is None or dep is None:
            raise ValueError(f"manifest entry {index} needs an image ({'/'.join(IMAGE_KEYS)}) and a depth "
                             f"({'/'.join(DEPTH_KEYS)}) path")
        return resolve_path(img, s["_base"]), resolve_path(dep, s["_base"])

    def _crop(self, h: int, w: int) -> tuple[int, int]:
        if h < self.size or w < self.size:
            raise ValueError(f"crop {self.size} is larger than the resized image {h}x{w}")
        if self.augment:
            return random.randint(0, h - self.size), random.randint(0, w - self.size)
        return (h - self.size) // 2, (w - self.size) // 2

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        img_path, depth_path = self.paths(index)
        rgb = read_rgb(img_path).permute(2, 0, 1)
        depth = read_depth(depth_path, self.depth_scale)
        mask_path = first_key(s, MASK_KEYS)
        if mask_path:
            from PIL import Image

            with Image.open(resolve_path(mask_path, s["_base"])) as im:
                m = torch.from_numpy((np.asarray(im.convert("L")) > 0).astype(np.float32))
            mask = _resize(m[None], tuple(depth.shape), "nearest")[0] > 0.5
        else:
            mask = torch.isfinite(depth)
        h0, w0 = rgb.shape[-2:]
        size = lower_bound_size(h0, w0, self.size)
        image = normalize_imagenet(_resize(rgb, size, "bicubic")[None])[0]
        paths, values = stack_of(s, self.stack_source, self.stack_indices)
        frames = [normalize_imagenet(_resize(read_rgb(p).permute(2, 0, 1), size, "bicubic")[None])[0] for p in paths]
        stack = torch.stack(frames) if frames else torch.zeros(0, 3, *size)
        intr = torch.tensor(s["intrinsics"], dtype=torch.float32) if s.get("intrinsics") else None
        if self.mode == "train":
            depth = _resize(depth[None], size, "nearest")[0]
            mask = _resize(mask[None].float(), size, "nearest")[0] > 0.5
            top, left = self._crop(*size)
            sl = (slice(top, top + self.size), slice(left, left + self.size))
            image, stack = image[(slice(None),) + sl], stack[(slice(None), slice(None)) + sl]
            depth, mask = depth[sl], mask[sl]
            if intr is not None:
                intr = _crop_intrinsics(intr, size[1] / w0, size[0] / h0, left, top)
        elif intr is not None:
            intr = _crop_intrinsics(intr, size[1] / w0, size[0] / h0, 0, 0)
        valid = mask & torch.isfinite(depth) & (depth >= self.min_depth) & (depth <= self.max_depth)
        out = {"image": image.contiguous(), "depth": depth.contiguous(), "valid_mask": valid.contiguous(),
               "focus_stack": stack.contiguous(), "k_stack": torch.tensor(values, dtype=torch.float32),
               "index": index}
        if intr is not None:
            out["intrinsics"] = intr
        return out


def _crop_intrinsics(k: torch.Tensor, sx: float, sy: float, left: int, top: int) -> torch.Tensor:
    k = k.clone()
    k[0, 0], k[0, 2] = k[0, 0] * sx, k[0, 2] * sx - left
    k[1, 1], k[1, 2] = k[1, 1] * sy, k[1, 2] * sy - top
    return k


def collate(batch: Sequence[dict]) -> dict:
    """Stack samples; every sample of a batch must have the same number of stack frames."""
    n = {len(b["k_stack"]) for b in batch}
    if len(n) != 1:
        raise ValueError(f"all samples of a batch need the same number of stack frames, got {sorted(n)}; "
                         "use stack_indices or batch_size 1")
    out = {k: torch.stack([b[k] for b in batch]) for k in ("image", "depth", "valid_mask", "focus_stack", "k_stack")}
    out["index"] = torch.tensor([b["index"] for b in batch])
    if all("intrinsics" in b for b in batch):
        out["intrinsics"] = torch.stack([b["intrinsics"] for b in batch])
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader workers draw crops from seeds derived from torch's (reproducible runs)."""
    s = torch.initial_seed() % 2 ** 32
    random.seed(s)
    np.random.seed(s)


def steps_per_epoch(n_samples: int, batch_size: int, processes: int = 1) -> int:
    return max(1, math.ceil(math.ceil(n_samples / processes) / batch_size))
