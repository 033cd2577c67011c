"""Apply Bokeh Adapter on ComfyUI's own Flux (the real ComfyUI, a tiny model): through ComfyUI's
sampler it computes what the diffusers processor computes (the authors' processor, bit for bit),
and the input MODEL stays as it was."""

from __future__ import annotations

import gc
import importlib
import logging
import weakref

import pytest
import torch

import comfy_tiny
from bokehdepth_core.stage1 import BokehAdapter
from bokehdepth_core.testing import tiny_transformer

H, W = 4, 6  # latent size: 32 x 48 px


@pytest.fixture(scope="module")
def bp(ext_in_comfyui):
    return importlib.import_module(ext_in_comfyui.__name__ + ".nodes.bokeh_patch")


@pytest.fixture(scope="module")
def flux(comfyui):
    transformer = comfy_tiny.flux_transformer(seed=0)
    return transformer, comfy_tiny.comfy_model(transformer)


def make_adapter(transformer, blocks="1,2", seed=1, std=0.3) -> BokehAdapter:
    """Layers 1 and 2 of 4: double block 1 and single block 0."""
    adapter = BokehAdapter.attach(transformer, blocks=blocks, rank=4, alpha=8)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    adapter.detach()
    return adapter


def sample(model, ks=None, cfg=2.5, steps=2, seed=3):
    """Two latents through ComfyUI's KSampler path (Kontext reference, ModelSamplingFlux), recording
    every call of the diffusion model: inputs as it got them and its output."""
    import comfy.patcher_extension
    import comfy.sample
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    m = ModelSamplingFlux().patch(model, 1.15, 0.5, W * 8, H * 8)[0]
    if ks is not None:
        m.model_options["transformer_options"]["bokehdepth_k"] = ks
    calls = []

    def record(executor, x, timestep, context, y, guidance, ref_latents, *args, **kwargs):
        out = executor(x, timestep, context, y, guidance, ref_latents, *args, **kwargs)
        calls.append(dict(x=x.clone(), t=timestep.clone(), context=context.clone(), y=y.clone(), guidance=guidance.clone(),
                          refs=[r.clone() for r in ref_latents], out=out.clone()))
        return out

    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "bokehdepth-test", record)
    g = torch.Generator().manual_seed(2)
    reference = torch.randn(1, comfy_tiny.LATENT_CHANNELS, H, W, generator=g)

    def cond():
        return [[torch.randn(1, 7, 32, generator=g),
                 {"pooled_output": torch.randn(1, 32, generator=g), "guidance": 3.5, "reference_latents": [reference]}]]

    positive, negative = cond(), cond()
    latent = torch.zeros(2, comfy_tiny.LATENT_CHANNELS, H, W)
    noise = comfy.sample.prepare_noise(latent, seed)
    out = comfy.sample.sample(m, noise, steps, cfg, "euler", "simple", positive, negative, latent, disable_pbar=True,
                              seed=seed)
    return out, calls


def _pack(x):
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def _unpack(t, h, w):
    b, _n, c4 = t.shape
    return t.reshape(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def _ids(h, w, index):
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


def replay(transformer, adapter, call, ks):
    """The recorded call on diffusers' transformer with the adapter's processors, element j on K[j mod len]
    (Kontext reference tokens appended with ids [1, row, col], as diffusers' pipeline does)."""
    batch = call["x"].shape[0]
    adapter.attach_to(transformer)
    adapter.set_k([ks[j % len(ks)] for j in range(batch)])
    try:
        with torch.no_grad():
            out = transformer(
                hidden_states=torch.cat([_pack(call["x"])] + [_pack(r) for r in call["refs"]], 1),
                img_ids=torch.cat([_ids(H, W, 0)] + [_ids(H, W, 1) for _ in call["refs"]]),
                encoder_hidden_states=call["context"], txt_ids=torch.zeros(call["context"].shape[1], 3),
                pooled_projections=call["y"], timestep=call["t"], guidance=call["guidance"], return_dict=False)[0]
    finally:
        adapter.detach()
    return _unpack(out[:, : (H // 2) * (W // 2)], H, W)


def assert_replays(transformer, adapter, calls, ks):
    assert calls
    for call in calls:
        want = replay(transformer, adapter, call, ks)
        assert (want - call["out"]).abs().max() <= 1e-5 * max(1.0, float(want.abs().max()))


@pytest.mark.parametrize("ks,cfg,batch", [([5.0, 45.0], 2.5, 4), ([7.0], 1.0, 2), (None, 1.0, 2)],
                         ids=["per-sample-K-cfg2.5", "one-K-cfg1", "default-k"])
def test_patch_reproduces_diffusers_processor(bp, flux, caplog, ks, cfg, batch):
    transformer, model = flux
    adapter = make_adapter(transformer)
    patched = bp.apply_bokeh_adapter(model, adapter, 12.0)
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        out, calls = sample(patched, ks, cfg)
    assert {c["x"].shape[0] for c in calls} == {batch}, "cfg > 1 runs cond and uncond in one batch"
    assert_replays(transformer, adapter, calls, ks or [12.0])
    base, _ = sample(model, ks, cfg)
    assert (out - base).abs().max() > 1e-2, "the adapter changes the result"
    clamped = "outside the adapter's trained range" in caplog.text
    assert clamped == (ks is not None and 45.0 in ks)


def test_input_model_unchanged_and_clones_share_the_adapter(bp, flux):
    transformer, model = flux
    before, _ = sample(model)
    patched = bp.apply_bokeh_adapter(model, make_adapter(transformer), 10.0)
    sample(patched, [3.0, 20.0])
    after, _ = sample(model)
    assert torch.equal(before, after)
    assert not model.object_patches and "patches_replace" not in model.model_options["transformer_options"]
    runtime = bp.applied_adapter(patched)
    assert runtime is not None and bp.applied_adapter(model) is None
    twin = patched.clone()
    dit, twin_dit = (m.model_options["transformer_options"]["patches_replace"]["dit"] for m in (patched, twin))
    assert set(dit) == {("double_block", 1), ("single_block", 0)}
    assert all(twin_dit[k] is dit[k] for k in dit) and bp.applied_adapter(twin) is runtime
    assert set(patched.object_patches) == {"diffusion_model.double_blocks.1.img_attn.norm",
                                           "diffusion_model.single_blocks.0.norm"}


def test_applying_again_replaces_and_foreign_patches_chain(bp, flux):
    transformer, model = flux
    first, second = make_adapter(transformer, seed=5), make_adapter(transformer, blocks="0,3", seed=6)
    seen = []

    def foreign(args, extra):
        seen.append(1)
        return extra["original_block"](args)

    with_foreign = model.clone()
    with_foreign.set_model_patch_replace(foreign, "dit", "single_block", 1)
    twice = bp.apply_bokeh_adapter(bp.apply_bokeh_adapter(with_foreign, first, 10.0), second, 10.0)
    _, calls = sample(twice, [4.0, 25.0])
    assert_replays(transformer, second, calls, [4.0, 25.0])
    assert seen, "a replace patch already on the block still runs"
    dit = twice.model_options["transformer_options"]["patches_replace"]["dit"]
    assert set(dit) == {("double_block", 0), ("single_block", 1)} and dit[("single_block", 1)].previous is foreign
    wrapped = [o for o in twice.object_patches.values() if isinstance(o, bp.BokehQKNorm)]
    assert len(wrapped) == 2 and all(o.runtime is bp.applied_adapter(twice) for o in wrapped)


def test_user_weight_patches_compose(bp, flux):
    """A LoRA-style weight patch on the wrapped norm and on the block still applies under the adapter."""
    transformer, model = flux
    adapter = make_adapter(transformer)
    g = torch.Generator().manual_seed(9)
    scale_delta = 0.5 * torch.randn(transformer.transformer_blocks[1].attn.norm_q.weight.shape, generator=g)
    proj_delta = 0.1 * torch.randn(transformer.transformer_blocks[1].attn.to_out[0].weight.shape, generator=g)
    lora = model.clone()
    lora.add_patches({"diffusion_model.double_blocks.1.img_attn.norm.query_norm.scale": (scale_delta,),
                      "diffusion_model.double_blocks.1.img_attn.proj.weight": (proj_delta,)}, 1.0)
    _, calls = sample(bp.apply_bokeh_adapter(lora, adapter, 10.0), [6.0, 18.0])
    attn = transformer.transformer_blocks[1].attn
    with torch.no_grad():
        attn.norm_q.weight += scale_delta
        attn.to_out[0].weight += proj_delta
    try:
        assert_replays(transformer, adapter, calls, [6.0, 18.0])
    finally:
        with torch.no_grad():
            attn.norm_q.weight -= scale_delta
            attn.to_out[0].weight -= proj_delta


def test_adapter_tensors_follow_the_model(bp, flux):
    transformer, model = flux
    model16 = comfy_tiny.comfy_model(transformer, dtype=torch.bfloat16)
    adapter = make_adapter(transformer, std=0.1)
    patched = bp.apply_bokeh_adapter(model16, adapter, 10.0)
    _, calls = sample(patched, [5.0, 20.0], cfg=1.0, steps=1)
    _, base16 = sample(model16, cfg=1.0, steps=1)
    _, base32 = sample(model, cfg=1.0, steps=1)
    runtime = bp.applied_adapter(patched)
    assert runtime.placements() == {("cpu", torch.bfloat16)}, "q/k maps in the compute dtype, on its device"
    assert all(p.dtype == torch.float32 for p in adapter.parameters()), "the loaded adapter itself is untouched"
    as_float = {k: ([r.float() for r in v] if k == "refs" else v.float()) for k, v in calls[0].items()}
    want = replay(transformer, adapter, as_float, [5.0, 20.0])
    bf16_noise = (base16[0]["out"].float() - base32[0]["out"]).abs().max()
    assert (calls[0]["out"].float() - want).abs().max() < 2 * bf16_noise, "bf16 round-off, not a wrong cast"
    block_patch = patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 1)]
    assert block_patch.to(torch.device("cpu")) is block_patch and runtime.placements()
    block_patch.to(torch.device("meta"))  # what ComfyUI calls when it offloads the model elsewhere
    assert runtime.placements() == set()


def test_adapter_freed_with_the_last_clone(bp, flux):
    transformer, model = flux
    patched = bp.apply_bokeh_adapter(model, make_adapter(transformer), 10.0)
    sample(patched, [5.0, 9.0], cfg=1.0, steps=1)
    ref = weakref.ref(bp.applied_adapter(patched))
    del patched
    sample(model, cfg=1.0, steps=1)  # loading another clone puts the original modules back
    gc.collect()
    assert ref() is None


def test_apply_errors(bp, flux, comfyui, monkeypatch):
    transformer, model = flux
    adapter = make_adapter(transformer)
    with pytest.raises(ValueError, match="k must be finite numbers > 0"):
        bp.apply_bokeh_adapter(model, adapter, 0.0)
    wide = make_adapter(tiny_transformer(in_channels=64, num_attention_heads=3), blocks="0")
    with pytest.raises(ValueError, match="width 48.*width 32.*FLUX.1-Kontext-dev"):
        bp.apply_bokeh_adapter(model, wide, 10.0)
    import comfy.ldm.modules.attention as attention

    monkeypatch.delattr(attention, "wrap_attn")
    with pytest.raises(RuntimeError, match=r"ComfyUI 0\.3\.60 or newer.*this ComfyUI is 0\.3\.\d+"):
        bp.apply_bokeh_adapter(model, adapter, 10.0)
