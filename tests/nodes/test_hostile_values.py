"""Non-finite, mis-typed and empty values into the physics, calibration, depth-file and geometry
nodes (the copy inside the real ComfyUI and the plain one): refused by name, converted explicitly
(uint8 images), and no NaN or inf ever leaves a node."""

from __future__ import annotations

import math
import types

import pytest
import torch

from bokehdepth_core.testing import tiny_transformer
from support import UNIDEPTH_SMALL, randomize, refusal


@pytest.fixture(params=["ext", "ext_in_comfyui"])
def nodes(request):
    ext = request.getfixturevalue(request.param)
    return ext, ext.NODE_CLASS_MAPPINGS


def _depth(ext, b=1, h=12, w=16, value=3.0):
    return ext.bokehdepth_core.types.DepthMap(depth=torch.full((b, h, w), value))


def _render(N, image, depth, k=20.0, focus=2.0):
    return N["BokehDepthRenderBokeh"]().render(image, depth, k, focus, 2.2, 0.0, 0, 0.0, True)


def test_bad_images_are_refused_by_name(nodes):
    ext, N = nodes
    d = _depth(ext)
    good = torch.rand(1, 12, 16, 3)
    nan = good.clone()
    nan[0, 3, 3, 1] = math.nan
    for bad, word in ((nan, "NaN"), (good * 255, "255"), (good.to(torch.int32), "int32"),
                      (torch.rand(0, 12, 16, 3), "empty"), (good[..., :2], "[B,H,W,3]")):
        refusal(lambda: _render(N, bad, d), "image", word)
        refusal(lambda: N["BokehDepthBokehStackFromDepth"]().render(bad, d, [10.0], 2.0, 2.2, 0.0, 0,
                                                                     0.0), "image")
    refusal(lambda: N["BokehDepthDepthFromImage"]().convert(nan, "disparity", 0.5, 20.0, "luminance", "full"),
             "image", "NaN")


def test_uint8_images_are_scaled_explicitly(nodes):
    ext, N = nodes
    d = _depth(ext)
    img8 = (torch.rand(1, 12, 16, 3) * 255).round().to(torch.uint8)
    out8, _ = _render(N, img8, d)
    outf, _ = _render(N, img8.float() / 255, d)
    assert torch.allclose(out8, outf)
    depth8, _ = N["BokehDepthDepthFromImage"]().convert(img8, "disparity", 0.5, 20.0, "luminance", "full")
    depthf, _ = N["BokehDepthDepthFromImage"]().convert(img8.float() / 255, "disparity", 0.5, 20.0, "luminance",
                                                        "full")
    assert torch.allclose(depth8.depth, depthf.depth) and float(depth8.depth.std()) > 0


def test_bad_depth_and_numbers(nodes):
    ext, N = nodes
    image = torch.rand(1, 12, 16, 3)
    empty = _depth(ext, b=0)
    for node_call in (lambda d: _render(N, image, d),
                      lambda d: N["BokehDepthDepthPreview"]().preview(d, "gray", "minmax", False),
                      lambda d: N["BokehDepthSaveDepth"]().save(d, "x", "npy", False, False),
                      lambda d: N["BokehDepthDepthCamera"]().split(d)):
        refusal(lambda: node_call(empty), "empty")
    refusal(lambda: _render(N, image, _depth(ext, value=math.nan)), "depth", "finite")
    for k in (math.nan, math.inf, -1.0, 0.0):
        refusal(lambda: _render(N, image, _depth(ext), k=k), "k")
    refusal(lambda: _render(N, image, _depth(ext), focus=math.nan), "focus")
    refusal(lambda: N["BokehDepthKFromLens"]().calibrate(math.nan, 50.0, 50.0, 2.0, 512, 512), "f_number")
    refusal(lambda: N["BokehDepthKFromLens"]().calibrate(2.0, 50.0, math.inf, 2.0, 512, 512), "focal_35mm")
    refusal(lambda: N["BokehDepthKList"]().make("10, nan, 30"), "k_list")
    refusal(lambda: N["BokehDepthCameraManual"]().make(math.nan, 1.0, -1.0, -1.0, 16, 12), "f")


def test_no_nan_leaves_a_node(nodes, monkeypatch):
    """A core result that came out non-finite is stopped at the node with a message naming the output."""
    ext, N = nodes
    core = ext.bokehdepth_core

    def nan_render(image, *a, **k):
        return torch.full_like(image, math.nan), torch.full((image.shape[0],), 2.0)
    monkeypatch.setattr(core.bokeh_from_depth, "render_from_depth", nan_render)
    refusal(lambda: _render(N, torch.rand(1, 12, 16, 3), _depth(ext)), "Render Bokeh", "image", "NaN")
    monkeypatch.setattr(core.optics, "calibrate", lambda *a, **k: type("C", (), {
        "k": math.inf, "k_512": 1.0, "k_crop": 1.0, "summary": lambda self: ""})())
    refusal(lambda: N["BokehDepthKFromLens"]().calibrate(2.0, 50.0, 50.0, 2.0, 512, 512), "'K'")
    monkeypatch.setattr(core.camera, "intrinsics_for", lambda *a, **k: (torch.full((1, 3, 3), math.nan), "x"))
    refusal(lambda: N["BokehDepthCameraGuess"]().make(16, 12), "camera")


# --------------------------------------------------------------------------- Stage-1 and Stage-2 nodes

def _bad_images():
    good = torch.rand(1, 32, 32, 3)
    nan = good.clone()
    nan[0, 3, 3, 1] = math.nan
    return ((nan, "NaN"), (good * 255, "255"), (good.to(torch.int32), "int32"), (good[:0], "empty"))


def test_stage1_nodes_refuse_bad_images_and_k(nodes):
    ext, N = nodes
    patch = ext.nodes.bokeh_patch
    marked = types.SimpleNamespace(model_options={"transformer_options": {patch.ADAPTER_OPTION: object()}})
    native = N["BokehDepthSampleBokehStack"]()
    adapter = ext.bokehdepth_core.stage1.BokehAdapter.attach(tiny_transformer(), rank=2, alpha=2)
    adapter.detach()
    old = N["BokehDepthSampleBokehStackDiffusers"]()
    image = torch.rand(1, 32, 32, 3)
    for bad, word in _bad_images():
        refusal(lambda: native.sample(marked, None, None, bad, [10.0], 1, 1, 7.0, "euler", "simple", False),
                "image", word)
        refusal(lambda: old.sample(object(), adapter, bad, [10.0], 1, 7.0, 1, False), "image", word)
    refusal(lambda: old.sample(object(), adapter, "not an image", [10.0], 1, 7.0, 1, False), "image")
    for ks in ([0.0], [math.nan], [1e30], [5.0, 5000.0]):
        refusal(lambda: native.sample(marked, None, None, image, ks, 1, 1, 7.0, "euler", "simple", False), "k_list")
        refusal(lambda: old.sample(object(), adapter, image, ks, 1, 7.0, 1, False), "k_values")
    refusal(lambda: N["BokehDepthApplyBokehAdapter"]().apply(marked, adapter, 1e30), "k")
    refusal(lambda: native.sample(marked, None, None, image, [10.0], 1, 1, math.nan, "euler", "simple", False),
            "guidance")


def test_stage1_frames_are_checked_before_they_leave(nodes, monkeypatch):
    ext, N = nodes
    core = ext.bokehdepth_core
    stack = core.stage1.make_stack([torch.full((2, 16, 16, 3), math.nan)], [5.0, 10.0], [torch.rand(16, 16, 3)])
    monkeypatch.setattr(ext.nodes.bokeh_stack, "sample_stack", lambda *a, **k: stack)
    msg = refusal(lambda: N["BokehDepthSampleBokehStack"]().sample(None, None, None, torch.rand(1, 16, 16, 3), [5.0, 10.0],
                                                                    1, 1, 7.0, "euler", "simple", False),
                  "Sample Bokeh Stack", "frames", "NaN")
    assert "fp16" in msg or "weights" in msg, msg


@pytest.fixture(scope="module")
def depth_model():
    def make(ext):
        torch.manual_seed(0)
        model = randomize(ext.bokehdepth_core.stage2.build_unidepthv2_dsfa(UNIDEPTH_SMALL), seed=2)
        return ext.nodes.comfy_seam.ManagedModel(model, torch.float32)
    return make


def test_stage2_nodes_refuse_before_loading_the_model(nodes, depth_model, monkeypatch):
    ext, N = nodes
    managed = depth_model(ext)
    monkeypatch.setattr(type(managed), "load", lambda *a, **k: pytest.fail("model loaded for a refused input"))
    single, stacked = N["BokehDepthEstimateDepth"](), N["BokehDepthEstimateDepthStack"]()
    for bad, word in _bad_images():
        refusal(lambda: single.estimate(managed, bad, 518, "Spectral"), "image", word)
    image = torch.rand(1, 32, 32, 3)
    frames = torch.rand(3, 32, 32, 3)
    for ks in ([10.0, 0.0, 30.0], [10.0, math.nan, 30.0], [10.0, 20.0, 1e30]):
        refusal(lambda: stacked.estimate(managed, image, 518, "Spectral", stack_images=frames, k_list=ks), "k_list")
    nan_frames = frames.clone()
    nan_frames[1, 2, 2, 0] = math.nan
    refusal(lambda: stacked.estimate(managed, image, 518, "Spectral", stack_images=nan_frames, k_list=[5.0, 10.0, 20.0]),
            "stack", "NaN")
    refusal(lambda: single.estimate(managed, torch.rand(1, 32, 2048, 3), 518, "Spectral"), "aspect", "crop")


def test_stage2_outputs_are_checked_before_they_leave(nodes, depth_model, monkeypatch):
    ext, N = nodes
    managed = depth_model(ext)
    core = ext.bokehdepth_core

    def nan_depth(*a, **k):
        return core.types.DepthMap(depth=torch.full((1, 32, 32), math.nan), meta={})

    monkeypatch.setattr(core.stage2, "estimate_depth", nan_depth)
    refusal(lambda: N["BokehDepthEstimateDepth"]().estimate(managed, torch.rand(1, 32, 32, 3), 518, "Spectral"),
            "Estimate Depth", "depth", "NaN")


def test_cancel_inside_a_depth_forward(ext_in_comfyui, depth_model):
    """ComfyUI's Cancel, pressed while the first image's network runs, stops it at the next block
    (not after the batch) and leaves no progress hook on the model."""
    import comfy.model_management as mm

    managed = depth_model(ext_in_comfyui)
    blocks = managed.model.pixel_encoder.backbone.blocks
    ran = []
    ours = [b.register_forward_hook(lambda m, a, o, j=j: ran.append(j)) for j, b in enumerate(blocks)]
    ours.append(blocks[1].register_forward_pre_hook(lambda m, a: mm.interrupt_current_processing(True)))
    try:
        with pytest.raises(mm.InterruptProcessingException):
            ext_in_comfyui.NODE_CLASS_MAPPINGS["BokehDepthEstimateDepth"]().estimate(
                managed, torch.rand(2, 28, 28, 3), 518, "Spectral")
    finally:
        for handle in ours:
            handle.remove()
        mm.interrupt_current_processing(False)
    assert ran == [0], ran
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in managed.model.modules())
