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

from typing import Optional

import torch
import torch.nn.functional as F

from .checks import depth_batch, image_batch, k_table, map_like, number, per_item, per_item_rows
from .psf import SupportBlur, radius_grid, with_support
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


def _blur_layer(premult: torch.Tensor, radius: float, scale: int, blades: int, rotation: float) -> torch.Tensor:
    """Blur ``[B,4,H,W]`` (rgb*w, w) by the aperture of ``radius`` px, at 1/scale resolution.

    Normalised by the blurred image support, so the frame border acts as "unknown" rather than
    "transparent" (a blurred layer stays opaque up to the border)."""
    if radius <= 0:
        return premult
    h, w = premult.shape[-2:]
    x = with_support(premult)
    kernel_radius = radius / scale
    if scale > 1:
        ph, pw = (-h) % scale, (-w) % scale
        x = F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x
        x = F.avg_pool2d(x, scale)
    x = SupportBlur(x, kernel_radius)(kernel_radius, blades, rotation)
    if scale > 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)[..., :h, :w]
    return x


def _fill_hidden(c: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Complete a premultiplied accumulation (colour ``c``, coverage ``a``) to full coverage by
    push-pull: holes take the colour of the nearest covered content, coarse to fine."""
    amin, amax = float(a.amin()), float(a.amax())
    if amin > 0.999 or amax <= 1e-6:
        return c, a
    pyr = [(c, a)]
    while min(pyr[-1][1].shape[-2:]) > 2:
        cc, aa = pyr[-1]
        pyr.append((F.avg_pool2d(cc, 2, ceil_mode=True), F.avg_pool2d(aa, 2, ceil_mode=True)))
    cc, aa = pyr[-1]
    fill = cc / aa.clamp_min(1e-6)
    for cc, aa in reversed(pyr[:-1]):
        up = F.interpolate(fill, size=cc.shape[-2:], mode="bilinear", align_corners=False)
        fill = cc + (1 - aa.clamp(0, 1)) * up
    return fill, torch.ones_like(a)


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
    number("gamma", gamma, "> 0 (2.2 = sRGB-like, 1 = blur the values as they are)")
    if blades and not (3 <= int(blades) <= 32):
        raise ValueError(f"blades must be 0 (round) or 3..32, got {blades}")

    signed = kk.view(b, 1, 1) * (disparity - fd.view(b, 1, 1))  # > 0: in front of the focal plane
    if confidence is not None:
        conf = map_like(confidence, image, "confidence", allow_negative=False)
        signed = smooth_radius_field(signed, conf.clamp(0, 1), image)
    if max_radius is not None:
        signed = signed.clamp(-float(max_radius), float(max_radius))

    lin = image.clamp(0, 1) ** gamma
    if highlight > 0:
        lum = lin.mean(-1, keepdim=True)
        t = ((lum - highlight_threshold) / max(1e-6, 1 - highlight_threshold)).clamp(0, 1)
        lin = lin * (1 + float(highlight) * t * t)
    rgb = lin.permute(0, 3, 1, 2)

    rmax = float(signed.abs().max())
    grid = radius_grid(rmax, rel_step=rel_step)
    levels = [-g for g in reversed(grid[1:])] + grid  # back (far) to front (near)
    lv = torch.tensor(levels, device=dev, dtype=signed.dtype)
    # Linear split of every pixel between its two neighbouring levels.
    if len(levels) == 1:  # everything on the focal plane
        return image.clamp(0, 1).clone()
    idx = torch.searchsorted(lv, signed.contiguous(), right=True).clamp(1, len(levels) - 1)
    lo, hi = lv[idx - 1], lv[idx]
    t_hi = ((signed - lo) / (hi - lo)).clamp(0, 1)
    # The farther level takes the pixel at full coverage and the nearer one goes over it with
    # coverage t: "over" then yields (1-t)*B_lo + t*B_hi with full coverage inside a surface.
    w_lo = (t_hi < 1 - 1e-6).to(t_hi.dtype)
    zero = torch.zeros_like(t_hi)

    acc_c = torch.zeros(b, 3, h, w, device=dev, dtype=rgb.dtype)
    acc_a = torch.zeros(b, 1, h, w, device=dev, dtype=rgb.dtype)
    occupied = torch.unique(torch.cat([(idx - 1)[w_lo > 0], idx[t_hi > 0]])).tolist()
    total = len(occupied)
    for step, li in enumerate(occupied):
        level = levels[li]
        wgt = torch.where(idx - 1 == li, w_lo, zero) + torch.where(idx == li, t_hi, zero)
        r = abs(level)
        if fill_hidden and r >= 1.0:
            acc_c, acc_a = _fill_hidden(acc_c, acc_a)
        wgt = wgt.unsqueeze(1)
        layer = torch.cat([rgb * wgt, wgt], 1)
        layer = _blur_layer(layer, r, _layer_scale(r, min_lowres_radius, max_scale), int(blades), blade_rotation)
        a = layer[:, 3:4].clamp(0, 1)
        acc_c = acc_c * (1 - a) + layer[:, :3]
        acc_a = acc_a * (1 - a) + a
        if callback is not None:
            callback(step + 1, total)
    out = (acc_c / acc_a.clamp_min(1e-6)).clamp(0, 1) ** (1.0 / gamma)
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
        frames.append(render_bokeh(image, disparity, ks[:, i], fds[:, i], **options))
        if callback is not None:
            callback(i + 1, n)
    return torch.stack(frames, 1)


def uniform_focus_disparities(disparity: torch.Tensor, n: int, margin: float = 0.0) -> torch.Tensor:
    """``n`` focus disparities per batch item spread uniformly over the scene's disparity range
    (a focus sweep uniform in disparity is uniform in blur). ``[B, n]``."""
    if n < 1:
        raise ValueError(f"n (frames) must be >= 1, got {n}")
    d = depth_batch(disparity, "disparity").flatten(1)
    lo, hi = d.amin(1), d.amax(1)
    span = hi - lo
    lo, hi = lo + margin * span, hi - margin * span
    if n == 1:
        return ((lo + hi) / 2).unsqueeze(1)
    t = torch.linspace(0, 1, n, device=d.device)
    return lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * t.unsqueeze(0)
