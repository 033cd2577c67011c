"""Sample Bokeh Stack on ComfyUI's own CLIP / VAE / Flux (the real ComfyUI, tiny weights): the
frames of the diffusers path (the authors' stack script) up to 8-bit rounding, one progress bar
with previews, Cancel between steps, each prompt and reference encoded once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import comfy_tiny
from bokehdepth_core import stage1
from bokehdepth_core.testing import tiny_image

TEMPLATE = "dof {value:.1f} (bg)"  # short enough for the tiny CLIP; its brackets must stay literal
KS = [3.0, 15.0, 45.0]


@pytest.fixture(scope="module")
def tiny(comfyui, ext_in_comfyui, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_kontext")
    pipe, parts = comfy_tiny.kontext(folder)
    adapter = stage1.BokehAdapter.attach(pipe.transformer, rank=4, alpha=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    path = adapter.save(str(folder / "tiny_bokeh.safetensors"))
    adapter.detach()
    adapter = stage1.BokehAdapter.from_file(path)  # what Load Bokeh Adapter outputs
    nodes = ext_in_comfyui.NODE_CLASS_MAPPINGS
    (parts.patched,) = nodes["BokehDepthApplyBokehAdapter"]().apply(parts.model, adapter, 10.0)
    return pipe, parts, adapter, nodes


def _levels(frames: torch.Tensor) -> np.ndarray:
    return np.rint(frames.numpy() * 255.0).astype(np.int16)


@pytest.mark.parametrize("color_transfer", [False, True], ids=["plain", "color-transfer"])
def test_native_stack_matches_the_diffusers_path(tiny, color_transfer):
    pipe, parts, adapter, nodes = tiny
    image = tiny_image(40, 56, seed=1)  # -> 32 x 48 after the floor-16 resize
    stack, frames, _ = nodes["BokehDepthSampleBokehStack"]().sample(
        parts.patched, parts.clip, parts.vae, image, KS, 5, 4, 7.0, "euler", "simple", color_transfer, TEMPLATE)
    want = stage1.sample_bokeh_stack(pipe, adapter, image, KS, num_inference_steps=4, guidance_scale=7.0, seed=5,
                                     prompt_template=TEMPLATE, color_transfer=color_transfer)
    want = np.stack([np.asarray(f, dtype=np.int16) for f in want])
    got = _levels(frames)
    assert got.shape == want.shape == (3, 32, 48, 3)
    diff = np.abs(got - want)
    assert diff.max() <= 2 and diff.mean() <= 0.05, (diff.max(), diff.mean())
    assert np.abs(want[0] - want[2]).mean() > 1.0, "K changes the frames"
    assert stack.k_list(0) == KS and stack.meta["sampler"] == "comfyui"
    assert tuple(stack.reference.shape) == (1, 32, 48, 3)


def test_batch_progress_previews_and_single_encodes(tiny, monkeypatch):
    import comfy.cli_args
    import comfy.sd
    import comfy.utils

    _pipe, parts, _adapter, nodes = tiny
    counts = {"prompts": 0, "references": 0}
    encode_text, encode_image = comfy.sd.CLIP.encode_from_tokens_scheduled, comfy.sd.VAE.encode

    def count_text(self, *a, **k):
        counts["prompts"] += 1
        return encode_text(self, *a, **k)

    def count_image(self, *a, **k):
        counts["references"] += 1
        return encode_image(self, *a, **k)

    monkeypatch.setattr(comfy.sd.CLIP, "encode_from_tokens_scheduled", count_text)
    monkeypatch.setattr(comfy.sd.VAE, "encode", count_image)
    monkeypatch.setattr(comfy.cli_args.args, "preview_method", comfy.cli_args.LatentPreviewMethod.Latent2RGB)
    ticks = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda v, t, preview, node_id=None: ticks.append((v, t, preview)))
    images = torch.cat([tiny_image(36, 50, seed=2), tiny_image(36, 50, seed=3)])
    ks = [5.0, 20.0, 5.0]
    stack, frames, labelled = nodes["BokehDepthSampleBokehStack"]().sample(
        parts.patched, parts.clip, parts.vae, images, ks, 7, 2, 7.0, "euler", "simple", False, TEMPLATE)
    assert counts == {"prompts": 2, "references": 2}
    assert [t[:2] for t in ticks] == [(i, 12) for i in range(1, 13)], "one bar over pictures x frames x steps"
    assert all(t[2] is not None for t in ticks), "latent previews"
    assert tuple(frames.shape) == (6, 32, 48, 3) and tuple(stack.frames.shape) == (2, 3, 32, 48, 3)
    assert torch.equal(frames[3:], stack.frames[1]) and stack.k_list(1) == ks
    assert labelled.shape == frames.shape and torch.allclose(labelled[:, 16:], frames[:, 16:], atol=0.5 / 255 + 1e-6)
    assert not torch.equal(labelled[:, :12, :24], frames[:, :12, :24]), "K written in the corner"
    assert torch.equal(stack.frames[0, 0], stack.frames[0, 2]), "same K, same noise -> same frame"
    alone, *_ = nodes["BokehDepthSampleBokehStack"]().sample(
        parts.patched, parts.clip, parts.vae, images[1:], ks[:2], 7, 2, 7.0, "euler", "simple", False, TEMPLATE)
    assert torch.equal(alone.frames[0], stack.frames[1, :2])


def test_cancel_between_steps_leaves_the_model(tiny, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    _pipe, parts, _adapter, nodes = tiny
    options_before = dict(parts.patched.model_options["transformer_options"])
    patches_before = dict(parts.patched.object_patches)
    seen = []

    def press_cancel(value, total, preview, node_id=None):
        seen.append(value)
        if value == 2:
            mm.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", press_cancel)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            nodes["BokehDepthSampleBokehStack"]().sample(
                parts.patched, parts.clip, parts.vae, tiny_image(32, 32), [5.0, 9.0], 7, 3, 7.0, "euler", "simple",
                False, TEMPLATE)
    finally:
        mm.interrupt_current_processing(False)
    assert seen == [1, 2], "stopped at the next step"
    assert parts.patched.model_options["transformer_options"] == options_before
    assert parts.patched.object_patches == patches_before


def test_unpatched_model_and_bad_inputs(tiny):
    _pipe, parts, _adapter, nodes = tiny
    node = nodes["BokehDepthSampleBokehStack"]()
    with pytest.raises(ValueError, match="Apply Bokeh Adapter"):
        node.sample(parts.model, parts.clip, parts.vae, tiny_image(32, 32), [5.0], 1, 1, 7.0, "euler", "simple", False)
    with pytest.raises(ValueError, match="k_list"):
        node.sample(parts.patched, parts.clip, parts.vae, tiny_image(32, 32), [], 1, 1, 7.0, "euler", "simple", False)
    with pytest.raises(ValueError, match="16x16"):
        node.sample(parts.patched, parts.clip, parts.vae, tiny_image(12, 40), [5.0], 1, 1, 7.0, "euler", "simple", False)

