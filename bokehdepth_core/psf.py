"""Aperture point-spread functions and FFT blurs shared by the renderer and the bokeh-sweep estimator.

An aperture is a disk (``blades = 0``) or a regular polygon with anti-aliased edges. Blurs are
non-wrapping FFT convolutions normalised by the blurred image support, so the frame border acts as
"unknown" rather than "black". Blur radii come from one grid: fine steps for small radii, then
relative steps (blur detail scales with the radius).
"""

from __future__ import annotations

import math
from typing import Optional

import torch


def aperture_kernel(radius: float, blades: int = 0, rotation_deg: float = 0.0, device=None,
                    dtype=torch.float32, reach: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """Normalised ``[2R+1, 2R+1]`` PSF: a disk of ``radius`` px (``blades`` = 0) or a regular polygon
    with that circumradius, with anti-aliased edges (pixel coverage ~ 0.5 - signed distance).
    ``reach = (ry, rx)`` keeps only offsets up to ``ry`` rows and ``rx`` columns: the part of a
    kernel wider than the image it blurs, which no pair of its pixels can use."""
    r = float(radius)
    size = kernel_half_size(r)
    ry, rx = (size, size) if reach is None else (min(size, reach[0]), min(size, reach[1]))
    y, x = torch.meshgrid(torch.arange(-ry, ry + 1, device=device, dtype=dtype),
                          torch.arange(-rx, rx + 1, device=device, dtype=dtype), indexing="ij")
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


def kernel_half_size(radius: float) -> int:
    """Half-size of :func:`aperture_kernel` for ``radius``: the kernel is ``2 * half + 1`` wide."""
    return int(math.ceil(float(radius) + 0.5))


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
    """rfft2 of an odd-sized kernel centred at the origin of a ``ph x pw`` grid."""
    ky, kx = kernel.shape[-2:]
    kpad = torch.zeros(ph, pw, device=kernel.device, dtype=kernel.dtype)
    kpad[:ky, :kx] = kernel
    return torch.fft.rfft2(torch.roll(kpad, shifts=(-(ky // 2), -(kx // 2)), dims=(0, 1)))


def _plan(h: int, w: int, max_radius: float) -> tuple[tuple[int, int], int, int]:
    """(kernel reach, FFT rows, FFT columns) for blurring ``h x w`` by up to ``max_radius`` px:
    offsets beyond the image size never meet two of its pixels, so kernels are cut there."""
    half = kernel_half_size(max_radius)
    reach = (min(half, h - 1), min(half, w - 1))
    return reach, _good_size(h + reach[0] + 1), _good_size(w + reach[1] + 1)


def _normalised(out: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The first ``C`` channels of a blurred ``[B,C+1,ph,pw]`` divided by its blurred support, cropped to ``h x w``."""
    out = out[..., :h, :w]
    return out[:, :-1] / out[:, -1:].clamp_min(1e-6)


class SupportBlur:
    """Blurs of one image by apertures up to ``max_radius`` px, its spectrum computed once.

    ``x [B,C+1,H,W]`` carries its support (coverage, usually ones) as the last channel; each blur
    returns the first ``C`` channels divided by the blurred support.
    """

    def __init__(self, x: torch.Tensor, max_radius: float):
        self.h, self.w = x.shape[-2:]
        self.reach, self.ph, self.pw = _plan(self.h, self.w, max_radius)
        self.spectrum = torch.fft.rfft2(x, s=(self.ph, self.pw))
        self.device, self.dtype = x.device, x.dtype

    def __call__(self, radius: float, blades: int = 0, rotation_deg: float = 0.0) -> torch.Tensor:
        k = aperture_kernel(radius, blades, rotation_deg, self.device, self.dtype, self.reach)
        out = torch.fft.irfft2(self.spectrum * kernel_spectrum(k, self.ph, self.pw), s=(self.ph, self.pw))
        return _normalised(out, self.h, self.w)


def blur_once(x: torch.Tensor, radius: float, blades: int = 0, rotation_deg: float = 0.0,
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One :class:`SupportBlur` blur of ``x [B,C+1,H,W]``, one channel at a time, so the FFT buffers
    stay the size of one channel; written into ``out`` (may be ``x`` itself) and returned as a view
    of its first ``C`` channels."""
    h, w = x.shape[-2:]
    reach, ph, pw = _plan(h, w, radius)
    spec = kernel_spectrum(aperture_kernel(radius, blades, rotation_deg, x.device, x.dtype, reach), ph, pw)
    out = torch.empty_like(x) if out is None else out
    for c in range(x.shape[1]):
        out[:, c] = torch.fft.irfft2(torch.fft.rfft2(x[:, c], s=(ph, pw)) * spec, s=(ph, pw))[..., :h, :w]
    return out[:, :-1].div_(out[:, -1:].clamp_min(1e-6))


def with_support(x: torch.Tensor) -> torch.Tensor:
    """``x [B,C,H,W]`` with a channel of ones appended: the support :class:`SupportBlur` divides by."""
    return torch.cat([x, torch.ones_like(x[:, :1])], 1)


def covering_radius(h: int, w: int, blades: int = 0) -> float:
    """A blur radius past which the aperture covers every pair of pixels of an ``h x w`` frame:
    all larger radii blur it to its mean, so callers cap radii there."""
    reach = math.hypot(h, w) + 1.0
    return reach / math.cos(math.pi / blades) if blades and blades >= 3 else reach


def radius_grid(max_radius: float, fine_step: float = 0.5, fine_until: float = 3.0, rel_step: float = 0.12) -> list[float]:
    """Non-negative blur radii: ``fine_step`` apart up to ``fine_until``, then growing by ``rel_step``."""
    grid = [0.0]
    r = 0.0
    while r < max_radius - 1e-6:
        r = r + fine_step if r < fine_until - 1e-6 else r * (1.0 + rel_step)
        grid.append(r)
    return grid
