"""Stage-1 nodes end to end on the tiny random pipeline (no ComfyUI, no downloads)."""

from __future__ import annotations

import pytest
import torch

from bokehdepth_core.testing import tiny_image, tiny_kontext_pipeline, tiny_transformer
from support import load_extension

EXT = load_extension()
NODES = EXT.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny diffusers pipeline and adapter files in a stand-in models/bokehdepth folder."""
    stage1 = EXT.bokehdepth_core.stage1
    root = tmp_path_factory.mktemp("models")
    pipe = tiny_kontext_pipeline(seed=1)
    pipe.save_pretrained(str(root / "diffusers" / "tiny-kontext"))
    ad = stage1.BokehAdapter.attach(pipe.transformer, rank=4, alpha=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ad.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    (root / "bokehdepth").mkdir()
    ad.save(str(root / "bokehdepth" / "tiny_bokeh.bin"))
    ad.detach()
    other = stage1.BokehAdapter.attach(tiny_transformer(num_attention_heads=3), rank=4, alpha=4)  # width 48, not 32
    other.save(str(root / "bokehdepth" / "other_arch.safetensors"))
    return root


def test_stage1_nodes_registered():
    names = {NODES[k].CATEGORY for k in ("BokehDepthLoadKontext", "BokehDepthLoadBokehAdapter", "BokehDepthSampleBokehStack")}
    assert names == {"BokehDepth/Stage-1"}
    assert EXT.NODE_DISPLAY_NAME_MAPPINGS["BokehDepthLoadKontext"] == "Load FLUX.1-Kontext (diffusers)"


@pytest.mark.slow
def test_nodes_image_to_stack(files, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_MODELS_DIR", str(files / "bokehdepth"))
    stage1 = EXT.bokehdepth_core.stage1
    (pipe,) = NODES["BokehDepthLoadKontext"]().load("tiny-kontext", "none", "fp32", "none")
    assert "tiny_bokeh.bin" in NODES["BokehDepthLoadBokehAdapter"].INPUT_TYPES()["required"]["adapter_file"][0]
    (adapter,) = NODES["BokehDepthLoadBokehAdapter"]().load("tiny_bokeh.bin")
    sampler = NODES["BokehDepthSampleBokehStack"]()
    images = torch.cat([tiny_image(36, 50, seed=1), tiny_image(36, 50, seed=2)])  # -> 48x32
    ticks = []
    monkeypatch.setattr(EXT.nodes.comfy_seam.Progress, "callback", lambda self, d, n: ticks.append((d, n)))
    stack, frames = sampler.sample(pipe, adapter, images, [5.0, 20.0, 40.0], 2, 7.0, 3, True, "")
    assert ticks[-1] == (4, 4) and len(ticks) == 4, "progress counts steps over the batch"
    assert tuple(stack.frames.shape) == (2, 3, 32, 48, 3) and tuple(frames.shape) == (6, 32, 48, 3)
    assert stack.source == "stage1" and tuple(stack.reference.shape) == (2, 32, 48, 3)
    assert stack.k_list(1) == [5.0, 20.0, 40.0]
    assert torch.equal(frames[3:], stack.frames[1])
    assert frames.min() >= 0 and frames.max() <= 1
    # image 2 alone gives the same frames as inside the batch
    alone, _ = sampler.sample(pipe, adapter, images[1:], [5.0, 20.0, 40.0], 2, 7.0, 3, True, "")
    assert torch.equal(alone.frames[0], stack.frames[1])

    with pytest.raises(ValueError, match="k_list"):
        sampler.sample(pipe, adapter, images, [], 2, 7.0, 3, True, "")
    with pytest.raises(ValueError, match="image"):
        sampler.sample(pipe, adapter, torch.rand(1, 10, 40, 3), [10.0], 1, 7.0, 3, False, "")
    (other,) = NODES["BokehDepthLoadBokehAdapter"]().load("other_arch.safetensors")
    with pytest.raises(ValueError, match="FLUX.1-Kontext-dev"):
        sampler.sample(pipe, other, images[:1], [10.0], 1, 7.0, 3, False, "")
    with pytest.raises(FileNotFoundError, match="bokehdepth"):
        NODES["BokehDepthLoadBokehAdapter"]().load(stage1.ADAPTER_FILE)
    with pytest.raises(FileNotFoundError, match="diffusers"):
        NODES["BokehDepthLoadKontext"]().load("FLUX.1-Kontext-dev", "none", "fp32", "none")
