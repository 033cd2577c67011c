"""Thin-lens bokeh from a disparity map: occlusion-aware layered scatter with disk (or polygon) PSFs.

Each pixel is blurred by a disk of radius ``K * |d - d_f|`` (paper Eq. 15/45). The signed radius
field ``K * (d - d_f)`` (positive = in front of the focal plane) is split into layers on a grid of
radii; a pixel between two grid radii is interpolated between their blurs, so smooth depth gives no
banding. Layers are blurred as premultiplied colour + coverage and composited back to front with
"over" in linear light: a sharp foreground never spills onto the blurred background behind it (that
layer never contains foreground pixels), and a blurred foreground spreads over whatever lies behind
it, with the background hidden in the input filled in by push-pull extrapolation.

Speed: a layer of radius ``r`` is blurred by one FFT at a resolution reduced by ``2^k`` such that
the kernel keeps at least ``min_lowres_radius`` pixels there (a large disk removes the detail the
reduction loses). The same code runs on CPU and GPU; nothing leaves the input's device.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from .checks import (MAX_K_VALUES, aperture_blades, depth_batch, image_batch, integer, k_table, map_like, number,
                     per_item, per_item_rows)
from .psf import blur_once, covering_radius, radius_grid
from .types import ProgressFn


# --------------------------------------------------------------------------- confidence smoothing

def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved by (dy, dx) with replicated borders; ``x [B,C,H,W]``."""
    if dy == 0 and dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    xp = F.pad(x, (p, p, p, p), mode="replicate")
    h, w = x.shape[-2:]
    return xp[..., p - dy:p - dy + h, p - dx:p - dx + w]


def smooth_radius_field(signed_radius: torch.Tensor, confidence: torch.Tensor, guide: torch.Tensor,
                        levels: int = 5, sigma_color: float = 0.1) -> torch.Tensor:
    """Pull the radius of uncertain pixels toward confident neighbours of similar colour.

    Edge-aware normalised convolution (a-trous, ``levels`` dilations of a 3x3 stencil) of the
    radius weighted by confidence, then ``conf * r + (1 - conf) * r_filled``. ``signed_radius`` and
    ``confidence`` ``[B,H,W]``, ``guide`` ``[B,H,W,3]``.
    """
    c = confidence.clamp(0, 1).unsqueeze(1)
    num = (signed_radius.unsqueeze(1) * c)
    den = c.clone()
    g = guide.permute(0, 3, 1, 2)
    inv = 1.0 / (2.0 * sigma_color ** 2)
    for level in range(levels):
        step = 2 ** level
        acc_n = torch.zeros_like(num)
        acc_d = torch.zeros_like(den)
        for dy in (-step, 0, step):
            for dx in (-step, 0, step):
                wq = torch.exp(-((_shift(g, dy, dx) - g) ** 2).sum(1, keepdim=True) * inv)
                acc_n += wq * _shift(num, dy, dx)
                acc_d += wq * _shift(den, dy, dx)
        num, den = acc_n, acc_d
    filled = num / den.clamp_min(1e-8)
    filled = torch.where(den > 1e-8, filled, signed_radius.unsqueeze(1))
    out = c * signed_radius.unsqueeze(1) + (1 - c) * filled
    return out[:, 0]


# --------------------------------------------------------------------------- renderer

def _layer_scale(radius: float, min_lowres_radius: float, max_scale: int) -> int:
    s = 1
    while s * 2 <= max_scale and radius / (s * 2) >= min_lowres_radius:
        s *= 2
    return s


def _blur_layer(x: torch.Tensor, radius: float, scale: int, blades: int, rotation: float) -> torch.Tensor:
    """Blur ``x [B,5,H,W]`` (rgb*w, w, support) by the aperture of ``radius`` px, at 1/scale
    resolution: ``[B,4,H,W]`` (rgb*w, w). ``x`` is overwritten.

    Normalised by the blurred image support, so the frame border acts as "unknown" rather than
    "transparent" (a blurred layer stays opaque up to the border)."""
    if radius <= 0:
        return x[:, :4]
    h, w = x.shape[-2:]
    if scale > 1:
        ph, pw = (-h) % scale, (-w) % scale
        x = F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x
        x = F.avg_pool2d(x, scale)
    x = blur_once(x, radius / scale, blades, rotation, out=x)
    if scale > 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)[..., :h, :w]
    return x


def _fill_hidden(c: torch.Tensor, a: torch.Tensor) -> None:
    """Complete a premultiplied accumulation (colour ``c``, coverage ``a``) to full coverage by
    push-pull, in place: holes take the colour of the nearest covered content, coarse to fine."""
    amin, amax = float(a.amin()), float(a.amax())
    if amin > 0.999 or amax <= 1e-6:
        return
    if min(a.shape[-2:]) <= 2:
        c.div_(a.clamp_min(1e-6))
        a.fill_(1.0)
        return
    pyr = [(c, a)]
    while min(pyr[-1][1].shape[-2:]) > 2:
        cc, aa = pyr[-1]
        pyr.append((F.avg_pool2d(cc, 2, ceil_mode=True), F.avg_pool2d(aa, 2, ceil_mode=True)))
    cc, aa = pyr[-1]
    fill = cc / aa.clamp_min(1e-6)
    for cc, aa in reversed(pyr[1:-1]):
        up = F.interpolate(fill, size=cc.shape[-2:], mode="bilinear", align_corners=False)
        fill = cc + (1 - aa.clamp(0, 1)) * up
    up = F.interpolate(fill, size=c.shape[-2:], mode="bilinear", align_corners=False)
    del pyr, fill
    c.addcmul_(1 - a.clamp(0, 1), up)
    a.fill_(1.0)


def render_bokeh(image: torch.Tensor, disparity: torch.Tensor, k, focus_disparity, *,
                 gamma: float = 2.2, highlight: float = 0.0, highlight_threshold: float = 0.9,
                 blades: int = 0, blade_rotation: float = 0.0, confidence: Optional[torch.Tensor] = None,
                 max_radius: Optional[float] = None, rel_step: float = 0.12, min_lowres_radius: float = 3.0,
                 max_scale: int = 8, fill_hidden: bool = True, callback: ProgressFn = None) -> torch.Tensor:
    """Render thin-lens bokeh.

    image ``[B,H,W,3]`` 0..1; disparity ``[B,H,W]`` 1/m; ``k`` (px*m) and ``focus_disparity``
    (1/m) one number or one per batch item. Options: ``gamma`` (blur in linear light, 1 = off),
    ``highlight`` (gain > 0 brightens near-white pixels before blurring, for bright bokeh balls),
    ``blades`` (0 = round aperture, >= 3 = polygon) and ``blade_rotation`` (degrees),
    ``confidence`` ``[B,H,W]`` 0..1 (uncertain radii are smoothed toward confident neighbours),
    ``max_radius`` (clamp, px), ``rel_step`` (layer spacing above 3 px, relative),
    ``min_lowres_radius``/``max_scale`` (the resolution reduction of large layers; ``max_scale=1``
    renders every layer at full resolution), ``fill_hidden`` (before a blurred layer is laid over
    what lies behind it, the parts hidden in the input are filled by push-pull extrapolation of that
    background, so a blurred foreground's rim shows background instead of its own colour).
    Returns ``[B,H,W,3]`` 0..1.
    """
    image = image_batch(image)
    disparity = map_like(disparity, image, "disparity", allow_negative=False)
    b, h, w, _ = image.shape
    dev = image.device
    kk = per_item("k", k, b, dev, positive=True)
    fd = per_item("focus_disparity", focus_disparity, b, dev, allow_negative=False)
    gamma = number("gamma", gamma, "in (0, 10] (2.2 = sRGB-like, 1 = blur the values as they are)", maximum=10.0)
    highlight = number("highlight", highlight, ">= 0 (0 = off)", inclusive=True)
    highlight_threshold = number("highlight_threshold", highlight_threshold, "in 0..1", inclusive=True)
    if highlight_threshold >= 1:
        raise ValueError(f"highlight_threshold must be below 1, got {highlight_threshold}")
    blades = aperture_blades(blades)
    blade_rotation = number("blade_rotation", blade_rotation, "(degrees)", minimum=-math.inf)
    rel_step = number("rel_step", rel_step, "in 0.01..4 (layer spacing, e.g. 0.12)", minimum=0.01, inclusive=True,
                      maximum=4.0)
    min_lowres_radius = number("min_lowres_radius", min_lowres_radius, "> 0 px")
    max_scale = min(integer("max_scale", max_scale, 1, 1 << 16), max(h, w))
    if max_radius is not None:
        max_radius = number("max_radius", max_radius, ">= 0 px", inclusive=True)

    signed = kk.view(b, 1, 1) * (disparity - fd.view(b, 1, 1))  # > 0: in front of the focal plane
    if confidence is not None:
        conf = map_like(confidence, image, "confidence", allow_negative=False)
        signed = smooth_radius_field(signed, conf.clamp(0, 1), image)
    cap = covering_radius(h, w, blades) * (1.0 + rel_step) * 1.01
    cap = min(cap, max_radius) if max_radius is not None else cap
    signed = signed.clamp(-cap, cap)

    rgb = image.clamp(0, 1).pow_(gamma).permute(0, 3, 1, 2)  # linear light
    if highlight > 0:
        lum = rgb.mean(1, keepdim=True)
        t = ((lum - highlight_threshold) / max(1e-6, 1 - highlight_threshold)).clamp_(0, 1)
        rgb = rgb * (1 + float(highlight) * t * t)
        del lum, t

    rmax = float(signed.abs().max())
    grid = radius_grid(rmax, rel_step=rel_step)
    levels = [-g for g in reversed(grid[1:])] + grid  # back (far) to front (near)
    if len(levels) == 1:  # everything on the focal plane
        return image.clamp(0, 1)
    # Each pixel lies between two neighbouring levels: the farther one (index ``idx - 1``) takes it
    # at full coverage and the nearer one (``idx``) goes over it with coverage ``t_hi``; "over" then
    # yields (1-t)*B_lo + t*B_hi with full coverage inside a surface. Per pixel only ``idx`` (int16)
    # and ``t_hi`` are kept; each layer's weights are derived from them when it is drawn.
    lv = torch.tensor(levels, device=dev, dtype=signed.dtype)
    idx = torch.searchsorted(lv, signed.contiguous(), right=True).clamp_(1, len(levels) - 1)
    t_hi = ((signed - lv[idx - 1]) / (lv[idx] - lv[idx - 1])).clamp_(0, 1)
    idx = idx.to(torch.int16)
    del signed
    full_lo = t_hi < 1 - 1e-6
    occupied = torch.unique(torch.cat([(idx - 1)[full_lo], idx[t_hi > 0]])).tolist()
    del full_lo

    acc_c = torch.zeros(b, 3, h, w, device=dev, dtype=rgb.dtype)
    acc_a = torch.zeros(b, 1, h, w, device=dev, dtype=rgb.dtype)
    x = torch.empty(b, 5, h, w, device=dev, dtype=rgb.dtype)  # one layer: rgb*w, w, support
    total = len(occupied)
    for step, li in enumerate(occupied):
        r = abs(levels[li])
        if fill_hidden and r >= 1.0:
            _fill_hidden(acc_c, acc_a)
        wgt = ((idx == li + 1) & (t_hi < 1 - 1e-6)).to(t_hi.dtype).add_(torch.where(idx == li, t_hi, 0.0))
        torch.mul(rgb, wgt.unsqueeze(1), out=x[:, :3])
        x[:, 3] = wgt
        x[:, 4] = 1.0
        del wgt
        layer = _blur_layer(x, r, _layer_scale(r, min_lowres_radius, max_scale), blades, blade_rotation)
        a = layer[:, 3:4].clamp(0, 1)
        acc_c.mul_(1 - a).add_(layer[:, :3])
        acc_a.mul_(1 - a).add_(a)
        del layer, a
        if callback is not None:
            callback(step + 1, total)
    out = acc_c.div_(acc_a.clamp_min(1e-6)).clamp_(0, 1).pow_(1.0 / gamma)
    return out.permute(0, 2, 3, 1).contiguous()


def bokeh_stack(image: torch.Tensor, disparity: torch.Tensor, k_values, focus_disparity,
                callback: ProgressFn = None, **options) -> torch.Tensor:
    """Fixed focus, swept aperture: ``[B,N,H,W,3]``, one frame per ``K``."""
    image = image_batch(image)
    b = image.shape[0]
    ks = k_table(k_values, b, device=image.device)
    fds = per_item("focus_disparity", focus_disparity, b, image.device, allow_negative=False)
    return _frames(image, disparity, ks, fds.unsqueeze(1).expand_as(ks), callback, options)


def focus_stack(image: torch.Tensor, disparity: torch.Tensor, focus_disparities, k,
                callback: ProgressFn = None, **options) -> torch.Tensor:
    """Fixed aperture, swept focus (uniform steps in disparity): ``[B,N,H,W,3]``."""
    image = image_batch(image)
    b = image.shape[0]
    fds = per_item_rows("focus_disparities", focus_disparities, b, image.device, allow_negative=False)
    ks = per_item("k", k, b, image.device, positive=True)
    return _frames(image, disparity, ks.unsqueeze(1).expand_as(fds), fds, callback, options)


def _frames(image, disparity, ks: torch.Tensor, fds: torch.Tensor, callback: ProgressFn, options) -> torch.Tensor:
    """One frame per column of ``ks`` and ``fds`` ``[B,N]``: ``[B,N,H,W,3]``."""
    n = ks.shape[1]
    frames = []
    for i in range(n):
        # between layers the callback hears "frame i of n under way", so Cancel acts inside a frame
        layers = None if callback is None else (lambda _d, _t, done=i: callback(done, n))
        frames.append(render_bokeh(image, disparity, ks[:, i], fds[:, i], callback=layers, **options))
        if callback is not None:
            callback(i + 1, n)
    return torch.stack(frames, 1)


def uniform_focus_disparities(disparity: torch.Tensor, n: int, margin: float = 0.0) -> torch.Tensor:
    """``n`` focus disparities per batch item spread uniformly over the scene's disparity range
    (a focus sweep uniform in disparity is uniform in blur). ``[B, n]``."""
    n = integer("n (frames)", n, 1, MAX_K_VALUES)
    d = depth_batch(disparity, "disparity").flatten(1)
    lo, hi = d.amin(1), d.amax(1)
    span = hi - lo
    lo, hi = lo + margin * span, hi - margin * span
    if n == 1:
        return ((lo + hi) / 2).unsqueeze(1)
    t = torch.linspace(0, 1, n, device=d.device)
    return lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * t.unsqueeze(0)
