"""Synthetic bokeh scenes in the style of the paper's SYNTHEBOKEH300 (Sec. 11).

A foreground RGBA layer over a background, both with planar disparity fields
(Eq. 44: ``d = c / (1 - a*x - b*y)``), the foreground nearer than the background, focus inside the
foreground band, and several ``K`` per scene spanning subtle to strong blur, each mapped to an
equivalent f-number in [1.4, 22]. Textures and mattes are procedural (deterministic by seed);
folders of foreground PNGs with alpha and background photos can be used instead.
Disparity is in 1/m, so metric depth is ``1 / disparity``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import render
from .checks import integer
from .images import save_rgb
from .types import DepthMap

F_NUMBER_RANGE = (1.4, 22.0)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


@dataclass
class Scene:
    """One synthetic scene: all-in-focus ``image [1,H,W,3]``, ``disparity [1,H,W]`` (1/m),
    foreground ``alpha [1,H,W]``, the focus disparity and the sampled lens settings."""

    image: torch.Tensor
    disparity: torch.Tensor
    alpha: torch.Tensor
    focus_disparity: float
    k_values: list[float]
    f_numbers: list[float]
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def depth(self) -> torch.Tensor:
        return 1.0 / self.disparity

    @property
    def focus_m(self) -> float:
        return 1.0 / self.focus_disparity

    @property
    def settings(self) -> dict:
        """Seed, size, the sampled lens settings and the layers' parameters (JSON-ready)."""
        return {"seed": self.seed, "size": int(self.image.shape[2]), "k_values": self.k_values,
                "f_numbers": self.f_numbers, "focus_m": self.focus_m, "focus_disparity": self.focus_disparity,
                **self.meta}

    def depth_map(self) -> DepthMap:
        """The ground-truth metric depth as a DepthMap."""
        return DepthMap(depth=self.depth, meta={"source": "synthetic", "seed": self.seed})

    def render(self, k: float, **options) -> torch.Tensor:
        return render.render_bokeh(self.image, self.disparity, k, self.focus_disparity, **options)


# --------------------------------------------------------------------------- procedural content

def _noise(gen: torch.Generator, size: int, channels: int, octaves: int = 6, base: int = 4,
           falloff: float = 0.6) -> torch.Tensor:
    """Multi-octave value noise ``[channels, size, size]`` scaled to 0..1."""
    out = torch.zeros(1, channels, size, size)
    amp = 1.0
    for o in range(octaves):
        g = min(size, base * 2 ** o)
        grid = torch.rand(1, channels, g, g, generator=gen)
        out += amp * F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
        amp *= falloff
    out = out[0]
    lo = out.amin(dim=(1, 2), keepdim=True)
    hi = out.amax(dim=(1, 2), keepdim=True)
    return (out - lo) / (hi - lo).clamp_min(1e-6)


def procedural_texture(gen: torch.Generator, size: int, detail: float = 1.0) -> torch.Tensor:
    """A colourful, textured ``[size, size, 3]`` image: two-tone noise, fine grain and a few shapes."""
    mix = _noise(gen, size, 1, falloff=0.55 + 0.15 * detail)
    c1, c2 = torch.rand(3, generator=gen), torch.rand(3, generator=gen)
    img = c1.view(3, 1, 1) * (1 - mix) + c2.view(3, 1, 1) * mix
    img = img + 0.25 * detail * (_noise(gen, size, 3, octaves=4, base=size // 16 or 1, falloff=0.8) - 0.5)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    for _ in range(int(torch.randint(3, 8, (1,), generator=gen))):  # discs and stripes give hard edges
        col = torch.rand(3, generator=gen).view(3, 1, 1)
        cx, cy = (torch.rand(2, generator=gen) * size).tolist()
        if float(torch.rand(1, generator=gen)) < 0.5:
            rad = float(torch.rand(1, generator=gen)) * size * 0.12 + 2
            m = (rad + 0.5 - torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)).clamp(0, 1)
        else:
            ang = float(torch.rand(1, generator=gen)) * math.pi
            width = float(torch.rand(1, generator=gen)) * size * 0.03 + 1
            dist = ((xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)).abs()
            m = (width + 0.5 - dist).clamp(0, 1)
        img = img * (1 - 0.8 * m) + 0.8 * m * col
    return img.clamp(0, 1).permute(1, 2, 0).contiguous()


def procedural_matte(gen: torch.Generator, size: int, area: tuple[float, float] = (0.15, 0.4)) -> torch.Tensor:
    """A star-shaped blob (smooth random outline) near the centre, anti-aliased, ``[size, size]``."""
    frac = float(area[0] + (area[1] - area[0]) * torch.rand(1, generator=gen))
    r0 = math.sqrt(frac / math.pi) * size
    cx = size / 2 + float(torch.rand(1, generator=gen) - 0.5) * size * 0.15
    cy = size / 2 + float(torch.rand(1, generator=gen) - 0.5) * size * 0.15
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    theta = torch.atan2(yy - cy, xx - cx)
    rr = torch.full_like(theta, r0)
    for h in range(2, 7):
        amp = float(torch.rand(1, generator=gen)) * 0.25 / h * 2
        ph = float(torch.rand(1, generator=gen)) * 2 * math.pi
        rr = rr + r0 * amp * torch.cos(h * theta + ph)
    rr = rr.clamp(max=0.48 * size)
    dist = torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    return (rr + 0.5 - dist).clamp(0, 1)


def planar_disparity(size: int, a: float, b: float, c: float, height: Optional[int] = None) -> torch.Tensor:
    """Eq. 44 on a grid normalised to x, y in [-1, 1]: ``c / (1 - a x - b y)``, ``[H, W]``."""
    h = height or size
    y = torch.linspace(-1, 1, h).view(h, 1)
    x = torch.linspace(-1, 1, size).view(1, size)
    return c / (1.0 - a * x - b * y)


def list_images(folder: Optional[str]) -> list[str]:
    if not folder:
        return []
    if not os.path.isdir(folder):
        raise ValueError(f"folder not found: {folder!r}")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder!r}")
    return files


def _load_background(path: str, size: int) -> torch.Tensor:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (size, size), Image.BICUBIC)
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)


def _load_foreground(path: str, size: int, gen: torch.Generator, area=(0.3, 0.8)) -> tuple[torch.Tensor, torch.Tensor]:
    """RGBA PNG cropped to its alpha box, scaled to cover ``area`` of the frame near the centre."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    bbox = rgba.getchannel("A").getbbox()
    if bbox is None:
        raise ValueError(f"foreground {path!r} has an empty alpha channel: give PNGs with transparency")
    rgba = rgba.crop(bbox)
    frac = float(area[0] + (area[1] - area[0]) * torch.rand(1, generator=gen))
    bw, bh = rgba.size
    scale = min(math.sqrt(frac * size * size / (bw * bh)), 0.95 * size / bw, 0.95 * size / bh)
    nw, nh = max(1, int(bw * scale)), max(1, int(bh * scale))
    rgba = rgba.resize((nw, nh), Image.LANCZOS)
    x0 = (size - nw) // 2 + int((float(torch.rand(1, generator=gen)) - 0.5) * (size - nw) * 0.3)
    y0 = (size - nh) // 2 + int((float(torch.rand(1, generator=gen)) - 0.5) * (size - nh) * 0.3)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(rgba, (x0, y0))
    arr = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)
    return arr[..., :3], arr[..., 3]


# --------------------------------------------------------------------------- scenes

def f_number_for_k(k: float, k_max: float) -> float:
    """Equivalent f-number: ``K ~ 1/N``, the largest K of the sampling range maps to f/1.4."""
    lo, hi = F_NUMBER_RANGE
    return float(min(hi, max(lo, lo * k_max / k)))


def make_scene(seed: int = 0, size: int = 256, n_k: int = 3, foreground: Optional[str] = None,
               background: Optional[str] = None, max_radius_frac: float = 0.04,
               fg_disparity: tuple[float, float] = (0.6, 1.2), bg_disparity: tuple[float, float] = (0.15, 0.45)) -> Scene:
    """One scene, deterministic by ``seed``. ``foreground``/``background``: optional image paths
    (an RGBA PNG and a photo) replacing the procedural layers. The strongest sampled blur gives the
    farthest background pixel a radius of about ``max_radius_frac * size`` px."""
    size = integer("size", size, 16, 8192)
    n_k = integer("n_k", n_k, 1, 256)
    gen = torch.Generator().manual_seed(int(seed))
    rnd = lambda lo, hi: float(lo + (hi - lo) * torch.rand(1, generator=gen))  # noqa: E731

    bg = _load_background(background, size) if background else procedural_texture(gen, size)
    if foreground:
        fg, alpha = _load_foreground(foreground, size, gen)
    else:
        fg, alpha = procedural_texture(gen, size, detail=1.2), procedural_matte(gen, size)

    # Background: a tilted plane (Eq. 44); its nearest point at bg_disparity, farthest ~half of it.
    a, b = rnd(-0.3, 0.3), rnd(-0.3, 0.3)
    d_near = rnd(*bg_disparity)
    bgd = planar_disparity(size, a, b, 1.0)
    bgd = bgd / bgd.max() * d_near
    # Foreground: a gently tilted plane, always nearer than any background point.
    fa, fb = rnd(-0.08, 0.08), rnd(-0.08, 0.08)
    fgd = planar_disparity(size, fa, fb, 1.0)
    fgd = fgd / fgd.min() * rnd(*fg_disparity)
    mask = alpha >= 0.5
    disparity = torch.where(mask, fgd, bgd)
    image = fg * alpha[..., None] + bg * (1 - alpha[..., None])

    fg_vals = fgd[mask] if bool(mask.any()) else fgd.flatten()
    d_f = rnd(float(fg_vals.min()), float(fg_vals.max()))  # the subject stays sharp
    span = d_f - float(bgd.min())
    r_hi = max_radius_frac * size
    k_max = r_hi / span
    k_min = k_max * F_NUMBER_RANGE[0] / F_NUMBER_RANGE[1]
    ks = sorted(math.exp(rnd(math.log(k_min), math.log(k_max))) for _ in range(n_k))
    meta = {"bg_plane": {"a": a, "b": b, "disparity_near": d_near},
            "fg_plane": {"a": fa, "b": fb}, "foreground": foreground or "procedural",
            "background": background or "procedural", "k_range": [k_min, k_max]}
    return Scene(image=image.unsqueeze(0).contiguous(), disparity=disparity.unsqueeze(0).float(),
                 alpha=alpha.unsqueeze(0), focus_disparity=d_f, k_values=ks,
                 f_numbers=[f_number_for_k(k, k_max) for k in ks], seed=int(seed), meta=meta)


def generate_dataset(out_dir: str, n: int, size: int = 256, seed: int = 0, n_k: int = 3,
                     foreground_dir: Optional[str] = None, background_dir: Optional[str] = None,
                     jpeg_quality: int = 95, callback: Optional[Callable[[int, int], None]] = None,
                     **render_options) -> list[str]:
    """Write ``n`` scenes as ``aif/ images/ depth/ metadata/`` under ``out_dir``; returns the
    metadata paths. Scene ``i`` uses seed ``seed + i`` (same seed, same dataset)."""
    if n < 1:
        raise ValueError(f"n (number of scenes) must be >= 1, got {n}")
    fgs, bgs = list_images(foreground_dir), list_images(background_dir)
    for sub in ("aif", "images", "depth", "metadata"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    opts = {"gamma": 2.2, **render_options}
    paths = []
    for i in range(n):
        s = seed + i
        scene = make_scene(s, size, n_k, foreground=fgs[s % len(fgs)] if fgs else None,
                           background=bgs[s % len(bgs)] if bgs else None)
        sid = f"{s:06d}"
        aif_rel, depth_rel = f"aif/{sid}.png", f"depth/{sid}.npy"
        save_rgb(os.path.join(out_dir, aif_rel), scene.image[0])
        np.save(os.path.join(out_dir, depth_rel), scene.disparity[0].numpy().astype(np.float32))
        for j, (k, fn) in enumerate(zip(scene.k_values, scene.f_numbers)):
            img_rel = f"images/{sid}_{j}.jpg"
            save_rgb(os.path.join(out_dir, img_rel), scene.render(k, **opts)[0], quality=jpeg_quality)
            meta = {"id": f"{sid}_{j}", "aif": aif_rel, "depth": depth_rel, "image": img_rel,
                    "depth_kind": "disparity (1/m); metric depth = 1/disparity",
                    "K": k, "d_f": scene.focus_disparity, "focus_m": scene.focus_m, "f_number": fn,
                    "size": [size, size], "seed": s,
                    "renderer": {"name": "bokehdepth_core.render.render_bokeh", **opts},
                    "scene": scene.meta}
            path = os.path.join(out_dir, "metadata", f"{sid}_{j}.json")
            with open(path, "w") as f:
                json.dump(meta, f, indent=2)
            paths.append(path)
        if callback is not None:
            callback(i + 1, n)
    return paths
