"""The renderer and the sweep under hostile sizes: blur radii far beyond the image, one-pixel
frames, bounded memory (the layer loop keeps a fixed set of full-size buffers) and Cancel
between layers and frames through the progress callback."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

from bokehdepth_core import dfb, psf, render


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only add start-up cost


def test_blur_radius_beyond_the_image_side():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 5, 7, 3, generator=g)
    for k, blades in ((1e3, 0), (1e6, 0), (1e6, 5), (50.0, 3)):
        out = render.render_bokeh(img, torch.full((1, 5, 7), 2.0), k, 0.1, blades=blades)
        # every pixel blurred past the frame: the (linear-light) mean colour everywhere
        mean = (img ** 2.2).mean((1, 2), keepdim=True) ** (1 / 2.2)
        assert torch.allclose(out, mean.expand_as(out), atol=1e-4), (k, blades)
    for h, w in ((1, 1), (1, 9), (9, 1), (2, 2)):
        disp = torch.rand(2, h, w, generator=g) * 3
        out = render.render_bokeh(torch.rand(2, h, w, 3, generator=g), disp, 400.0, 0.5)
        assert out.shape == (2, h, w, 3) and bool(torch.isfinite(out).all())


def test_kernels_are_cut_to_the_image():
    k = psf.aperture_kernel(1e5, reach=(3, 4))
    assert k.shape == (7, 9) and bool(torch.isfinite(k).all())
    x = psf.with_support(torch.rand(1, 3, 6, 4))
    wide = psf.SupportBlur(x, 500.0)(500.0)
    assert torch.allclose(wide, x[:, :3].mean((2, 3), keepdim=True).expand_as(wide), atol=1e-5)
    assert torch.allclose(psf.blur_once(x, 500.0), wide, atol=1e-6)


def test_sweep_with_a_search_radius_beyond_the_image():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(1, 10, 12, 3, generator=g)
    frames = torch.stack([render.render_bokeh(ref, torch.full((1, 10, 12), 1.0), k, 0.5) for k in (2.0, 4.0)], 1)
    res = dfb.depth_from_bokeh_sweep(ref, frames, [2.0, 4.0], 2.0, max_radius=40.0)
    assert bool(torch.isfinite(res["depth"]).all())


def test_cancel_between_layers_and_frames():
    img = torch.rand(1, 24, 24, 3)
    disp = torch.linspace(0.05, 2.0, 24).view(1, 24, 1).expand(1, 24, 24)
    calls = []

    def cancel_at_third(done, total):
        calls.append((done, total))
        if len(calls) == 3:
            raise KeyboardInterrupt("cancel")

    with pytest.raises(KeyboardInterrupt):
        render.render_bokeh(img, disp, 30.0, 0.5, callback=cancel_at_third)
    assert len(calls) == 3 and calls[0][1] > 3  # stopped after three of many layers
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        render.bokeh_stack(img, disp, [10.0, 20.0, 30.0], 0.5, callback=cancel_at_third)
    assert calls == [(0, 3)] * 3  # inside the first frame, between its layers


def _live_full_size_bytes(pixels: int) -> int:
    """Bytes of the distinct tensor storages alive now that hold at least one full-size map."""
    seen = {}
    with warnings.catch_warnings():  # isinstance() on some of gc's objects warns about deprecated aliases
        warnings.simplefilter("ignore")
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    for t in tensors:
        if t.numel() >= pixels:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def test_layer_loop_keeps_a_fixed_set_of_buffers():
    """Between layers the renderer holds its inputs (image + disparity: 4 maps of float32), linear
    colour (3), two accumulators (4), one layer buffer (5), the blend weight (1) and an int16 level
    index (0.5): 17.5 maps, whatever the number of layers (before: 26, with int64 indices and
    per-level masks)."""
    h = w = 96
    gc.collect()
    before = _live_full_size_bytes(h * w)  # whatever other tests left alive
    img = torch.rand(1, h, w, 3)
    disp = torch.linspace(0.05, 2.0, h).view(1, h, 1).expand(1, h, w).contiguous()
    peaks = []
    render.render_bokeh(img, disp, 30.0, 0.5, callback=lambda d, t: peaks.append(
        _live_full_size_bytes(h * w) if d in (2, t // 2, t) else 0))
    assert len(peaks) > 5
    assert max(peaks) - before <= 17.5 * h * w * 4, (max(peaks) - before) / (h * w * 4)


def test_counts_asked_for_are_bounded():
    img, disp = torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8) + 0.1
    with pytest.raises(ValueError, match="at most 256"):
        render.bokeh_stack(img, disp, [1.0] * 1000, 0.5)
    with pytest.raises(ValueError, match="frames"):
        render.uniform_focus_disparities(disp, 10 ** 9)
    for rel_step in (0.0, 1e-9, 1e9):  # layer spacing: a zero or tiny one would mean endless layers
        with pytest.raises(ValueError, match="rel_step"):
            render.render_bokeh(img, disp, 10.0, 0.5, rel_step=rel_step)
