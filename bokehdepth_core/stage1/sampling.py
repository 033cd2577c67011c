"""Bokeh stacks on diffusers' FluxKontextPipeline, as the authors' stack script makes them.

All K go through one pipeline call, each frame with its own CPU generator seeded alike (so every
frame starts from the same noise); the prompt per K is the dof_cond template with the raw K; the
reference is Lanczos-resized to multiples of 16; Kontext's auto-resize and true CFG are off,
guidance 7.0, T5 padded to 512 tokens. The prompt and reference helpers are shared with the
ComfyUI-native sampler.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .. import checks
from ..types import BokehStack

PROMPT_TEMPLATE = (
    "Set dof_cond = {value:.2f} (stronger background defocus); "
    "preserve subject sharpness; keep composition, lighting, and colors unchanged."
)

ImageLike = Union[Image.Image, torch.Tensor, np.ndarray]
Callback = Optional[Callable[[int, int], None]]


# --------------------------------------------------------------------------- inputs

def to_pil(image: ImageLike) -> Image.Image:
    """One RGB picture from PIL, a ``[1,H,W,3]``/``[H,W,3]`` tensor in 0..1, or a uint8 array.

    Float pictures are rounded to 8 bits: that gives back the file a ComfyUI IMAGE came from (the
    release reads PIL files).
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        batch = checks.image_batch(image)
        if batch.shape[0] != 1:
            raise ValueError(f"image: one picture per stack, got a batch of {batch.shape[0]}; sample each image "
                             "separately (sample_stacks does this for batches)")
        arr = batch[0].detach().cpu().numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"image: expected [1,H,W,3] or [H,W,3], got shape {tuple(arr.shape)}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL picture as ``[H,W,3]`` float32 in 0..1."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def prepare_reference(image: ImageLike, multiple: int = 16) -> Image.Image:
    """The reference as the release feeds it: Lanczos-resized (not cropped) down to multiples of 16."""
    pil = to_pil(image)
    w, h = pil.size
    if w < multiple or h < multiple:
        raise ValueError(f"image: {w}x{h} px is too small; Stage-1 needs at least {multiple}x{multiple} px")
    nw, nh = (w // multiple) * multiple, (h // multiple) * multiple
    return pil if (nw, nh) == (w, h) else pil.resize((nw, nh), Image.LANCZOS)


def build_prompt(template: Optional[str], k: float) -> str:
    """The prompt for one frame: ``{value}``/``{K_abs}`` = the raw K, ``{aperture}`` = max(1, 30/K)."""
    template = PROMPT_TEMPLATE if not template else template
    aperture = max(1.0, 30.0 / k) if k > 0 else float("inf")
    try:
        return template.format(value=k, K_abs=k, aperture=aperture)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"prompt_template: cannot fill it ({exc}); use {{value}}, {{K_abs}} or {{aperture}}") from None


def size_multiple(pipe) -> int:
    """Kontext packs 2x2 latent patches: images align to 2 x the VAE factor (16 for FLUX)."""
    return int(getattr(pipe, "vae_scale_factor", 8)) * 2


def _steps(value) -> int:
    return int(checks.number("num_inference_steps", value, ">= 1", minimum=1, inclusive=True))


def check_guidance(value, name: str = "guidance_scale") -> float:
    """FLUX's distilled guidance: a finite number from 0 to 100 (the release uses 7)."""
    return checks.number(name, value, "from 0 to 100 (the release uses 7.0)", inclusive=True, maximum=100.0)


# --------------------------------------------------------------------------- sampling

def sample_bokeh_stack(pipe, adapter, image: ImageLike, k_values: Sequence[float], num_inference_steps: int = 10,
                       guidance_scale: float = 7.0, seed: int = 42, prompt_template: Optional[str] = None,
                       color_transfer: bool = False, callback: Callback = None,
                       max_sequence_length: int = 512) -> list[Image.Image]:
    """One bokeh stack (a PIL image per K) from one picture.

    ``adapter``: a :class:`BokehAdapter`, attached to the pipeline's transformer for the call and
    conditioned on the clamped K; None runs the transformer as it is (a baseline with the same
    prompts and noise). ``callback(done, total)`` runs after every denoising step and may raise to
    cancel.
    """
    ks = checks.model_k_values(k_values)
    steps = _steps(num_inference_steps)
    guidance_scale = check_guidance(guidance_scale)
    source = to_pil(image)
    ref = prepare_reference(source, size_multiple(pipe))
    w, h = ref.size

    def on_step(_pipe, i, _t, _tensors):
        if callback is not None:
            callback(i + 1, steps)
        return {}

    if adapter is not None:
        adapter.attach_to(pipe.transformer)
        adapter.set_k(ks)
    try:
        frames = list(pipe(
            prompt=[build_prompt(prompt_template, k) for k in ks], image=ref, height=h, width=w,
            num_inference_steps=steps, guidance_scale=float(guidance_scale), max_area=h * w, true_cfg_scale=1.0,
            negative_prompt=None, generator=[torch.Generator(device="cpu").manual_seed(int(seed)) for _ in ks],
            max_sequence_length=int(max_sequence_length), _auto_resize=False,
            callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=[],
        ).images)
    finally:
        if adapter is not None:
            adapter.clear()
    if color_transfer:
        from ..color import color_transfer_lab

        # the release matches colours to the picture it was given, before the 16-px alignment
        frames = [color_transfer_lab(source, f) for f in frames]
    return frames


def sample_stacks(pipe, adapter, images: torch.Tensor, k_values: Sequence[float], num_inference_steps: int = 10,
                  guidance_scale: float = 7.0, seed: int = 42, prompt_template: Optional[str] = None,
                  color_transfer: bool = False, callback: Callback = None):
    """:func:`sample_bokeh_stack` for each picture of a ``[B,H,W,3]`` batch -> a :class:`BokehStack`
    (reference = the 16-aligned picture the frames were made from). ``callback`` counts steps
    over the whole batch."""
    images = checks.image_batch(images)
    ks = checks.model_k_values(k_values)
    steps = _steps(num_inference_steps)
    guidance_scale = check_guidance(guidance_scale)
    total = images.shape[0] * steps
    frames, refs = [], []
    for b in range(images.shape[0]):
        def step(done, _n, offset=b * steps):
            if callback is not None:
                callback(offset + done, total)

        pil = sample_bokeh_stack(pipe, adapter, images[b:b + 1], ks, steps, guidance_scale, seed, prompt_template,
                                 color_transfer, step)
        frames.append(torch.stack([to_tensor(f) for f in pil]))
        refs.append(to_tensor(prepare_reference(images[b:b + 1], size_multiple(pipe))))
    return make_stack(frames, ks, refs, seed=int(seed), steps=steps, guidance_scale=float(guidance_scale),
                      color_transfer=bool(color_transfer), prompt_template=prompt_template or PROMPT_TEMPLATE,
                      adapter=getattr(adapter, "source", None), sampler="diffusers")


def make_stack(frames: Sequence[torch.Tensor], k_values: Sequence[float], references: Sequence[torch.Tensor],
               **meta) -> BokehStack:
    """A Stage-1 :class:`BokehStack` from one ``[N,H,W,3]`` frame tensor and one ``[H,W,3]``
    reference per picture, all with the same K values."""
    return BokehStack(frames=torch.stack(list(frames)).float(),
                      k_values=torch.tensor([list(k_values)] * len(frames), dtype=torch.float32),
                      reference=torch.stack(list(references)).float(), source="stage1", meta=meta)
