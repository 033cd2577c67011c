"""Aperture PSFs and the FFT blur shared by the renderer and the sweep estimator."""

import math

import pytest
import torch
import torch.nn.functional as F

from bokehdepth_core import psf


@pytest.mark.parametrize("radius,blades", [(0.0, 0), (0.7, 0), (3.3, 0), (6.0, 6), (9.5, 5)])
def test_kernel_is_normalised_and_sized(radius, blades):
    k = psf.aperture_kernel(radius, blades)
    half = psf.kernel_half_size(radius)
    assert k.shape == (2 * half + 1, 2 * half + 1)
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    if blades % 2 == 0:  # disks and even polygons are point-symmetric about the centre
        assert torch.allclose(k, k.flip(0).flip(1), atol=1e-7)


def test_disk_area_and_polygon_shape():
    r = 8.0
    disk = psf.aperture_kernel(r)
    covered = float((disk / disk.max()).sum())  # anti-aliased coverage adds up to the disk's area
    assert covered == pytest.approx(math.pi * r * r, rel=0.01)
    hexa = psf.aperture_kernel(r, blades=6)
    hex_area = 1.5 * math.sqrt(3) * r * r  # regular hexagon of circumradius r
    assert float((hexa / hexa.max()).sum()) == pytest.approx(hex_area, rel=0.02)
    turned = psf.aperture_kernel(r, blades=6, rotation_deg=30.0)
    assert (turned - hexa).abs().max() > 1e-3


def test_fft_sizes_have_small_prime_factors():
    for h, w, half in ((20, 17, 4), (97, 131, 9), (512, 512, 30)):
        ph, pw = psf.fft_size(h, w, half)
        assert ph >= h + half + 1 and pw >= w + half + 1
        for n in (ph, pw):
            for p in (2, 3, 5):
                while n % p == 0:
                    n //= p
            assert n == 1


def test_kernel_spectrum_matches_direct_convolution():
    x = torch.rand(1, 2, 20, 17)
    k = psf.aperture_kernel(3.3)
    direct = F.conv2d(x.reshape(2, 1, 20, 17), k[None, None], padding=k.shape[-1] // 2).reshape(1, 2, 20, 17)
    ph, pw = psf.fft_size(20, 17, k.shape[-1] // 2)
    via_fft = torch.fft.irfft2(torch.fft.rfft2(x, s=(ph, pw)) * psf.kernel_spectrum(k, ph, pw), s=(ph, pw))
    assert torch.allclose(via_fft[..., :20, :17], direct, atol=1e-5)


def test_support_blur_is_a_border_normalised_convolution():
    x = torch.rand(2, 3, 24, 19)
    blur = psf.SupportBlur(psf.with_support(x), max_radius=5.0)
    for radius, blades in ((2.5, 0), (5.0, 6)):
        k = psf.aperture_kernel(radius, blades)
        pad = k.shape[-1] // 2
        num = F.conv2d(x.reshape(6, 1, 24, 19), k[None, None], padding=pad).reshape(2, 3, 24, 19)
        den = F.conv2d(torch.ones(1, 1, 24, 19), k[None, None], padding=pad)
        assert torch.allclose(blur(radius, blades), num / den, atol=1e-5)
    flat = torch.full((1, 3, 16, 16), 0.4)
    assert torch.allclose(psf.SupportBlur(psf.with_support(flat), 6.0)(6.0), flat, atol=1e-5)  # no dark border


def test_radius_grid():
    grid = psf.radius_grid(10.0)
    assert grid[:7] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert grid[-1] >= 10.0 > grid[-2]
    steps = [b / a for a, b in zip(grid[6:], grid[7:])]
    assert all(s == pytest.approx(1.12) for s in steps)
    assert psf.radius_grid(0.0) == [0.0]
