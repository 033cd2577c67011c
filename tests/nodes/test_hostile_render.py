"""Physics nodes under hostile settings: default widgets whose blur exceeds the image, and the
user's Cancel (ComfyUI's interrupt flag) honoured between layers, frames and search radii."""

from __future__ import annotations

import pytest
import torch


def _scene(ext, h=8, w=8, depth_m=0.05):
    DepthMap = ext.bokehdepth_core.types.DepthMap
    return torch.rand(1, h, w, 3), DepthMap(depth=torch.full((1, h, w), depth_m))


@pytest.mark.parametrize("where", ["plain", "comfyui"])
def test_default_widgets_blur_beyond_a_small_image(request, where):
    ext = request.getfixturevalue("ext" if where == "plain" else "ext_in_comfyui")
    image, depth = _scene(ext)
    # K = 20 and focus 2 m (the defaults) with a subject at 5 cm: radius 390 px on an 8 px image
    out, focus = ext.NODE_CLASS_MAPPINGS["BokehDepthRenderBokeh"]().render(
        image, depth, 20.0, 2.0, 2.2, 0.0, 0, 0.0, True)
    assert out.shape == (1, 8, 8, 3) and bool(torch.isfinite(out).all()) and focus == 2.0
    stack, frames, _captions = ext.NODE_CLASS_MAPPINGS["BokehDepthBokehStackFromDepth"]().render(
        image, depth, [10.0, 1000.0], 2.0, 2.2, 0.0, 6, 0.0)
    assert frames.shape == (2, 8, 8, 3) and bool(torch.isfinite(frames).all())


@pytest.fixture
def interrupt_after(comfyui, ext_in_comfyui, monkeypatch):
    """``arm(module, name, n)``: ComfyUI's Cancel is pressed during the n-th call of ``module.name``;
    returns the list of calls made. The flag is cleared afterwards."""
    import comfy.model_management as mm

    def arm(module, name, n):
        calls = []
        real = getattr(module, name)

        def spy(*a, **k):
            calls.append(1)
            if len(calls) == n:
                mm.interrupt_current_processing(True)
            return real(*a, **k)
        monkeypatch.setattr(module, name, spy)
        return calls

    yield arm
    mm.interrupt_current_processing(False)


def test_cancel_inside_render_and_stack(ext_in_comfyui, interrupt_after):
    import comfy.model_management as mm

    core = ext_in_comfyui.bokehdepth_core
    image = torch.rand(1, 32, 32, 3)
    depth = core.types.DepthMap(depth=torch.linspace(0.3, 20.0, 32).view(1, 32, 1).expand(1, 32, 32).contiguous())
    calls = interrupt_after(core.render, "blur_once", 2)
    with pytest.raises(mm.InterruptProcessingException):
        ext_in_comfyui.NODE_CLASS_MAPPINGS["BokehDepthRenderBokeh"]().render(
            image, depth, 20.0, 2.0, 2.2, 0.0, 0, 0.0, True)
    assert len(calls) == 2  # stopped at the next layer, not at the end of the frame
    mm.interrupt_current_processing(False)
    calls.clear()
    with pytest.raises(mm.InterruptProcessingException):
        ext_in_comfyui.NODE_CLASS_MAPPINGS["BokehDepthBokehStackFromDepth"]().render(
            image, depth, [5.0, 10.0, 20.0], 2.0, 2.2, 0.0, 0, 0.0)
    assert len(calls) == 2


def test_cancel_inside_the_sweep(ext_in_comfyui, interrupt_after):
    import comfy.model_management as mm

    core = ext_in_comfyui.bokehdepth_core
    image = torch.rand(1, 24, 24, 3)
    stack = core.bokeh_from_depth.bokeh_stack_from_depth(
        image, core.types.DepthMap(depth=torch.full((1, 24, 24), 4.0)), [5.0, 10.0], "distance", 2.0)
    calls = interrupt_after(core.dfb, "_box", 3)
    with pytest.raises(mm.InterruptProcessingException):
        ext_in_comfyui.NODE_CLASS_MAPPINGS["BokehDepthFromBokehSweep"]().estimate(stack, 2.0, "behind", 8.0, 2, 2.2)
    assert len(calls) == 3  # one search radius after Cancel, not the whole bank
