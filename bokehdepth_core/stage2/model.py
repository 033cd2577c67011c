"""The Stage-2 depth-model protocol: what Depth Anything V2 (+ DSFA) and UniDepthV2 + DSFA share.

A :class:`DepthModel` is a torch module with one checked entry point, :meth:`DepthModel.estimate`:
images (and a bokeh stack with its K values) in the core's conventions go in, a
:class:`~bokehdepth_core.types.DepthMap` comes out. The arguments are checked there, once; the
models behind it implement three small steps for trusted inputs:

* ``plan(batch, height, width, **options)``: validate the model's options and fix the network
  geometry for an image size (a dict; its ``"meta"`` entry goes into the DepthMap's meta);
* ``predict(plan, index, image, stack, k, device, dtype)``: one image ``[1,H,W,3]`` (+ stack
  ``[1,N,H,W,3]``, K ``[1,N]``) -> a dict of ``depth`` ``[1,H,W]`` and, where the model predicts
  them, ``confidence``, ``intrinsics``, ``points``; other tensors go into the meta;
* ``activation_bytes(plan, frames, dtype)``: the working memory of one image's forward with
  ``frames`` encoder frames (reference + stack), for a memory manager (formulas in ``memory``);
  the plan's ``"size"`` is the network input size.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
import torch.nn as nn

from ..types import DepthMap
from .inputs import check_inputs
from .memory import input_bytes

log = logging.getLogger("BokehDepth")

__all__ = ["DepthModel"]

FIELDS = ("depth", "confidence", "intrinsics", "points")


class DepthModel(nn.Module):
    """Base of every Stage-2 model. Subclasses set ``family``, ``OPTIONS`` (the estimate options
    they use; others given are ignored with a warning) and implement ``variant``, ``has_dsfa``,
    ``describe()``, ``plan``, ``predict`` and ``activation_bytes`` (see the module doc)."""

    family = ""
    OPTIONS: tuple[str, ...] = ()
    SILENT_OPTIONS: tuple[str, ...] = ()  # options other models use that this one ignores quietly

    @property
    def variant(self) -> str:
        raise NotImplementedError

    @property
    def has_dsfa(self) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def plan(self, batch: int, height: int, width: int, **options) -> dict:
        raise NotImplementedError

    def predict(self, plan: dict, index: int, image: torch.Tensor, stack: Optional[torch.Tensor],
                k: Optional[torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
        raise NotImplementedError

    def activation_bytes(self, plan: dict, frames: int, dtype: torch.dtype) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoint hooks
    def adapt_checkpoint(self, state_dict: dict, raw=None) -> dict:
        """The state dict to load from a file's raw object (default: as read)."""
        return state_dict

    def after_load(self, state_dict: dict) -> None:
        """Settings that follow from the loaded weights (default: none)."""

    # ------------------------------------------------------------------ shared
    def _options(self, input_size, camera, resolution_level, warn: bool = True) -> dict:
        given = {"input_size": input_size, "camera": camera, "resolution_level": resolution_level}
        for name, value in given.items():
            if warn and value is not None and name not in self.OPTIONS and name not in self.SILENT_OPTIONS:
                log.warning("%s is not used by %s: ignored", name, self.describe())
        return {name: given[name] for name in self.OPTIONS}

    def place(self, device=None, dtype: Optional[torch.dtype] = None) -> tuple[torch.device, torch.dtype]:
        """Move to ``device``/``dtype`` (default: where the weights are; fp32 on CPU), eval mode."""
        p = next(self.parameters())
        device = torch.device(device) if device is not None else p.device
        dtype = dtype or (p.dtype if device.type != "cpu" else torch.float32)
        if p.device != device or p.dtype != dtype:
            self.to(device=device, dtype=dtype)
        self.eval()
        return device, dtype

    def memory_required(self, height: int, width: int, frames: int = 0, dtype: Optional[torch.dtype] = None,
                        input_size: Optional[int] = 518, resolution_level: Optional[int] = None) -> int:
        """Bytes of working memory (weights not included) that :meth:`estimate` needs for one
        ``height x width`` image with ``frames`` bokeh-stack frames, in ``dtype`` (default: the
        weights' dtype). Images of a batch run one after another, so this holds for any batch."""
        dtype = dtype or next(self.parameters()).dtype
        plan = self.plan(1, int(height), int(width), **self._options(input_size, None, resolution_level, warn=False))
        encoder_frames = 1 + (int(frames) if self.has_dsfa else 0)
        return input_bytes(encoder_frames, (int(height), int(width)), plan["size"]) + int(
            self.activation_bytes(plan, encoder_frames, dtype))

    @torch.no_grad()
    def estimate(self, image: torch.Tensor, stack=None, k_values=None, input_size: Optional[int] = 518,
                 device=None, dtype: Optional[torch.dtype] = None,
                 callback: Optional[Callable[[int, int], None]] = None, *,
                 camera=None, resolution_level: Optional[int] = None) -> DepthMap:
        """Depth of ``image`` ``[B,H,W,3]`` (0..1), fused with a bokeh ``stack`` (``[B,N,H,W,3]``,
        ``[N,H,W,3]`` or a BokehStack) and its raw ``k_values`` (``[B,N]`` or ``[N]``) by models
        with DSFA weights (others ignore the stack with a warning).

        ``input_size``: Depth Anything V2's short side (multiple of 14). ``camera`` and
        ``resolution_level``: UniDepthV2's camera (None = predicted, ``[B,3,3]`` pixels, or
        ``"authors_guess"``) and pixel budget 0..9. ``device``/``dtype``: where to run (default:
        where the weights are; fp32 on CPU). ``callback(done, total)`` after each image.

        Returns a DepthMap at the image size on the image's device: ``depth`` float32 (metres for
        metric models), ``confidence``/``intrinsics``/``points`` where the model predicts them, and
        ``meta`` (``model``, ``relative``, ``used_stack``, ``network_size``, model-specific entries).
        """
        image, stack, k = check_inputs(image, stack, k_values)
        if stack is not None and not self.has_dsfa:
            log.warning("this %s model has no DSFA weights: the bokeh stack is ignored", self.family)
            stack, k = None, None
        b, h, w, _ = image.shape
        plan = self.plan(b, h, w, **self._options(input_size, camera, resolution_level))
        device, dtype = self.place(device, dtype)
        parts = []
        for i in range(b):
            one = self.predict(plan, i, image[i:i + 1], None if stack is None else stack[i:i + 1],
                               None if k is None else k[i:i + 1], device, dtype)
            parts.append({name: t.to(image.device) for name, t in one.items()})
            if callback is not None:
                callback(i + 1, b)
        joined = {name: torch.cat([p[name] for p in parts], 0) for name in parts[0]}
        meta = {"model": self.describe(), "used_stack": stack is not None, **plan.get("meta", {})}
        meta.update({name: t for name, t in joined.items() if name not in FIELDS})
        return DepthMap(meta=meta, **{name: joined.get(name) for name in FIELDS})
