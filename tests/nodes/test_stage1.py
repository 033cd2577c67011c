"""Stage-1 nodes without ComfyUI: registration, inputs, the errors raised before any ComfyUI call,
and the deprecated diffusers-pipeline nodes end to end on the tiny random pipeline."""

from __future__ import annotations

import importlib
import types

import pytest
import torch

from bokehdepth_core.testing import tiny_image, tiny_kontext_pipeline, tiny_transformer
from support import load_extension

EXT = load_extension()
NODES = EXT.NODE_CLASS_MAPPINGS
PATCH = importlib.import_module(EXT.__name__ + ".nodes.bokeh_patch")
STACK = importlib.import_module(EXT.__name__ + ".nodes.bokeh_stack")
STAGE1 = EXT.bokehdepth_core.stage1


def test_nodes_registered_and_diffusers_nodes_deprecated():
    ids = ("BokehDepthLoadBokehAdapter", "BokehDepthApplyBokehAdapter", "BokehDepthSampleBokehStack",
           "BokehDepthLoadKontext", "BokehDepthSampleBokehStackDiffusers")
    assert {NODES[k].CATEGORY for k in ids} == {"BokehDepth/Stage-1"}
    names = EXT.NODE_DISPLAY_NAME_MAPPINGS
    assert [names[k] for k in ids] == ["BokehDepth Load Bokeh Adapter", "BokehDepth Apply Bokeh Adapter",
                                       "BokehDepth Sample Bokeh Stack", "BokehDepth Load Kontext (diffusers, deprecated)",
                                       "BokehDepth Sample Bokeh Stack (diffusers, deprecated)"]
    assert [k for k in ids if getattr(NODES[k], "DEPRECATED", False)] == list(ids[3:])
    assert NODES["BokehDepthApplyBokehAdapter"].RETURN_TYPES == ("MODEL",)


def test_sample_bokeh_stack_inputs():
    spec = NODES["BokehDepthSampleBokehStack"].INPUT_TYPES()
    assert list(spec["required"]) == ["model", "clip", "vae", "image", "k_list", "seed", "steps", "guidance",
                                      "sampler_name", "scheduler", "color_transfer"]
    assert list(spec["optional"]) == ["prompt_template"]
    req = spec["required"]
    assert [req[n][0] for n in ("model", "clip", "vae", "image", "k_list")] == ["MODEL", "CLIP", "VAE", "IMAGE",
                                                                               "BOKEH_K_LIST"]
    assert (req["steps"][1]["default"], req["guidance"][1]["default"], req["color_transfer"][1]["default"]) == (10, 7.0, True)
    assert (req["sampler_name"][1]["default"], req["scheduler"][1]["default"]) == ("euler", "simple")
    assert req["sampler_name"][1]["default"] in req["sampler_name"][0]
    assert NODES["BokehDepthSampleBokehStack"].RETURN_TYPES == ("BOKEH_STACK", "IMAGE", "IMAGE")
    assert NODES["BokehDepthSampleBokehStack"].RETURN_NAMES == ("stack", "frames", "labelled_frames")


def test_apply_errors_before_comfyui():
    adapter = STAGE1.BokehAdapter.attach(tiny_transformer(), rank=2, alpha=2)
    adapter.detach()
    apply = NODES["BokehDepthApplyBokehAdapter"]().apply
    sdxl = types.SimpleNamespace(model=types.SimpleNamespace(model_config=type("SDXL", (), {})(),
                                                             diffusion_model=torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="MODEL is a SDXL model \\(Linear\\), not FLUX.*flux1-kontext-dev"):
        apply(sdxl, adapter, 10.0)
    with pytest.raises(ValueError, match="Load Bokeh Adapter"):
        apply(sdxl, "not an adapter", 10.0)
    with pytest.raises(ValueError, match="k must be finite numbers > 0"):
        apply(sdxl, adapter, -1.0)


def test_stack_errors_before_comfyui():
    unpatched = types.SimpleNamespace(model_options={"transformer_options": {}})
    with pytest.raises(ValueError, match="no bokeh adapter.*Apply Bokeh Adapter"):
        NODES["BokehDepthSampleBokehStack"]().sample(unpatched, None, None, tiny_image(32, 32), [5.0], 1, 10, 7.0,
                                                     "euler", "simple", True)
    marked = types.SimpleNamespace(model_options={"transformer_options": {PATCH.ADAPTER_OPTION: object()}})
    with pytest.raises(ValueError, match="image must be"):
        STACK.sample_stack(marked, None, None, torch.rand(1, 32, 32), [5.0], 1, 10, 7.0, "euler", "simple", True)
    with pytest.raises(ValueError, match="k_list is empty"):
        STACK.sample_stack(marked, None, None, tiny_image(32, 32), [], 1, 10, 7.0, "euler", "simple", True)


def test_prompt_brackets_escaped_for_comfyui():
    prompt = STAGE1.build_prompt(None, 12.0)
    assert STACK.escape_prompt(prompt).startswith("Set dof_cond = 12.00 \\(stronger background defocus\\);")


# --------------------------------------------------------------------------- deprecated diffusers nodes

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny diffusers pipeline and adapter files in a stand-in models/bokehdepth folder."""
    root = tmp_path_factory.mktemp("models")
    pipe = tiny_kontext_pipeline(seed=1)
    pipe.save_pretrained(str(root / "diffusers" / "tiny-kontext"))
    ad = STAGE1.BokehAdapter.attach(pipe.transformer, rank=4, alpha=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ad.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    (root / "bokehdepth").mkdir()
    ad.save(str(root / "bokehdepth" / "tiny_bokeh.bin"))
    ad.detach()
    other = STAGE1.BokehAdapter.attach(tiny_transformer(num_attention_heads=3), rank=4, alpha=4)  # width 48, not 32
    other.save(str(root / "bokehdepth" / "other_arch.safetensors"))
    return root


@pytest.mark.slow
def test_diffusers_nodes_image_to_stack(files, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_MODELS_DIR", str(files / "bokehdepth"))
    (pipe,) = NODES["BokehDepthLoadKontext"]().load("tiny-kontext", "none", "fp32", "none")
    assert "tiny_bokeh.bin" in NODES["BokehDepthLoadBokehAdapter"].INPUT_TYPES()["required"]["adapter_file"][0]
    (adapter,) = NODES["BokehDepthLoadBokehAdapter"]().load("tiny_bokeh.bin")
    sampler = NODES["BokehDepthSampleBokehStackDiffusers"]()
    images = torch.cat([tiny_image(36, 50, seed=1), tiny_image(36, 50, seed=2)])  # -> 48x32
    ticks = []
    monkeypatch.setattr(EXT.nodes.comfy_seam.Progress, "callback", lambda self, d, n: ticks.append((d, n)))
    stack, frames, labelled = sampler.sample(pipe, adapter, images, [5.0, 20.0, 40.0], 2, 7.0, 3, True, "")
    assert ticks[-1] == (4, 4) and len(ticks) == 4, "progress counts steps over the batch"
    assert tuple(stack.frames.shape) == (2, 3, 32, 48, 3) and tuple(frames.shape) == (6, 32, 48, 3)
    assert stack.source == "stage1" and tuple(stack.reference.shape) == (2, 32, 48, 3)
    assert stack.k_list(1) == [5.0, 20.0, 40.0]
    assert torch.equal(frames[3:], stack.frames[1])
    assert labelled.shape == frames.shape and not torch.equal(labelled[:, :8, :24], frames[:, :8, :24])
    assert frames.min() >= 0 and frames.max() <= 1
    alone, *_ = sampler.sample(pipe, adapter, images[1:], [5.0, 20.0, 40.0], 2, 7.0, 3, True, "")
    assert torch.equal(alone.frames[0], stack.frames[1])

    with pytest.raises(ValueError, match="k_values"):
        sampler.sample(pipe, adapter, images, [], 2, 7.0, 3, True, "")
    with pytest.raises(ValueError, match="image"):
        sampler.sample(pipe, adapter, torch.rand(1, 10, 40, 3), [10.0], 1, 7.0, 3, False, "")
    (other,) = NODES["BokehDepthLoadBokehAdapter"]().load("other_arch.safetensors")
    with pytest.raises(ValueError, match="FLUX.1-Kontext-dev"):
        sampler.sample(pipe, other, images[:1], [10.0], 1, 7.0, 3, False, "")
    with pytest.raises(FileNotFoundError, match="bokehdepth"):
        NODES["BokehDepthLoadBokehAdapter"]().load(STAGE1.ADAPTER_FILE)
    with pytest.raises(FileNotFoundError, match="diffusers"):
        NODES["BokehDepthLoadKontext"]().load("FLUX.1-Kontext-dev", "none", "fp32", "none")
