"""Aperture point-spread functions and FFT blurs shared by the renderer and the bokeh-sweep estimator.

An aperture is a disk (``blades = 0``) or a regular polygon with anti-aliased edges. Blurs are
non-wrapping FFT convolutions normalised by the blurred image support, so the frame border acts as
"unknown" rather than "black". Blur radii come from one grid: fine steps for small radii, then
relative steps (blur detail scales with the radius).
"""

from __future__ import annotations

import math

import torch


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
    """rfft2 of an odd square kernel centred at the origin of a ``ph x pw`` grid."""
    ks = kernel.shape[-1]
    kpad = torch.zeros(ph, pw, device=kernel.device, dtype=kernel.dtype)
    kpad[:ks, :ks] = kernel
    return torch.fft.rfft2(torch.roll(kpad, shifts=(-(ks // 2), -(ks // 2)), dims=(0, 1)))


class SupportBlur:
    """Blurs of one image by apertures up to ``max_radius`` px, its spectrum computed once.

    ``x [B,C+1,H,W]`` carries its support (coverage, usually ones) as the last channel; each blur
    returns the first ``C`` channels divided by the blurred support.
    """

    def __init__(self, x: torch.Tensor, max_radius: float):
        self.h, self.w = x.shape[-2:]
        self.ph, self.pw = fft_size(self.h, self.w, kernel_half_size(max_radius))
        self.spectrum = torch.fft.rfft2(x, s=(self.ph, self.pw))
        self.device, self.dtype = x.device, x.dtype

    def __call__(self, radius: float, blades: int = 0, rotation_deg: float = 0.0) -> torch.Tensor:
        k = aperture_kernel(radius, blades, rotation_deg, self.device, self.dtype)
        out = torch.fft.irfft2(self.spectrum * kernel_spectrum(k, self.ph, self.pw), s=(self.ph, self.pw))
        out = out[..., :self.h, :self.w]
        return out[:, :-1] / out[:, -1:].clamp_min(1e-6)


def with_support(x: torch.Tensor) -> torch.Tensor:
    """``x [B,C,H,W]`` with a channel of ones appended: the support :class:`SupportBlur` divides by."""
    return torch.cat([x, torch.ones_like(x[:, :1])], 1)


def radius_grid(max_radius: float, fine_step: float = 0.5, fine_until: float = 3.0, rel_step: float = 0.12) -> list[float]:
    """Non-negative blur radii: ``fine_step`` apart up to ``fine_until``, then growing by ``rel_step``."""
    grid = [0.0]
    r = 0.0
    while r < max_radius - 1e-6:
        r = r + fine_step if r < fine_until - 1e-6 else r * (1.0 + rel_step)
        grid.append(r)
    return grid
