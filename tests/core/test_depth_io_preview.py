"""Depth previews: colormaps, display ranges, colourised depth (bokehdepth_core.depth_io.preview)."""

import pytest
import torch

from bokehdepth_core import depth_io as dio
from bokehdepth_core.depth_io import colormaps
from bokehdepth_core.types import DepthMap
from support import depth_with_holes


def _lum(rgb):
    return rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722


# ------------------------------------------------------------------ colormaps

@pytest.mark.parametrize("cmap", dio.COLORMAPS)
def test_colormap_endpoints_and_range(cmap):
    table = torch.tensor(colormaps._TABLES[cmap])
    out = dio.apply_colormap(torch.tensor([0.0, 1.0, -3.0, 7.0]), cmap)
    assert torch.allclose(out[0], table[0]) and torch.allclose(out[1], table[-1])
    assert torch.allclose(out[2], table[0]) and torch.allclose(out[3], table[-1])  # clamped
    t = torch.linspace(0, 1, 301)
    rgb = dio.apply_colormap(t, cmap)
    assert rgb.shape == (301, 3) and rgb.min() >= 0 and rgb.max() <= 1
    # piecewise-linear: no jumps between neighbouring samples
    assert (rgb[1:] - rgb[:-1]).abs().max() < 0.05
    flipped = dio.apply_colormap(t, cmap + "_r")
    assert torch.allclose(flipped, rgb.flip(0), atol=1e-6)


@pytest.mark.parametrize("cmap", ["gray", "inferno", "magma", "viridis"])
def test_sequential_maps_brighten_towards_near(cmap):
    lum = _lum(dio.apply_colormap(torch.linspace(0, 1, 200), cmap))
    assert (lum[1:] - lum[:-1]).min() > 0, "luminance must rise strictly from far to near"


def test_gray_is_linear_and_near_warm_for_diverging_maps():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(dio.apply_colormap(t, "gray"), t[:, None].expand(11, 3), atol=1e-6)
    for cmap in ("Spectral", "turbo"):
        near, far = dio.apply_colormap(torch.tensor([1.0, 0.0]), cmap)
        assert near[0] > near[2] and far[2] > far[0], f"{cmap}: near must be red-ish, far blue-ish"


def test_unknown_colormap_named():
    with pytest.raises(ValueError, match="cmap"):
        dio.apply_colormap(torch.zeros(3), "jet")


# ------------------------------------------------------------------ colorize

def test_colorize_shapes_and_orientation():
    d = torch.linspace(1.0, 3.0, 5).reshape(1, 1, 5).expand(1, 4, 5)
    img = dio.colorize(d, cmap="gray", mode="minmax", inverse=False)
    assert img.shape == (1, 4, 5, 3) and img.dtype == torch.float32
    assert img[0, 0, 0, 0] == pytest.approx(1.0) and img[0, 0, -1, 0] == pytest.approx(0.0)
    # depth 1.5 m in a 1..3 m range: linear -> 0.75, inverse -> (1/1.5-1/3)/(1-1/3) = 0.5
    d2 = torch.tensor([[[1.0, 1.5, 3.0]]])
    lin = dio.colorize(d2, "gray", "minmax", inverse=False)[0, 0, 1, 0]
    inv = dio.colorize(d2, "gray", "minmax", inverse=True)[0, 0, 1, 0]
    assert lin.item() == pytest.approx(0.75, abs=1e-5) and inv.item() == pytest.approx(0.5, abs=1e-5)
    assert dio.colorize(d2[0], "gray").shape == (1, 1, 3, 3)  # [H,W] accepted
    assert dio.colorize(DepthMap(depth=d2), "gray").shape == (1, 1, 3, 3)


def test_colorize_invalid_pixels_get_invalid_colour_and_do_not_set_range():
    d = depth_with_holes()
    img = dio.colorize(d, cmap="turbo", mode="minmax", invalid_color=(1.0, 0.0, 1.0))
    for b, y, x in [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 3, 3)]:
        assert img[b, y, x].tolist() == [1.0, 0.0, 1.0]
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    ok = dio.valid_mask(d[0])
    (lo, hi), _ = dio.depth_range(d, "minmax")
    assert lo == pytest.approx(d[0][ok].min().item()) and hi == pytest.approx(d[0][ok].max().item())
    near_px = torch.nonzero(d[0] == d[0][ok].min())[0]
    assert torch.allclose(img[0, near_px[0], near_px[1]], dio.apply_colormap(torch.tensor(1.0), "turbo"))
    all_bad = dio.colorize(torch.full((1, 3, 3), float("nan")), invalid_color=(0.2, 0.3, 0.4))
    assert torch.allclose(all_bad, torch.tensor([0.2, 0.3, 0.4]).expand(1, 3, 3, 3))


def test_range_modes():
    d = torch.linspace(1.0, 2.0, 10000).reshape(1, 100, 100).clone()
    d[0, 0, 0] = 500.0  # one outlier: percentile ignores it, minmax does not
    (plo, phi), = dio.depth_range(d, "percentile")
    (mlo, mhi), = dio.depth_range(d, "minmax")
    assert mhi == 500.0 and phi < 2.0 and plo == pytest.approx(1.02, abs=0.005)
    assert dio.depth_range(d, "fixed", 0.5, 4.0) == [(0.5, 4.0)]
    img = dio.colorize(torch.tensor([[[0.1, 100.0]]]), "gray", "fixed", near=0.5, far=4.0)
    assert img[0, 0, 0, 0] == pytest.approx(1.0) and img[0, 0, 1, 0] == pytest.approx(0.0)  # clipped
    for near, far in [(2.0, 1.0), (None, 3.0), (0.0, 1.0)]:
        with pytest.raises(ValueError, match="near"):
            dio.depth_range(d, "fixed", near, far)
    with pytest.raises(ValueError, match="mode"):
        dio.colorize(d, mode="auto")
    flat = dio.colorize(torch.full((1, 4, 4), 2.0))
    assert torch.isfinite(flat).all()


def test_colorize_with_given_ranges_matches_computed_ones():
    d = depth_with_holes()
    ranges = dio.depth_range(d, "percentile")
    assert torch.equal(dio.colorize(d, ranges=ranges), dio.colorize(d))
    other = dio.colorize(d, ranges=[(1.0, 2.0), (1.0, 2.0)])
    assert not torch.equal(other, dio.colorize(d))
    with pytest.raises(ValueError, match="ranges"):
        dio.colorize(d, ranges=[(1.0, 2.0)])


def test_describe():
    d = torch.tensor([[[1.0, 2.0], [float("nan"), 4.0]]])
    assert dio.describe(DepthMap(depth=d)) == "1 x 2x2 depth, 75.0% valid, 1..4 m (median 2 m)"
    assert "no valid pixels" in dio.describe(DepthMap(depth=torch.zeros(1, 2, 2)))
