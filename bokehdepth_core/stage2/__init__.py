"""Stage-2: metric depth from an image and its bokeh stack (DSFA-fused ViT depth models).

Public API: ``build_dav2_dsfa``, ``build_unidepthv2_dsfa``, ``load_dsfa_checkpoint``, ``build_from_checkpoint``,
``read_checkpoint``, ``detect_model``, ``estimate_depth``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .checkpoints import (CheckpointError, build_from_checkpoint, detect_model, load_dsfa_checkpoint,
                          read_checkpoint, register_family)
from .dav2 import DepthAnythingV2DSFA, build_dav2_dsfa
from .dsfa import DSFABlock
from .unidepth import UniDepthV2DSFA, build_unidepthv2_dsfa  # also registers the UniDepthV2 file family

__all__ = ["build_dav2_dsfa", "load_dsfa_checkpoint", "build_from_checkpoint", "read_checkpoint",
           "detect_model", "register_family", "estimate_depth", "DepthAnythingV2DSFA",
           "DSFABlock", "CheckpointError", "build_unidepthv2_dsfa", "UniDepthV2DSFA"]

def estimate_depth(model, image: torch.Tensor, stack=None, k_values=None, input_size: int = 518,
                   device=None, dtype: Optional[torch.dtype] = None,
                   callback: Optional[Callable[[int, int], None]] = None, **kw) -> dict:
    """Depth for ``image`` ``[B,H,W,3]`` (0..1) with an optional bokeh ``stack``
    (``[B,N,H,W,3]`` or a BokehStack) and its raw ``k_values`` ``[B,N]`` / ``[N]``.

    Returns a dict: ``depth`` ``[B,H,W]`` float32 metres at the input size, and ``confidence``,
    ``intrinsics``, ``points`` (tensors for models that predict them, else None). Model-specific
    keywords (e.g. ``camera``) pass through to ``model.estimate``.
    """
    if not hasattr(model, "estimate"):
        raise ValueError(f"model must be a Stage-2 depth model (build_from_checkpoint), got {type(model).__name__}")
    return model.estimate(image, stack, k_values, input_size=input_size, device=device, dtype=dtype,
                          callback=callback, **kw)
