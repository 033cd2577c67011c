"""Stage-1 nodes: load FLUX.1-Kontext (diffusers) and the bokeh adapter, sample a bokeh stack."""

from __future__ import annotations

from ..bokehdepth_core import stage1
from . import comfy_seam as seam
from .common import BOKEH_ADAPTER, BOKEH_STACK, K_LIST, KONTEXT_PIPELINE, category

KONTEXT_FOLDER = "FLUX.1-Kontext-dev"
KONTEXT_SOURCE = ("huggingface.co/black-forest-labs/FLUX.1-Kontext-dev (the whole diffusers-format repo: "
                  "model_index.json, transformer/, vae/, text_encoder*/, tokenizer*/, scheduler/)")
NONE = "none"


def _required_model(names: list[str], release_name: str, tooltip: str):
    return (seam.model_choices(names, release_name), {"tooltip": tooltip})


def _optional_model(folder: str, extensions: tuple[str, ...], tooltip: str):
    return ([NONE] + seam.list_models(folder, extensions), {"default": NONE, "tooltip": tooltip})


def _optional_path(name, folder: str):
    return None if name in (None, "", NONE) else seam.model_path(name, folder)


class LoadKontextPipeline:
    DESCRIPTION = ("Load FLUX.1-Kontext-dev from a diffusers-format folder in models/diffusers, optionally with "
                   "the transformer from a single file in models/diffusion_models and a user LoRA. Frees "
                   "ComfyUI's VRAM first; never downloads anything.")
    CATEGORY = category("Stage-1")
    FUNCTION = "load"
    RETURN_TYPES = (KONTEXT_PIPELINE,)
    RETURN_NAMES = ("pipeline",)
    OUTPUT_TOOLTIPS = ("The FLUX.1-Kontext pipeline for the Sample Bokeh Stack node.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_folder": _required_model(
                    seam.list_model_dirs("diffusers"), KONTEXT_FOLDER,
                    f"A FLUX.1-Kontext-dev folder in diffusers format inside models/diffusers (get it from {KONTEXT_SOURCE})."),
                "transformer_file": _optional_model(
                    "diffusion_models", (".safetensors", ".sft"),
                    "Optional single-file transformer from models/diffusion_models (e.g. flux1-kontext-dev.safetensors) "
                    "used instead of the folder's transformer/ weights; the folder still gives its config."),
                "dtype": (["auto", "bf16", "fp16", "fp32"], {"default": "auto",
                          "tooltip": "Weights precision: auto = bf16 on GPUs that support it (fp16 otherwise), fp32 on CPU."}),
                "offload": (["none", "model", "sequential"], {"default": "none",
                            "tooltip": "none: everything stays on the GPU (fastest, most VRAM). model: each model (text "
                                       "encoders, transformer, VAE) moves to the GPU only while it runs. sequential: "
                                       "layer by layer (slowest, least VRAM)."}),
            },
            "optional": {
                "lora_name": _optional_model("loras", (".safetensors",),
                                             "Optional FLUX LoRA from models/loras, loaded with diffusers (peft)."),
                "lora_strength": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                            "tooltip": "Weight of the optional LoRA."}),
            },
        }

    def load(self, model_folder, transformer_file, dtype, offload, lora_name=NONE, lora_strength=1.0):
        seam.free_memory()
        device = seam.torch_device()
        path = seam.model_path(model_folder, "diffusers", where_to_get=KONTEXT_SOURCE)
        lora = _optional_path(lora_name, "loras")
        pipe = stage1.load_kontext_pipeline(path, dtype=seam.pick_dtype(device, dtype), device=device, offload=offload,
                                            transformer_file=_optional_path(transformer_file, "diffusion_models"),
                                            loras=None if lora is None else [(lora, lora_strength)])
        return (pipe,)


class LoadBokehAdapter:
    DESCRIPTION = ("Load the BokehDepth Stage-1 bokeh adapter (the authors' bokeh_lora.bin, or a .safetensors "
                   "copy) from models/bokehdepth.")
    CATEGORY = category("Stage-1")
    FUNCTION = "load"
    RETURN_TYPES = (BOKEH_ADAPTER,)
    RETURN_NAMES = ("adapter",)
    OUTPUT_TOOLTIPS = ("The bokeh adapter for the Sample Bokeh Stack node.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "adapter_file": _required_model(
                seam.list_models(), stage1.ADAPTER_FILE,
                f"Adapter weights in models/bokehdepth ({stage1.ADAPTER_FILE} from {stage1.ADAPTER_SOURCE})."),
        }}

    @classmethod
    def IS_CHANGED(cls, adapter_file):
        return seam.model_change_key(adapter_file)

    def load(self, adapter_file):
        path = seam.model_path(adapter_file, where_to_get=stage1.ADAPTER_SOURCE)
        return (stage1.BokehAdapter.from_file(path),)


class SampleBokehStack:
    DESCRIPTION = ("One sharp image in, a calibrated bokeh stack out: FLUX.1-Kontext with the bokeh adapter, one "
                   "frame per K, all K in one batch. A batch of images gives one stack per image.")
    CATEGORY = category("Stage-1")
    FUNCTION = "sample"
    RETURN_TYPES = (BOKEH_STACK, "IMAGE")
    RETURN_NAMES = ("stack", "frames")
    OUTPUT_TOOLTIPS = ("The bokeh stack (frames, their K, the reference) for Stage-2 depth.",
                       "All frames as an IMAGE batch (image 1's K values, then image 2's ...).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (KONTEXT_PIPELINE, {"tooltip": "From Load FLUX.1-Kontext (diffusers)."}),
                "adapter": (BOKEH_ADAPTER, {"tooltip": "From Load Bokeh Adapter."}),
                "image": ("IMAGE", {"tooltip": "The sharp all-in-focus picture(s); resized to multiples of 16 px."}),
                "k_list": (K_LIST, {"tooltip": "Bokeh strengths K (from Bokeh K List); the adapter was trained on "
                                               "1..30 and clamps other values."}),
                "steps": ("INT", {"default": 10, "min": 1, "max": 200,
                                  "tooltip": "Denoising steps (the paper uses 10 for stacks, the authors' script 50)."}),
                "guidance": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                       "tooltip": "FLUX distilled guidance (the release uses 7.0)."}),
                "seed": ("INT", {"default": 42, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed, shared by every frame of a stack (what keeps frames aligned)."}),
                "color_transfer": ("BOOLEAN", {"default": True,
                                               "tooltip": "Match each frame's LAB colour statistics to the input "
                                                          "(on in the authors' inference script)."}),
            },
            "optional": {
                "prompt_template": ("STRING", {"default": stage1.PROMPT_TEMPLATE, "multiline": True,
                                               "tooltip": "Prompt per frame; {value} is the raw K. Empty = the release template."}),
            },
        }

    def sample(self, pipeline, adapter, image, k_list, steps, guidance, seed, color_transfer, prompt_template=None):
        if not isinstance(adapter, stage1.BokehAdapter):
            raise ValueError("adapter must come from a Load Bokeh Adapter node")
        if not k_list:
            raise ValueError("k_list is empty: connect a Bokeh K List node with at least one K, e.g. '10, 20, 30'")
        progress = seam.Progress(image.shape[0] * steps)
        stack = stage1.sample_stacks(pipeline, adapter, image, list(k_list), steps, guidance, seed,
                                     prompt_template or None, color_transfer, progress.callback)
        b, n, h, w, c = stack.frames.shape
        frames = stack.frames.reshape(b * n, h, w, c).to(seam.intermediate_device())
        return (stack, frames)


NODE_CLASS_MAPPINGS = {
    "BokehDepthLoadKontext": LoadKontextPipeline,
    "BokehDepthLoadBokehAdapter": LoadBokehAdapter,
    "BokehDepthSampleBokehStack": SampleBokehStack,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthLoadKontext": "Load FLUX.1-Kontext (diffusers)",
    "BokehDepthLoadBokehAdapter": "Load Bokeh Adapter",
    "BokehDepthSampleBokehStack": "Sample Bokeh Stack",
}
