"""Loading FLUX.1-Kontext-dev as a diffusers pipeline from local files (the standalone path)."""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence

import torch


def load_kontext_pipeline(path: str, dtype: torch.dtype = torch.bfloat16, device="cuda", offload: str = "none",
                          transformer_file: Optional[str] = None,
                          loras: Optional[Sequence[tuple[str, float]]] = None,
                          vae_tiling: bool = True, vae_slicing: bool = True):
    """FluxKontextPipeline from a local diffusers folder; never reaches for the hub.

    transformer_file: a single-file FLUX.1-Kontext transformer (e.g. ComfyUI's
    ``flux1-kontext-dev.safetensors``) read with the folder's transformer config.
    offload: "none" (all on ``device``), "model" (model CPU offload) or "sequential".
    loras: ``[(path, weight), ...]`` user LoRAs through diffusers' loader (peft).
    """
    from diffusers import FluxKontextPipeline, FluxTransformer2DModel

    if offload not in ("none", "model", "sequential"):
        raise ValueError(f"offload: must be 'none', 'model' or 'sequential', got {offload!r}")
    if not os.path.isfile(os.path.join(str(path), "model_index.json")):
        raise FileNotFoundError(
            f"no diffusers pipeline at '{path}' (model_index.json missing). Put a FLUX.1-Kontext-dev folder in "
            "diffusers format (model_index.json, transformer/, vae/, text_encoder/, text_encoder_2/, tokenizer/, "
            "tokenizer_2/, scheduler/) in ComfyUI's models/diffusers folder")
    kwargs = {}
    # accepted by every diffusers >= 0.35 (newer releases also take ``dtype``)
    dt = {"torch_dtype": dtype}
    if transformer_file:
        if not os.path.isfile(transformer_file):
            raise FileNotFoundError(f"transformer_file: '{transformer_file}' not found")
        try:
            kwargs["transformer"] = FluxTransformer2DModel.from_single_file(
                transformer_file, config=str(path), subfolder="transformer", local_files_only=True, **dt)
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(
                f"transformer_file: '{os.path.basename(transformer_file)}' is not a FLUX.1 transformer checkpoint in "
                f"the original (BFL) layout that diffusers can convert ({exc.__class__.__name__}: {exc}); use "
                "flux1-kontext-dev.safetensors (bf16/fp16), or leave it empty to use the folder's transformer/") from None
    try:
        pipe = FluxKontextPipeline.from_pretrained(str(path), local_files_only=True, **dt, **kwargs)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except (OSError, ValueError, RuntimeError) as exc:  # diffusers' words for a damaged or incomplete folder
        raise ValueError(unreadable_folder(str(path), exc)) from None
    pipe.set_progress_bar_config(disable=True)
    if loras:
        names, weights = [], []
        for i, (lora_path, weight) in enumerate(loras):
            name = f"user_lora_{i}"
            pipe.load_lora_weights(str(lora_path), adapter_name=name)
            names.append(name)
            weights.append(float(weight))
        pipe.set_adapters(names, adapter_weights=weights)
    device = torch.device(device)
    if device.type == "cpu" or offload == "none":
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    if vae_tiling:
        pipe.vae.enable_tiling()
    if vae_slicing:
        pipe.vae.enable_slicing()
    return pipe


def unreadable_folder(path: str, exc: BaseException) -> str:
    """diffusers' loading error told with the folder's name and the file inside it that failed, never
    the machine's paths."""
    folder, name = os.path.realpath(path), os.path.basename(os.path.normpath(path))
    fix = "download or copy the whole FLUX.1-Kontext-dev diffusers folder again"
    for quoted in re.findall(r"'([^']+)'", str(exc)):
        full = os.path.realpath(quoted)
        if full.startswith(folder + os.sep) and os.path.isfile(full):
            return (f"FLUX.1-Kontext folder '{name}': {os.path.relpath(full, folder)} is damaged or truncated; {fix}")
    text = str(exc).replace(str(path), name).replace(folder, name)
    return f"FLUX.1-Kontext folder '{name}' could not be loaded, it is incomplete or damaged ({text}); {fix}"
