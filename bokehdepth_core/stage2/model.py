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
  the plan's ``"size"`` is the network input size;
* ``progress_modules()``: the blocks whose start counts as progress (and where Cancel is honoured).

Budget: attention time grows with the square of the tokens per frame, so a plan is refused before
anything runs when the image is more elongated than ``MAX_ASPECT``:1, a frame would have more than
``MAX_FRAME_TOKENS`` patch tokens, or one forward (image + stack frames) more than
``MAX_FORWARD_TOKENS``. The models' defaults stay far below (Depth Anything V2 at 518: 1,369 tokens
for a square image; UniDepthV2's release pixel budget: at most about 3,100).
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import torch
import torch.nn as nn

from ..types import DepthMap
from .inputs import check_inputs, warn_untrained_k
from .memory import input_bytes

log = logging.getLogger("BokehDepth")

__all__ = ["DepthModel"]

FIELDS = ("depth", "confidence", "intrinsics", "points")
MAX_ASPECT = 8.0  # long side / short side of the image
MAX_FRAME_TOKENS = 16384  # patch tokens per frame: a 128 x 128 patch grid (1792 x 1792 px network input)
MAX_FORWARD_TOKENS = 65536  # all frames of one image's forward: the image + 3 frames at the per-frame cap
NON_FINITE_FIX = ("in fp16 the network can overflow: load the model as fp32 or bf16; otherwise its weights or the "
                  "input are damaged: load the model file again")


class BlockProgress:
    """``callback(done, total)`` counted in network blocks. Within a ``with``, a forward pre-hook on
    each module of ``modules`` reports progress (removed on leaving, also on error), so a callback
    that raises (ComfyUI's Cancel) stops a long forward between blocks, not only between images."""

    def __init__(self, callback: Optional[Callable[[int, int], None]], modules, images: int):
        self.callback = callback
        self.modules = list(modules) if callback is not None else []
        self.per_image = max(1, len(self.modules))
        self.total = images * self.per_image
        self.images_done = 0
        self._handles = []

    def __enter__(self) -> "BlockProgress":
        try:
            for j, module in enumerate(self.modules):
                self._handles.append(module.register_forward_pre_hook(functools.partial(self._tick, j)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _tick(self, block: int, _module, _args) -> None:
        self.callback(self.images_done * self.per_image + block, self.total)

    def image_done(self) -> None:
        self.images_done += 1
        if self.callback is not None:
            self.callback(self.images_done * self.per_image, self.total)


class DepthModel(nn.Module):
    """Base of every Stage-2 model. Subclasses set ``family``, ``OPTIONS`` (the estimate options
    they use; others given are ignored with a warning) and implement ``variant``, ``has_dsfa``,
    ``describe()``, ``plan``, ``predict`` and ``activation_bytes`` (see the module doc)."""

    family = ""
    OPTIONS: tuple[str, ...] = ()
    SILENT_OPTIONS: tuple[str, ...] = ()  # options other models use that this one ignores quietly
    SIZE_FIX = "crop the image"  # how a user brings a network input within the budget
    patch_size = 14

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

    def progress_modules(self) -> list[nn.Module]:
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
        encoder_frames = 1 + (int(frames) if self.has_dsfa else 0)
        plan = self.planned(1, int(height), int(width), encoder_frames,
                            self._options(input_size, None, resolution_level, warn=False))
        return input_bytes(encoder_frames, (int(height), int(width)), plan["size"]) + int(
            self.activation_bytes(plan, encoder_frames, dtype))

    def planned(self, batch: int, height: int, width: int, frames: int, options: dict) -> dict:
        """``plan`` for a ``height x width`` image with ``frames`` encoder frames, refused (naming the
        input and the fix) beyond the budget in the module doc."""
        long, short = max(height, width), min(height, width)
        if long > MAX_ASPECT * short:
            raise ValueError(f"image is {width}x{height} px, an aspect ratio of {long / short:.3g}:1; Stage-2 takes at "
                             f"most {MAX_ASPECT:g}:1 (the depth models were trained on ordinary photos): crop it, or "
                             f"split it into parts of at most {MAX_ASPECT:g}:1")
        plan = self.plan(batch, height, width, **options)
        (h, w), p = plan["size"], self.patch_size
        tokens = (h // p) * (w // p)
        setting = ", ".join(f"{k} {v}" for k, v in options.items() if k != "camera" and v is not None) or "defaults"
        if tokens > MAX_FRAME_TOKENS:
            raise ValueError(f"image {width}x{height} px gives a {w}x{h} px network input ({setting}): {w // p}x{h // p} "
                             f"patches = {tokens:,} tokens per frame, more than the {MAX_FRAME_TOKENS:,} allowed "
                             f"(attention time grows with the square of it): {self.SIZE_FIX}")
        if frames * tokens > MAX_FORWARD_TOKENS:
            raise ValueError(f"{frames} frames (the image and {frames - 1} stack frames) x {tokens:,} tokens = "
                             f"{frames * tokens:,} tokens in one forward, more than the {MAX_FORWARD_TOKENS:,} allowed: "
                             f"use fewer stack frames (the paper uses 3), or {self.SIZE_FIX}")
        return plan

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
        where the weights are; fp32 on CPU). ``callback(done, total)``: progress counted in network
        blocks (``done`` reaches a multiple of ``total / B`` after each image); raising from it
        stops the forward at the next block. Sizes beyond the budget (module doc) and non-finite
        results raise ValueError.

        Returns a DepthMap at the image size on the image's device: ``depth`` float32 (metres for
        metric models), ``confidence``/``intrinsics``/``points`` where the model predicts them, and
        ``meta`` (``model``, ``relative``, ``used_stack``, ``network_size``, model-specific entries).
        """
        image, stack, k = check_inputs(image, stack, k_values)
        if stack is not None and not self.has_dsfa:
            log.warning("this %s model has no DSFA weights: the bokeh stack is ignored", self.family)
            stack, k = None, None
        warn_untrained_k(k)
        b, h, w, _ = image.shape
        frames = 1 + (0 if stack is None else stack.shape[1])
        plan = self.planned(b, h, w, frames, self._options(input_size, camera, resolution_level))
        device, dtype = self.place(device, dtype)
        parts = []
        with BlockProgress(callback, self.progress_modules(), b) as progress:
            for i in range(b):
                one = self.predict(plan, i, image[i:i + 1], None if stack is None else stack[i:i + 1],
                                   None if k is None else k[i:i + 1], device, dtype)
                self._check_finite(one, i)
                parts.append({name: t.to(image.device) for name, t in one.items()})
                progress.image_done()
        joined = {name: torch.cat([p[name] for p in parts], 0) for name in parts[0]}
        meta = {"model": self.describe(), "used_stack": stack is not None, **plan.get("meta", {})}
        meta.update({name: t for name, t in joined.items() if name not in FIELDS})
        return DepthMap(meta=meta, **{name: joined.get(name) for name in FIELDS})

    def _check_finite(self, outputs: dict, index: int) -> None:
        for name in FIELDS:
            t = outputs.get(name)
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{self.describe()} computed NaN or infinite {name} for image {index} of the batch: "
                                 f"{NON_FINITE_FIX}")
