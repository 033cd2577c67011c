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
from typing import Callable, Optional

import torch
import torch.nn.functional as F

ProgressFn = Optional[Callable[[int, int], None]]


# --------------------------------------------------------------------------- checks

def batch_scalar(name: str, value, b: int, device, positive: bool = False, allow_zero: bool = True) -> torch.Tensor:
    """One number or one per batch item -> finite ``[b]`` (``positive``: > 0; not ``allow_zero``: >= 0)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(b)
    if t.numel() != b:
        raise ValueError(f"{name} must be one number or one per batch item ({b}), got {t.numel()} values")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    if positive and bool((t <= 0).any()):
        raise ValueError(f"{name} must be > 0, got {t.tolist()}")
    if not allow_zero and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0, got {t.tolist()}")
    return t.contiguous()


def check_image(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor [B,H,W,3] in 0..1, got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be [B,H,W,3] (RGB, channels last), got {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return image.float()


def check_disparity(disparity: torch.Tensor, image: torch.Tensor, name: str = "disparity") -> torch.Tensor:
    if not isinstance(disparity, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor [B,H,W] in 1/m")
    if disparity.ndim == 2:
        disparity = disparity.unsqueeze(0)
    if disparity.ndim == 4 and disparity.shape[-1] == 1:
        disparity = disparity[..., 0]
    if disparity.ndim != 3:
        raise ValueError(f"{name} must be [B,H,W], got {tuple(disparity.shape)}")
    if tuple(disparity.shape[1:]) != tuple(image.shape[1:3]):
        raise ValueError(f"{name} is {tuple(disparity.shape[1:])} (H,W) but the image is {tuple(image.shape[1:3])}: "
                         "resize the depth map to the image size")
    if disparity.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"{name} batch {disparity.shape[0]} does not match image batch {image.shape[0]}")
    if not bool(torch.isfinite(disparity).all()):
        raise ValueError(f"{name} contains NaN or inf values: fill holes in the depth map first")
    if bool((disparity < 0).any()):
        raise ValueError(f"{name} has negative values: disparity is 1/depth and must be >= 0")
    return disparity.float().expand(image.shape[0], -1, -1).to(image.device)


def depth_to_disparity(depth: torch.Tensor, name: str = "depth") -> torch.Tensor:
    """Metres -> 1/m, with a clear error for NaN, inf, zero or negative depth."""
    if not isinstance(depth, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor [B,H,W] in metres")
    if not bool(torch.isfinite(depth).all()):
        raise ValueError(f"{name} contains NaN or inf values: fill holes in the depth map first")
    if bool((depth <= 0).any()):
        raise ValueError(f"{name} must be > 0 metres everywhere (found {int((depth <= 0).sum())} pixels <= 0)")
    return 1.0 / depth.float()


FOCUS_MODES = ("distance", "auto (median)", "auto (edges)")


def resize_to(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a ``[B,H,W]`` map (depth, disparity, confidence) to ``height x width``, bilinear."""
    if tuple(depth.shape[-2:]) == (height, width):
        return depth
    return F.interpolate(depth.unsqueeze(1).float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def depth_for_image(depth: torch.Tensor, image: torch.Tensor, confidence: Optional[torch.Tensor] = None,
                    name: str = "depth") -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Metric depth (and its confidence) checked, resized to ``image [B,H,W,3]`` and broadcast over
    its batch: ``([B,H,W], [B,H,W] or None)`` on the image's device."""
    b, h, w = image.shape[0], image.shape[1], image.shape[2]
    d = depth.to(image.device).float()
    if d.ndim == 2:
        d = d.unsqueeze(0)
    if d.shape[0] not in (1, b):
        raise ValueError(f"{name} batch {d.shape[0]} does not match image batch {b}: give one depth or one per image")
    depth_to_disparity(d, name)  # NaN / inf / <= 0 check with a clear message
    d = resize_to(d, h, w).expand(b, -1, -1)
    if confidence is not None:
        confidence = resize_to(confidence.to(image.device).float(), h, w).expand(b, -1, -1)
    return d, confidence


def resolve_focus(depth: torch.Tensor, image: Optional[torch.Tensor], mode: str = "distance",
                  focus_m: float = 2.0, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Focus distance (m) per batch item: the given ``focus_m``, the median depth (under ``mask`` if
    given), or the image-edge-weighted median depth (``optics.focus_from_edges``). ``[B]``."""
    from . import optics

    b = depth.shape[0]
    if mode == "distance":
        if not (isinstance(focus_m, (int, float)) and math.isfinite(focus_m) and focus_m > 0):
            raise ValueError(f"focus_distance_m must be > 0 m in 'distance' mode, got {focus_m!r}")
        return torch.full((b,), float(focus_m), device=depth.device)
    if mode == "auto (median)":
        if mask is not None:
            mask = resize_to(mask.float().reshape(-1, *mask.shape[-2:]), *depth.shape[-2:]) > 0.5
            mask = mask.expand_as(depth) if mask.shape[0] == 1 else mask
        return optics.focus_from_mask(depth, mask)
    if mode == "auto (edges)":
        if image is None:
            raise ValueError("focus mode 'auto (edges)' needs the image")
        return optics.focus_from_edges(depth, image)
    raise ValueError(f"focus mode must be one of {', '.join(FOCUS_MODES)}; got {mode!r}")


# --------------------------------------------------------------------------- kernels

def aperture_kernel(radius: float, blades: int = 0, rotation_deg: float = 0.0, device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """Normalised ``[2R+1, 2R+1]`` PSF: a disk of ``radius`` px (``blades`` = 0) or a regular polygon
    with that circumradius, with anti-aliased edges (pixel coverage ~ 0.5 - signed distance)."""
    r = float(radius)
    size = int(math.ceil(r + 0.5))
    ax = torch.arange(-size, size + 1, device=device, dtype=dtype)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    if blades and blades >= 3:
        rot = math.radians(rotation_deg)
        angles = torch.tensor([rot + (2 * i + 1) * math.pi / blades for i in range(blades)], device=device, dtype=dtype)
        apothem = r * math.cos(math.pi / blades)
        proj = x[..., None] * torch.cos(angles) + y[..., None] * torch.sin(angles)
        sdf = proj.amax(-1) - apothem
    else:
        sdf = torch.sqrt(x * x + y * y) - r
    k = (0.5 - sdf).clamp(0.0, 1.0)
    return k / k.sum()


def _good_size(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5 (fast FFT lengths)."""
    m = n
    while True:
        v = m
        for p in (2, 3, 5):
            while v % p == 0:
                v //= p
        if v == 1:
            return m
        m += 1


def fft_size(h: int, w: int, half: int) -> tuple[int, int]:
    """FFT grid for a non-wrapping convolution of ``h x w`` with a kernel of half-size ``half``."""
    return _good_size(h + half + 1), _good_size(w + half + 1)


def kernel_spectrum(kernel: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """rfft2 of an odd square kernel centred at the origin of a ``ph x pw`` grid."""
    ks = kernel.shape[-1]
    kpad = torch.zeros(ph, pw, device=kernel.device, dtype=kernel.dtype)
    kpad[:ks, :ks] = kernel
    return torch.fft.rfft2(torch.roll(kpad, shifts=(-(ks // 2), -(ks // 2)), dims=(0, 1)))


def fft_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-padded (non-wrapping) 2-D convolution of ``x [B,C,H,W]`` with an odd square kernel."""
    h, w = x.shape[-2:]
    ks = kernel.shape[-1]
    if ks == 1:
        return x * kernel.reshape(())
    ph, pw = fft_size(h, w, ks // 2)
    xf = torch.fft.rfft2(x, s=(ph, pw))
    out = torch.fft.irfft2(xf * kernel_spectrum(kernel.to(x.device, x.dtype), ph, pw), s=(ph, pw))
    return out[..., :h, :w]


def radius_grid(max_radius: float, fine_step: float = 0.5, fine_until: float = 3.0, rel_step: float = 0.12) -> list[float]:
    """Non-negative layer radii: ``fine_step`` apart up to ``fine_until``, then growing by ``rel_step``."""
    grid = [0.0]
    r = 0.0
    while r < max_radius - 1e-6:
        r = r + fine_step if r < fine_until - 1e-6 else r * (1.0 + rel_step)
        grid.append(r)
    return grid


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
    b, _, h, w = premult.shape
    x = torch.cat([premult, torch.ones_like(premult[:, :1])], 1)
    kernel_radius = radius / scale
    if scale > 1:
        ph, pw = (-h) % scale, (-w) % scale
        x = F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x
        x = F.avg_pool2d(x, scale)
    x = fft_blur(x, aperture_kernel(kernel_radius, blades, rotation, x.device, x.dtype))
    x = x[:, :4] / x[:, 4:].clamp_min(1e-6)
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
    image = check_image(image)
    disparity = check_disparity(disparity, image)
    b, h, w, _ = image.shape
    dev = image.device
    kk = batch_scalar("k", k, b, dev, positive=True)
    fd = batch_scalar("focus_disparity", focus_disparity, b, dev, allow_zero=False)
    if gamma <= 0 or not math.isfinite(gamma):
        raise ValueError(f"gamma must be > 0 (2.2 = sRGB-like, 1 = blur the values as they are), got {gamma}")
    if blades and not (3 <= int(blades) <= 32):
        raise ValueError(f"blades must be 0 (round) or 3..32, got {blades}")

    signed = kk.view(b, 1, 1) * (disparity - fd.view(b, 1, 1))  # > 0: in front of the focal plane
    if confidence is not None:
        conf = check_disparity(confidence, image, name="confidence")
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


def batch_values(name: str, values, b: int, device) -> torch.Tensor:
    """A list of numbers shared by the batch, or ``[B,N]`` -> finite ``[b, N]``."""
    t = torch.as_tensor(values, dtype=torch.float32, device=device)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim == 1:
        t = t.unsqueeze(0).expand(b, -1)
    if t.ndim != 2 or t.shape[0] != b or t.shape[1] == 0:
        raise ValueError(f"{name} must be a list of numbers (or [B,N]), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite numbers")
    return t


def bokeh_stack(image: torch.Tensor, disparity: torch.Tensor, k_values, focus_disparity,
                callback: ProgressFn = None, **options) -> torch.Tensor:
    """Fixed focus, swept aperture: ``[B,N,H,W,3]``, one frame per ``K``."""
    image = check_image(image)
    ks = batch_values("k_values", k_values, image.shape[0], image.device)
    if bool((ks <= 0).any()):
        raise ValueError(f"k_values must all be > 0 (K is a blur strength in px*m), got {ks[0].tolist()}")
    n = ks.shape[1]
    frames = []
    for i in range(n):
        frames.append(render_bokeh(image, disparity, ks[:, i], focus_disparity, **options))
        if callback is not None:
            callback(i + 1, n)
    return torch.stack(frames, 1)


def focus_stack(image: torch.Tensor, disparity: torch.Tensor, focus_disparities, k,
                callback: ProgressFn = None, **options) -> torch.Tensor:
    """Fixed aperture, swept focus (uniform steps in disparity): ``[B,N,H,W,3]``."""
    image = check_image(image)
    fds = batch_values("focus_disparities", focus_disparities, image.shape[0], image.device)
    if bool((fds < 0).any()):
        raise ValueError("focus_disparities must be >= 0 (1/m)")
    n = fds.shape[1]
    frames = []
    for i in range(n):
        frames.append(render_bokeh(image, disparity, k, fds[:, i], **options))
        if callback is not None:
            callback(i + 1, n)
    return torch.stack(frames, 1)


def uniform_focus_disparities(disparity: torch.Tensor, n: int, margin: float = 0.0) -> torch.Tensor:
    """``n`` focus disparities per batch item spread uniformly over the scene's disparity range
    (seed 004: a focus sweep uniform in disparity is uniform in blur). ``[B, n]``."""
    if n < 1:
        raise ValueError(f"n (frames) must be >= 1, got {n}")
    d = disparity.reshape(disparity.shape[0], -1)
    lo, hi = d.amin(1), d.amax(1)
    span = hi - lo
    lo, hi = lo + margin * span, hi - margin * span
    if n == 1:
        return ((lo + hi) / 2).unsqueeze(1)
    t = torch.linspace(0, 1, n, device=d.device)
    return lo.unsqueeze(1) + (hi - lo).unsqueeze(1) * t.unsqueeze(0)
