"""Bokeh from metric depth: the depth checked and resized to the image, the focus chosen, frames and stacks."""

import pytest
import torch

from bokehdepth_core import bokeh_from_depth as bfd
from bokehdepth_core import render, synthetic
from bokehdepth_core.types import BokehStack, DepthMap


@pytest.fixture(scope="module")
def scene():
    return synthetic.make_scene(4, 64)


def test_depth_for_image_resizes_broadcasts_and_checks():
    image = torch.rand(3, 16, 24, 3)
    depth = torch.full((1, 8, 12), 2.0)
    depth[0, :, 6:] = 4.0
    conf = torch.ones(1, 8, 12)
    d, c = bfd.depth_for_image(depth, image, conf)
    assert d.shape == (3, 16, 24) and c.shape == (3, 16, 24)
    assert float(d[2, 0, 0]) == pytest.approx(2.0) and float(d[1, -1, -1]) == pytest.approx(4.0)
    d2, c2 = bfd.depth_for_image(torch.full((16, 24), 3.0), image)
    assert d2.shape == (3, 16, 24) and c2 is None
    _, c3 = bfd.depth_for_image(DepthMap(depth=depth, confidence=conf * 0.5), image)
    assert torch.allclose(c3, torch.full((3, 16, 24), 0.5))  # a DepthMap brings its confidence
    with pytest.raises(ValueError, match="batch 2"):
        bfd.depth_for_image(torch.ones(2, 16, 24), image)
    with pytest.raises(ValueError, match="depth"):
        bfd.depth_for_image(torch.zeros(1, 16, 24), image)
    with pytest.raises(ValueError, match="NaN"):
        bfd.depth_for_image(torch.full((1, 16, 24), float("nan")), image)


def test_render_from_depth_equals_the_disparity_renderer(scene):
    k = scene.k_values[-1]
    out, focus = bfd.render_from_depth(scene.image, DepthMap(depth=scene.depth), k, "distance", scene.focus_m)
    assert torch.allclose(out, scene.render(k), atol=1e-6) and focus.tolist() == pytest.approx([scene.focus_m])
    # depth at half the image size is resized to it; the median focus lands on a depth of the scene
    half = DepthMap(depth=torch.nn.functional.avg_pool2d(scene.depth[None], 2)[0])
    out2, focus2 = bfd.render_from_depth(scene.image, half, k, "auto (median)")
    assert out2.shape == scene.image.shape
    assert float(scene.depth.min()) <= float(focus2) <= float(scene.depth.max())


def test_bokeh_stack_from_depth_records_how_it_was_made(scene):
    ks = [k * 2 for k in scene.k_values]
    opts = {"gamma": 2.2, "blades": 6}
    stack = bfd.bokeh_stack_from_depth(scene.image, DepthMap(depth=scene.depth), ks, "distance", scene.focus_m, **opts)
    assert isinstance(stack, BokehStack) and stack.source == "render" and stack.k_list() == pytest.approx(ks)
    assert stack.meta == {"focus_m": [pytest.approx(scene.focus_m)], "renderer": opts}
    want = render.bokeh_stack(scene.image, scene.disparity, ks, 1.0 / scene.focus_m, **opts)
    assert torch.allclose(stack.frames, want, atol=1e-5)
    assert torch.equal(stack.reference, scene.image)
    with pytest.raises(ValueError, match="k_list"):
        bfd.bokeh_stack_from_depth(scene.image, DepthMap(depth=scene.depth), [], "distance", 2.0)


def test_focus_stack_from_depth_sweeps_far_to_near(scene):
    frames, focus_m = bfd.focus_stack_from_depth(scene.image, DepthMap(depth=scene.depth), 20.0, 4, margin=0.1)
    assert frames.shape == (1, 4, 64, 64, 3) and focus_m.shape == (1, 4)
    f = focus_m[0].tolist()
    assert f == sorted(f, reverse=True)  # far first
    assert float(scene.depth.min()) < f[-1] < f[0] < float(scene.depth.max())
