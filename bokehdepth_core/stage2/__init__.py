"""Stage-2: metric depth from an image and its bokeh stack (DSFA-fused ViT depth models).

Every model is a :class:`DepthModel` (Depth Anything V2 with or without DSFA, UniDepthV2 + DSFA);
:func:`estimate_depth` returns a :class:`~bokehdepth_core.types.DepthMap`.

Public API: ``build_dav2_dsfa``, ``build_unidepthv2_dsfa``, ``load_dsfa_checkpoint``,
``build_from_checkpoint``, ``read_checkpoint``, ``detect_model``, ``estimate_depth``, ``DepthModel``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ..types import DepthMap
from .checkpoints import CheckpointError, build_from_checkpoint, detect_model, load_dsfa_checkpoint, read_checkpoint
from .dav2 import DepthAnythingV2DSFA, build_dav2_dsfa
from .dsfa import DSFABlock
from .model import DepthModel
from .unidepth import UniDepthV2DSFA, build_unidepthv2_dsfa

__all__ = ["build_dav2_dsfa", "load_dsfa_checkpoint", "build_from_checkpoint", "read_checkpoint",
           "detect_model", "estimate_depth", "DepthModel", "DepthAnythingV2DSFA", "DSFABlock", "CheckpointError",
           "build_unidepthv2_dsfa", "UniDepthV2DSFA"]


def estimate_depth(model: DepthModel, image: torch.Tensor, stack=None, k_values=None, input_size: Optional[int] = 518,
                   device=None, dtype: Optional[torch.dtype] = None,
                   callback: Optional[Callable[[int, int], None]] = None, *, camera=None,
                   resolution_level: Optional[int] = None) -> DepthMap:
    """Metric depth of ``image`` ``[B,H,W,3]`` (0..1), fused with a bokeh ``stack``
    (``[B,N,H,W,3]`` or a BokehStack) and its raw ``k_values`` (``[B,N]`` / ``[N]``).

    Returns a :class:`~bokehdepth_core.types.DepthMap`: ``depth`` ``[B,H,W]`` float32 metres at the
    image size, ``confidence``/``intrinsics``/``points`` for models that predict them (UniDepthV2),
    and ``meta``. See :meth:`DepthModel.estimate` for the options.
    """
    if not isinstance(model, DepthModel):
        raise ValueError(f"model must be a Stage-2 depth model (build_from_checkpoint), got {type(model).__name__}")
    return model.estimate(image, stack, k_values, input_size, device, dtype, callback, camera=camera,
                          resolution_level=resolution_level)
