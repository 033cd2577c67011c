"""Thin-lens renderer: identity in focus, analytic disk blur, monotone blur, occlusion, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from bokehdepth_core import metrics, render, synthetic


def _texture(size=96, seed=0):
    return synthetic.procedural_texture(torch.Generator().manual_seed(seed), size).unsqueeze(0)


def _reference_disk(radius, sub=8):
    """Independent disk PSF: exact area coverage by sub x sub supersampling per pixel."""
    size = int(math.ceil(radius + 1))
    ax = (torch.arange(-size * sub, (size + 1) * sub, dtype=torch.float64) + 0.5) / sub - 0.5
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    inside = ((x * x + y * y) <= radius * radius).double()
    k = inside.view(2 * size + 1, sub, 2 * size + 1, sub).mean((1, 3))
    return (k / k.sum()).float()


def _disk_blur(img, radius):
    k = _reference_disk(radius)
    x = img.permute(0, 3, 1, 2)
    pad = k.shape[-1] // 2
    out = F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), k.expand(3, 1, -1, -1), groups=3)
    return out.permute(0, 2, 3, 1)


def test_in_focus_plane_unchanged():
    img = _texture()
    disp = torch.full(img.shape[:3], 0.5)
    out = render.render_bokeh(img, disp, k=20.0, focus_disparity=0.5)
    assert metrics.psnr(out, img) >= 40.0


@pytest.mark.parametrize("radius,gamma", [(2.6, 1.0), (7.3, 1.0), (13.7, 2.2)])
def test_constant_plane_equals_disk_blur(radius, gamma):
    img = _texture(128, seed=1)
    k, fd = 25.0, 0.8
    disp = torch.full(img.shape[:3], fd - radius / k)  # behind the focal plane by radius/K
    out = render.render_bokeh(img, disp, k, fd, gamma=gamma)
    ref = _disk_blur(img ** gamma, radius) ** (1 / gamma)
    m = int(radius) + 3
    p = metrics.psnr(out[:, m:-m, m:-m], ref[:, m:-m, m:-m])
    assert p >= 35.0, f"radius {radius}: PSNR {p:.1f} dB"
    # and it is a real blur: far from the sharp input
    assert metrics.psnr(out[:, m:-m, m:-m], img[:, m:-m, m:-m]) < p - 5


def test_blur_grows_with_defocus_on_both_sides():
    img = _texture(96, seed=2)
    fd, k = 0.8, 20.0

    def detail(offset):
        out = render.render_bokeh(img, torch.full(img.shape[:3], fd + offset), k, fd)
        return float((out[:, 1:] - out[:, :-1]).abs().mean() + (out[:, :, 1:] - out[:, :, :-1]).abs().mean())

    for sign in (-1, 1):
        values = [detail(sign * o) for o in (0.0, 0.05, 0.1, 0.2, 0.4, 0.7)]
        assert all(a > b for a, b in zip(values, values[1:])), values


def _edge_scene(size=96, fg_col=(1.0, 0.1, 0.1), bg_col=(0.1, 0.2, 1.0)):
    img = torch.empty(1, size, size, 3)
    img[:, :, : size // 2] = torch.tensor(fg_col)
    img[:, :, size // 2:] = torch.tensor(bg_col)
    return img


def test_sharp_foreground_does_not_leak_onto_blurred_background():
    size, fd, k = 96, 1.0, 40.0
    img = _edge_scene(size)
    disp = torch.full((1, size, size), fd)
    disp[:, :, size // 2:] = fd - 0.3  # background blurred with radius 12
    out = render.render_bokeh(img, disp, k, fd)
    fg, bg = img[0, 0, 0], img[0, 0, -1]
    diff = (fg - bg).abs().max()
    region = out[0, :, size // 2 + 3:]  # more than 2 px into the background
    leak = ((region - bg).abs().amax(-1) / diff).max()
    assert float(leak) < 0.02, float(leak)
    # the foreground itself stays sharp
    assert metrics.psnr(out[:, :, : size // 2 - 1], img[:, :, : size // 2 - 1]) > 40


def test_blurred_foreground_overlaps_sharp_background():
    size, fd, k = 96, 0.2, 40.0
    img = _edge_scene(size)
    disp = torch.full((1, size, size), fd)
    disp[:, :, : size // 2] = fd + 0.25  # foreground in front, radius 10
    out = render.render_bokeh(img, disp, k, fd, gamma=1.0)
    fg, bg = img[0, 0, 0], img[0, 0, -1]
    share = lambda col: float(((col - bg) @ (fg - bg)) / ((fg - bg) @ (fg - bg)))  # noqa: E731
    assert share(out[0, size // 2, size // 2 + 3]) > 0.15   # foreground blur spreads over the background
    # and its rim is see-through: the hidden background shows inside the blurred edge, as through a lens
    assert 0.4 < share(out[0, size // 2, size // 2 - 1]) < 0.8
    assert share(out[0, size // 2, size // 2 + 14]) < 0.02  # but not beyond its radius
    assert share(out[0, size // 2, 5]) > 0.98


def test_polygon_aperture_and_highlight_change_the_result():
    img = torch.zeros(1, 64, 64, 3)
    img[:, 32, 32] = 1.0
    disp = torch.full((1, 64, 64), 0.2)
    round_ = render.render_bokeh(img, disp, 40.0, 0.4, gamma=1.0)
    hexa = render.render_bokeh(img, disp, 40.0, 0.4, gamma=1.0, blades=6)
    assert (round_ - hexa).abs().max() > 1e-3
    assert abs(float(round_.sum() - hexa.sum())) < 0.05 * float(round_.sum())  # energy kept
    boosted = render.render_bokeh(img, disp, 40.0, 0.4, gamma=1.0, highlight=2.0)
    assert float(boosted.sum()) > 1.5 * float(round_.sum())


def test_confidence_smooths_uncertain_radius():
    img = _texture(64, seed=3)
    disp = torch.full((1, 64, 64), 0.3)
    disp[:, 20:40, 20:40] = 1.0  # a spurious near blob ...
    conf = torch.ones_like(disp)
    conf[:, 20:40, 20:40] = 0.0  # ... that the depth model is unsure about
    plain = render.render_bokeh(img, torch.full_like(disp, 0.3), 30.0, 0.6)
    raw = render.render_bokeh(img, disp, 30.0, 0.6)
    fixed = render.render_bokeh(img, disp, 30.0, 0.6, confidence=conf)
    c = (slice(None), slice(24, 36), slice(24, 36))
    assert metrics.psnr(fixed[c], plain[c]) > metrics.psnr(raw[c], plain[c]) + 5


def test_stacks_shapes_and_monotone_k():
    img = _texture(48, seed=4)
    disp = torch.linspace(0.2, 1.0, 48).view(1, 1, 48).expand(1, 48, 48).contiguous()
    st = render.bokeh_stack(img, disp, [5.0, 10.0, 20.0], 1.0)
    assert st.shape == (1, 3, 48, 48, 3)
    errs = [float((st[:, i] - img).abs().mean()) for i in range(3)]
    assert errs[0] < errs[1] < errs[2]
    fds = render.uniform_focus_disparities(disp, 4)
    assert torch.allclose(fds[0], torch.tensor([0.2, 0.4667, 0.7333, 1.0]), atol=1e-3)
    fs = render.focus_stack(img, disp, fds, 20.0)
    assert fs.shape == (1, 4, 48, 48, 3)
    # the sharp column moves with the focus
    sharp_col = [int((fs[0, i] - img[0]).abs().mean((0, 2)).argmin()) for i in range(4)]
    assert sharp_col == sorted(sharp_col) and sharp_col[0] < 5 and sharp_col[-1] > 42


def test_batch_matches_single():
    a, b = _texture(40, 5), _texture(40, 6)
    disp = torch.rand(2, 40, 40) * 0.5 + 0.2
    both = render.render_bokeh(torch.cat([a, b]), disp, [10.0, 20.0], [0.3, 0.5])
    one = render.render_bokeh(b, disp[1:], 20.0, 0.5)
    assert torch.allclose(both[1:], one, atol=1e-4)


@pytest.mark.parametrize("kwargs,word", [
    ({"disparity": torch.ones(1, 30, 32)}, "disparity"),
    ({"disparity": torch.full((1, 32, 32), float("nan"))}, "NaN"),
    ({"disparity": -torch.ones(1, 32, 32)}, "negative"),
    ({"k": 0.0}, "k"),
    ({"k": -3.0}, "k"),
    ({"image": torch.rand(1, 32, 32, 4)}, "image"),
    ({"disparity": torch.ones(2, 32, 32)}, "batch"),
    ({"focus_disparity": -0.1}, "focus_disparity"),
    ({"gamma": 0.0}, "gamma"),
    ({"blades": 2}, "blades"),
    ({"confidence": -torch.ones(1, 32, 32)}, "confidence"),
])
def test_bad_input(kwargs, word):
    args = {"image": torch.rand(1, 32, 32, 3), "disparity": torch.ones(1, 32, 32), "k": 10.0, "focus_disparity": 0.5}
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        render.render_bokeh(**args)


def test_stacks_refuse_bad_lists():
    img, disp = torch.rand(1, 8, 8, 3), torch.ones(1, 8, 8)
    with pytest.raises(ValueError, match="k_values"):
        render.bokeh_stack(img, disp, [1.0, 0.0], 0.5)
    with pytest.raises(ValueError, match="focus_disparities"):
        render.focus_stack(img, disp, [0.5, -0.1], 10.0)
    with pytest.raises(ValueError, match="frames"):
        render.uniform_focus_disparities(disp, 0)
