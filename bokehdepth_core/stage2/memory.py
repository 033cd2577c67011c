"""Working-memory estimates of the Stage-2 forwards (activations, not weights), for a memory manager.

Inference runs without autograd: a ViT block frees its activations when the next one starts, so the
encoder's depth enters only through the tap outputs that are kept, and the encoder and the head run
one after the other. With ``F`` encoder frames (reference + stack), ``T`` tokens per frame, width
``D``, FFN hidden width ``Hd`` (4 D), ``n`` taps, ``g`` patch-grid cells, ``P = 196 g`` network
pixels (patch 14) and ``s`` bytes per element:

* encoder + DSFA: ``F*T*((n + 4)*D + Hd)*s`` — one block's peak (residual stream, its norm, the
  FFN's hidden layer, whose activation is applied in place, and its output, which becomes the next
  residual stream in place), the kept taps, DSFA's concatenated frames;
* Depth Anything V2's DPT head (reference only, ``f`` fusion width, ``c0..c3`` projection widths):
  every map of the head lives until its end, then the last convolutions run at full network
  resolution: ``g*(16*c0 + 4*c1 + c2 + c3/4 + 139*f)*s + P*(f + 34)*s``;
* UniDepthV2's decoder (reference only, hidden width ``C``, last-level width ``l = max(C/4, out_dim)``):
  the four prompted levels ``4*g*C`` plus the largest of its stages — prompt attention ``10*g*C``,
  upsampling ``32*g*C + 64*g*l``, output heads ``P*(l/2 + 64) + 192*g*l`` — all times ``s``, plus
  ``48*P`` bytes of fp32 outputs (radius, confidence, rays, points);
* the head phase also holds what the encoder hands over: ``(F + n)*T*D*s`` for Depth Anything V2
  (its unfused taps are views of all frames' outputs), ``n*T*D*s`` for UniDepthV2 (the reference's);
* inputs, in fp32 whatever the model's dtype: ``12*F*(H*W + 2*h*w)`` bytes for an ``H x W`` image
  and an ``h x w`` network input (the frames on the device, resized and normalised, and batched).

An estimate is the inputs plus the larger of the two phases. Checked against the peak of the tensors
an estimate allocates on CPU in fp32 (torch's profiler; tests/core/test_stage2_memory.py): the
formula stays above it by 5-45 % (Depth Anything V2 vits/vitb/vitl, UniDepthV2 release and small
configurations, 0-9 stack frames).
"""

from __future__ import annotations

import torch

__all__ = ["input_bytes", "encoder_bytes", "dpt_head_bytes", "unidepth_decoder_bytes", "dav2_activation_bytes",
           "unidepth_activation_bytes"]


def _size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def input_bytes(frames: int, image_size: tuple[int, int], network_size: tuple[int, int]) -> int:
    (H, W), (h, w) = image_size, network_size
    return 12 * frames * (H * W + 2 * h * w)


def encoder_bytes(frames: int, tokens: int, width: int, taps: int, dtype: torch.dtype) -> int:
    return frames * tokens * ((taps + 4) * width + 4 * width) * _size(dtype)


def dpt_head_bytes(grid: tuple[int, int], features: int, out_channels, dtype: torch.dtype) -> int:
    g = grid[0] * grid[1]
    c0, c1, c2, c3 = out_channels
    elements = g * (16 * c0 + 4 * c1 + c2 + c3 / 4 + 139 * features) + 196 * g * (features + 34)
    return int(elements * _size(dtype))


def unidepth_decoder_bytes(grid: tuple[int, int], hidden: int, out_dim: int, dtype: torch.dtype) -> int:
    g = grid[0] * grid[1]
    last = max(hidden // 4, out_dim)
    stages = (10 * g * hidden, 32 * g * hidden + 64 * g * last, 196 * g * (last // 2 + 64) + 192 * g * last)
    return int((4 * g * hidden + max(stages)) * _size(dtype) + 48 * 196 * g)


def _phases(encoder: int, head: int, kept: int, tokens: int, width: int, dtype: torch.dtype) -> int:
    """The larger phase; the head phase also holds ``kept`` token maps of the encoder."""
    return max(encoder, head + kept * tokens * width * _size(dtype))


def dav2_activation_bytes(config: dict, size: tuple[int, int], frames: int, dtype: torch.dtype,
                          width: int, taps: int) -> int:
    """Depth Anything V2 (+ DSFA) at network ``size`` with ``frames`` encoder frames."""
    grid = (size[0] // 14, size[1] // 14)
    tokens = grid[0] * grid[1] + 1
    return _phases(encoder_bytes(frames, tokens, width, taps, dtype),
                   dpt_head_bytes(grid, config["features"], config["out_channels"], dtype),
                   frames + taps, tokens, width, dtype)


def unidepth_activation_bytes(config: dict, size: tuple[int, int], frames: int, dtype: torch.dtype) -> int:
    """UniDepthV2 + DSFA at network ``size`` with ``frames`` encoder frames."""
    p = config["patch_size"]
    grid = (size[0] // p, size[1] // p)
    tokens = grid[0] * grid[1] + 1
    width, taps = config["embed_dim"], len(config["output_idx"])
    return _phases(encoder_bytes(frames, tokens, width, taps, dtype),
                   unidepth_decoder_bytes(grid, config["hidden_dim"], config["out_dim"], dtype),
                   taps, tokens, width, dtype)
