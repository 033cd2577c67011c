"""Bokeh stacks on ComfyUI's own FLUX.1-Kontext (Sample Bokeh Stack): the authors' stack-script
semantics with the user's CLIP, VAE and the MODEL from Apply Bokeh Adapter, through ComfyUI's samplers.

Per picture: the reference is Lanczos-resized down to multiples of 16 and VAE-encoded once as the
Kontext reference latent; every frame starts from the same noise (one batch-1 draw from the seed);
the timestep shift follows the frame size (ModelSamplingFlux, base 0.5, max 1.15). Per K: the
prompt from the template with the raw K (brackets escaped: ComfyUI's tokenizer reads them as
emphasis), T5 padded to 512 tokens as diffusers does, distilled guidance in the cond, cfg 1, the
K handed to the adapter through ``transformer_options``. ComfyUI is imported inside functions only.
"""

from __future__ import annotations

import torch

from ..bokehdepth_core import checks
from ..bokehdepth_core.color import color_transfer_lab
from ..bokehdepth_core.stage1 import (PROMPT_TEMPLATE, build_prompt, make_stack, prepare_reference, to_pil,
                                      to_tensor)
from ..bokehdepth_core.stage1.sampling import check_guidance
from . import comfy_seam as seam
from .bokeh_patch import APPLY_NODE, K_OPTION, applied_adapter

T5_MIN_LENGTH = 512  # diffusers' max_sequence_length; ComfyUI's Flux tokenizer pads to 256 by default
MAX_SHIFT, BASE_SHIFT = 1.15, 0.5  # FLUX.1's dynamic time shift (FlowMatchEuler / ModelSamplingFlux)
CFG = 1.0  # the release runs distilled guidance only (true CFG off)
SIZE_MULTIPLE = 16
SAMPLE_NODE = "BokehDepth Sample Bokeh Stack"


def escape_prompt(text: str) -> str:
    """Literal brackets for ComfyUI's tokenizer, which reads ``(...)`` as emphasis."""
    return text.replace("(", "\\(").replace(")", "\\)")


def encode_prompts(clip, prompts: list[str]) -> dict[str, list]:
    """Each distinct prompt encoded once, T5 padded to 512 tokens (ComfyUI CONDITIONING per prompt)."""
    clip = clip.clone()
    clip.set_tokenizer_option("t5xxl_min_length", T5_MIN_LENGTH)
    return {p: clip.encode_from_tokens_scheduled(clip.tokenize(escape_prompt(p))) for p in dict.fromkeys(prompts)}


def frame_conditioning(cond: list, guidance: float, reference_latent: torch.Tensor) -> list:
    """What FluxGuidance and ReferenceLatent add to a prompt's conditioning."""
    import node_helpers

    cond = node_helpers.conditioning_set_values(cond, {"guidance": float(guidance)})
    return node_helpers.conditioning_set_values(cond, {"reference_latents": [reference_latent]}, append=True)


def require_adapter(model):
    runtime = applied_adapter(model)
    if runtime is None:
        raise ValueError(f"{SAMPLE_NODE}: the MODEL carries no bokeh adapter. Connect it through a {APPLY_NODE} "
                         f"node (Load Diffusion Model -> {APPLY_NODE} -> {SAMPLE_NODE})")
    return runtime


@torch.no_grad()
def sample_stack(model, clip, vae, images, k_list, seed: int, steps: int, guidance: float, sampler_name: str,
                 scheduler: str, color_transfer: bool, prompt_template=None):
    """One :class:`BokehStack` per picture of ``images`` (``[B,H,W,3]``); frames image-major."""
    runtime = require_adapter(model)
    images = checks.image_batch(images)
    ks = checks.model_k_values(k_list, "k_list")
    steps = int(checks.number("steps", steps, ">= 1", minimum=1, inclusive=True))
    guidance = check_guidance(guidance, "guidance")
    import comfy.sample
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    prompts = [build_prompt(prompt_template, k) for k in ks]
    conds = encode_prompts(clip, prompts)
    progress = seam.SamplingProgress(model, images.shape[0] * len(ks) * steps)
    stacks, references = [], []
    for b in range(images.shape[0]):
        source = to_pil(images[b:b + 1])
        reference = to_tensor(prepare_reference(source, SIZE_MULTIPLE))
        reference_latent = vae.encode(reference[None])
        latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros_like(reference_latent))
        noise = comfy.sample.prepare_noise(latent, seed)  # one draw, shared by every frame
        sized = ModelSamplingFlux().patch(model, MAX_SHIFT, BASE_SHIFT, reference.shape[1], reference.shape[0])[0]
        frames = []
        for j, (k, prompt) in enumerate(zip(ks, prompts)):
            frame_model = sized.clone()
            frame_model.model_options["transformer_options"][K_OPTION] = [k]
            samples = comfy.sample.sample(
                frame_model, noise, steps, CFG, sampler_name, scheduler,
                frame_conditioning(conds[prompt], guidance, reference_latent), [], latent,
                callback=progress.callback((b * len(ks) + j) * steps), disable_pbar=True, seed=seed)
            frame = vae.decode(samples)[0].float().cpu()
            if color_transfer:  # the release matches colours to the picture it was given (8-bit, LAB)
                frame = to_tensor(color_transfer_lab(source, to_pil(frame)))
            frames.append(frame)
        stacks.append(torch.stack(frames))
        references.append(reference)
    return make_stack(stacks, ks, references, seed=int(seed), steps=steps, guidance_scale=float(guidance),
                      sampler_name=sampler_name, scheduler=scheduler, color_transfer=bool(color_transfer),
                      prompt_template=prompt_template or PROMPT_TEMPLATE, adapter=getattr(runtime.adapter, "source", None),
                      sampler="comfyui")
