"""Stage-1 nodes: the bokeh adapter on ComfyUI's own FLUX.1-Kontext, and bokeh stacks from it.

Load Bokeh Adapter -> Apply Bokeh Adapter (a MODEL patch) -> Sample Bokeh Stack (ComfyUI's CLIP,
VAE and samplers). The diffusers-pipeline nodes stay loadable for old workflows, marked deprecated.
"""

from __future__ import annotations

import torch

from ..bokehdepth_core import checks, stage1, weight_files
from . import bokeh_patch, bokeh_stack
from . import comfy_seam as seam
from .common import (BOKEH_ADAPTER, BOKEH_STACK, K_LIST, KONTEXT_PIPELINE, MODEL_HINT, category, finite, model_files,
                     stack_outputs)

KONTEXT_FOLDER = "FLUX.1-Kontext-dev"
KONTEXT_SOURCE = ("huggingface.co/black-forest-labs/FLUX.1-Kontext-dev (the whole diffusers-format repo: "
                  "model_index.json, transformer/, vae/, text_encoder*/, tokenizer*/, scheduler/)")
NONE = "none"
SEED = ("INT", {"default": 42, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                "tooltip": "Noise seed, shared by every frame of a stack (what keeps the frames aligned)."})
STEPS = ("INT", {"default": 10, "min": 1, "max": 200,
                 "tooltip": "Denoising steps per frame (the paper uses 10 for stacks, the authors' script 50)."})
GUIDANCE = ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1,
                      "tooltip": "FLUX distilled guidance, as FluxGuidance sets it (the release uses 7.0)."})
COLOR_TRANSFER = ("BOOLEAN", {"default": True, "tooltip": "Match each frame's LAB colour statistics to the input "
                                                          "(on in the authors' inference script)."})
PROMPT = ("STRING", {"default": stage1.PROMPT_TEMPLATE, "multiline": True,
                     "tooltip": "Prompt per frame; {value} is the raw K, {aperture} max(1, 30/K). Empty = the "
                                "release template."})
IMAGE = ("IMAGE", {"tooltip": "The sharp all-in-focus picture(s), resized down to multiples of 16 px; a batch gives "
                              "one stack per picture."})
KS = (K_LIST, {"tooltip": "Bokeh strengths K (from BokehDepth K List), one frame each; the adapter was trained on 1..30 "
                          "and clamps other values (the prompt keeps the raw K)."})
STACK_TYPES = (BOKEH_STACK, "IMAGE", "IMAGE")
STACK_NAMES = ("stack", "frames", "labelled_frames")
STACK_TOOLTIPS = ("The bokeh stack (frames, their K, the 16-px-aligned reference) for Stage-2 depth.",
                  "All frames as an IMAGE batch: picture 1's K values in order, then picture 2's ...",
                  "The same frames with their K written in the corner, for previews.")


def _required_model(names: list[str], release_name: str, tooltip: str):
    return (seam.model_choices(names, release_name), {"tooltip": tooltip})


def _optional_model(folder: str, extensions: tuple[str, ...], tooltip: str):
    return ([NONE] + seam.list_models(folder, extensions), {"default": NONE, "tooltip": tooltip})


def _optional_path(name, folder: str):
    return None if name in (None, "", NONE) else seam.model_path(name, folder)


def _outputs(node: str, stack):
    finite(node, MODEL_HINT, frames=stack.frames, reference=stack.reference)
    return stack_outputs(stack)


class LoadBokehAdapter:
    DESCRIPTION = ("Load the BokehDepth Stage-1 bokeh adapter (the authors' bokeh_lora.bin, or a .safetensors "
                   "copy) from models/bokehdepth. Only bokeh adapter files are listed (depth models are not).")
    CATEGORY = category("Stage-1")
    FUNCTION = "load"
    RETURN_TYPES = (BOKEH_ADAPTER,)
    RETURN_NAMES = ("adapter",)
    OUTPUT_TOOLTIPS = ("The bokeh adapter for BokehDepth Apply Bokeh Adapter.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "adapter_file": _required_model(
                model_files(weight_files.is_adapter), stage1.ADAPTER_FILE,
                f"Adapter weights in models/bokehdepth ({stage1.ADAPTER_FILE} from {stage1.ADAPTER_SOURCE}); "
                "files holding other weights are not listed."),
        }}

    @classmethod
    def IS_CHANGED(cls, adapter_file):
        return seam.model_change_key(adapter_file)

    def load(self, adapter_file):
        path = seam.model_path(adapter_file, where_to_get=stage1.ADAPTER_SOURCE)
        return (stage1.BokehAdapter.from_file(path),)


class ApplyBokehAdapter:
    DESCRIPTION = ("Patch a FLUX.1-Kontext MODEL with the bokeh adapter (the input MODEL stays unchanged). Use it "
                   "with BokehDepth Sample Bokeh Stack, or in any KSampler graph (FluxGuidance 7.0 + ReferenceLatent, "
                   "cfg 1, euler/simple, ModelSamplingFlux) for one bokeh image at K; "
                   "transformer_options['bokehdepth_k'] overrides k per sampling run.")
    CATEGORY = category("Stage-1")
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the MODEL whose attention carries the bokeh adapter.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "FLUX.1-Kontext-dev from Load Diffusion Model (bf16, fp8 or GGUF)."}),
            "adapter": (BOKEH_ADAPTER, {"tooltip": "From BokehDepth Load Bokeh Adapter."}),
            "k": ("FLOAT", {"default": 10.0, "min": 0.01, "max": 100.0, "step": 0.1,
                            "tooltip": "Bokeh strength K used when nothing else sets one (Sample Bokeh Stack sets its "
                                       "own per frame). Trained range 1..30; other values are clamped."}),
        }}

    def apply(self, model, adapter, k):
        return (bokeh_patch.apply_bokeh_adapter(model, adapter, k),)


class SampleBokehStack:
    DESCRIPTION = ("One sharp image in, a calibrated bokeh stack out, on ComfyUI's own FLUX.1-Kontext: one frame per "
                   "K from the same noise, with the release's prompt, guidance, time shift and colour transfer. "
                   "A batch of images gives one stack per image.")
    CATEGORY = category("Stage-1")
    FUNCTION = "sample"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = STACK_TYPES, STACK_NAMES, STACK_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = seam.sampler_choices()
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "FLUX.1-Kontext-dev patched by BokehDepth Apply Bokeh Adapter."}),
                "clip": ("CLIP", {"tooltip": "FLUX text encoders (DualCLIPLoader: clip_l + t5xxl, type flux)."}),
                "vae": ("VAE", {"tooltip": "The FLUX VAE (ae.safetensors)."}),
                "image": IMAGE,
                "k_list": KS,
                "seed": SEED,
                "steps": STEPS,
                "guidance": GUIDANCE,
                "sampler_name": (samplers, {"default": seam.DEFAULT_SAMPLER,
                                            "tooltip": "ComfyUI sampler (the release samples with Euler)."}),
                "scheduler": (schedulers, {"default": seam.DEFAULT_SCHEDULER,
                                           "tooltip": "ComfyUI scheduler ('simple' = the release's evenly spaced "
                                                      "flow-matching steps)."}),
                "color_transfer": COLOR_TRANSFER,
            },
            "optional": {"prompt_template": PROMPT},
        }

    def sample(self, model, clip, vae, image, k_list, seed, steps, guidance, sampler_name, scheduler,
               color_transfer, prompt_template=None):
        return _outputs(bokeh_stack.SAMPLE_NODE,
                        bokeh_stack.sample_stack(model, clip, vae, image, k_list, seed, steps, guidance, sampler_name,
                                                 scheduler, color_transfer, prompt_template or None))


class LoadKontextPipeline:
    DEPRECATED = True
    DESCRIPTION = ("Deprecated: load FLUX.1-Kontext-dev as a diffusers pipeline from models/diffusers. Use Load "
                   "Diffusion Model + DualCLIPLoader + Load VAE with BokehDepth Apply Bokeh Adapter and BokehDepth "
                   "Sample Bokeh Stack.")
    CATEGORY = category("Stage-1")
    FUNCTION = "load"
    RETURN_TYPES = (KONTEXT_PIPELINE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("The FLUX.1-Kontext pipeline for BokehDepth Sample Bokeh Stack (diffusers, deprecated).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_folder": _required_model(
                    seam.list_model_dirs("diffusers"), KONTEXT_FOLDER,
                    f"A FLUX.1-Kontext-dev folder in diffusers format inside models/diffusers ({KONTEXT_SOURCE})."),
                "transformer_file": _optional_model(
                    "diffusion_models", (".safetensors", ".sft"),
                    "Optional single-file transformer from models/diffusion_models used instead of the folder's."),
                "dtype": (["auto", "bf16", "fp16", "fp32"], {"default": "auto",
                          "tooltip": "auto = bf16 on GPUs that support it (fp16 otherwise), fp32 on CPU."}),
                "offload": (["none", "model", "sequential"], {"default": "none",
                            "tooltip": "none: all on the GPU; model: each part on the GPU while it runs; "
                                       "sequential: layer by layer (least VRAM, slowest)."}),
            },
            "optional": {
                "lora_name": _optional_model("loras", (".safetensors",), "Optional FLUX LoRA from models/loras."),
                "lora_strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                            "tooltip": "Weight of the optional LoRA."}),
            },
        }

    def load(self, model_folder, transformer_file, dtype, offload, lora_name=NONE, lora_strength=1.0):
        seam.free_memory()  # the pipeline lives outside ComfyUI's memory manager
        device = seam.torch_device()
        path = seam.model_path(model_folder, "diffusers", where_to_get=KONTEXT_SOURCE)
        lora = _optional_path(lora_name, "loras")
        pipe = stage1.load_kontext_pipeline(path, dtype=seam.pick_dtype(device, dtype), device=device, offload=offload,
                                            transformer_file=_optional_path(transformer_file, "diffusion_models"),
                                            loras=None if lora is None else [(lora, lora_strength)])
        return (pipe,)


class SampleBokehStackDiffusers:
    DEPRECATED = True
    DESCRIPTION = ("Deprecated: Sample Bokeh Stack on a diffusers pipeline from BokehDepth Load Kontext (diffusers, "
                   "deprecated).")
    CATEGORY = category("Stage-1")
    FUNCTION = "sample"
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = STACK_TYPES, STACK_NAMES, STACK_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (KONTEXT_PIPELINE, {"tooltip": "From BokehDepth Load Kontext (diffusers, deprecated)."}),
                "adapter": (BOKEH_ADAPTER, {"tooltip": "From BokehDepth Load Bokeh Adapter."}),
                "image": IMAGE, "k_list": KS, "steps": STEPS, "guidance": GUIDANCE, "seed": SEED,
                "color_transfer": COLOR_TRANSFER,
            },
            "optional": {"prompt_template": PROMPT},
        }

    def sample(self, pipeline, adapter, image, k_list, steps, guidance, seed, color_transfer, prompt_template=None):
        if not bokeh_patch.is_bokeh_adapter(adapter):
            raise ValueError("adapter must come from a BokehDepth Load Bokeh Adapter node")
        images = checks.image_batch(image[..., :3] if isinstance(image, torch.Tensor) else image)
        progress = seam.Progress(images.shape[0])  # the core's callback brings the step count
        return _outputs(NODE_DISPLAY_NAME_MAPPINGS["BokehDepthSampleBokehStackDiffusers"],
                        stage1.sample_stacks(pipeline, adapter, images, k_list, steps, guidance, seed,
                                             prompt_template or None, color_transfer, progress.callback))


NODE_CLASS_MAPPINGS = {
    "BokehDepthLoadBokehAdapter": LoadBokehAdapter,
    "BokehDepthApplyBokehAdapter": ApplyBokehAdapter,
    "BokehDepthSampleBokehStack": SampleBokehStack,
    "BokehDepthLoadKontext": LoadKontextPipeline,
    "BokehDepthSampleBokehStackDiffusers": SampleBokehStackDiffusers,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthLoadBokehAdapter": "BokehDepth Load Bokeh Adapter",
    "BokehDepthApplyBokehAdapter": "BokehDepth Apply Bokeh Adapter",
    "BokehDepthSampleBokehStack": "BokehDepth Sample Bokeh Stack",
    "BokehDepthLoadKontext": "BokehDepth Load Kontext (diffusers, deprecated)",
    "BokehDepthSampleBokehStackDiffusers": "BokehDepth Sample Bokeh Stack (diffusers, deprecated)",
}
