"""What enters the Stage-2 models: images, bokeh stacks and K values in the core's conventions
(checked once, here), the network tensors of a forward, and ImageNet normalisation.

Core conventions: image ``[B,H,W,3]`` in 0..1, stack ``[B,N,H,W,3]``, K ``[B,N]`` raw (px*m).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F

from .. import checks
from ..optics import K_CONDITION_RANGE
from ..types import BokehStack

log = logging.getLogger("BokehDepth")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["check_inputs", "warn_untrained_k", "stack_from_images", "network_stack", "normalize_imagenet", "IMAGENET_MEAN",
           "IMAGENET_STD"]


def _check_stack(stack, batch: int) -> torch.Tensor:
    if isinstance(stack, torch.Tensor) and stack.ndim == 4:
        stack = stack.unsqueeze(0).expand(batch, *stack.shape)  # the same frames for every image
    if not isinstance(stack, torch.Tensor) or stack.ndim != 5:
        got = tuple(stack.shape) if isinstance(stack, torch.Tensor) else type(stack).__name__
        raise ValueError(f"stack must be [B,N,H,W,3] (RGB last), a [N,H,W,3] stack shared by every image "
                         f"or a BokehStack, got {got}")
    b, n = stack.shape[:2]
    if n:
        stack = checks.image_batch(stack.reshape(b * n, *stack.shape[2:]), "stack").reshape(stack.shape)
    if b != batch:
        if b != 1:
            raise ValueError(f"stack has batch {b} but image has batch {batch}; give one stack per image")
        stack = stack.expand(batch, *stack.shape[1:])
    return stack


def warn_untrained_k(k: Optional[torch.Tensor]) -> None:
    """Log K values outside the range the models were trained on (they still run)."""
    lo, hi = K_CONDITION_RANGE
    outside = [] if k is None else sorted({float(v) for v in k.flatten().tolist() if not lo <= v <= hi})
    if outside:
        log.warning("K values %s are outside the range the depth models were trained on (%g..%g, the Stage-1 "
                    "adapter's range): the bokeh stack may guide the depth less reliably", outside, lo, hi)


def _check_k(k_values, batch: int, n: int) -> torch.Tensor:
    if k_values is None:
        raise ValueError(f"stack has {n} frames but no k_values were given: pass one K per frame")
    if not isinstance(k_values, (torch.Tensor, str)):
        try:  # nested lists ([B,N]) -> one tensor; anything else is named by the check below
            k_values = torch.as_tensor(k_values, dtype=torch.float32)
        except (TypeError, ValueError):
            pass
    checks.model_k_values(k_values, "k_values")
    k = torch.as_tensor(k_values, dtype=torch.float32).cpu()
    if k.ndim == 3 and k.shape[-1] == 1:
        k = k[..., 0]
    if k.ndim == 1:
        k = k.unsqueeze(0)
    if k.ndim == 2 and k.shape[0] == 1 and batch > 1:
        k = k.expand(batch, -1)
    if k.ndim != 2 or k.shape != (batch, n):
        raise ValueError(f"k_values must give one K per stack frame: stack has N={n} frames (batch {batch}), "
                         f"got k_values of shape {tuple(k.shape)}")
    return k.contiguous()


def check_inputs(image, stack=None, k_values=None):
    """Check the arguments of an estimate and bring them to ``(image [B,H,W,3] float32,
    stack [B,N,H,W,3] or None, k [B,N] or None)``.

    ``stack`` may be a :class:`BokehStack` (its K values are used unless ``k_values`` is given), a
    tensor ``[B,N,H,W,3]`` or ``[N,H,W,3]`` (the same stack for every image), or None. Stack frames
    of another size than the image are resized to it with a warning.
    """
    image = checks.image_batch(image, "image")
    b, h, w, _ = image.shape
    if isinstance(stack, BokehStack):
        k_values = stack.k_values if k_values is None else k_values
        stack = stack.frames
    if stack is None:
        if k_values is not None and torch.as_tensor(k_values).numel() > 0:
            log.warning("k_values given without a stack: ignored (single-image depth)")
        return image, None, None
    stack = _check_stack(stack, b)
    n = stack.shape[1]
    if n == 0:
        return image, None, None
    k = _check_k(k_values, b, n)
    if tuple(stack.shape[2:4]) != (h, w):
        log.warning("stack frames are %dx%d but the image is %dx%d: resizing the stack to the image size",
                    stack.shape[3], stack.shape[2], w, h)
        flat = stack.reshape(b * n, *stack.shape[2:]).permute(0, 3, 1, 2)
        flat = F.interpolate(flat, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        stack = flat.permute(0, 2, 3, 1).reshape(b, n, h, w, 3)
    return image, stack, k


def stack_from_images(frames: torch.Tensor, k_list, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stack given as an IMAGE batch ``[N,H,W,3]`` (same N frames for every image) or
    ``[B*N,H,W,3]`` (image order) with one K per frame -> (stack ``[B,N,H,W,3]``, K ``[B,N]``)."""
    if k_list is None:
        raise ValueError("stack_images needs k_list: connect a K list with one K per stack frame")
    frames = checks.image_batch(frames, "stack_images")
    k = torch.as_tensor(checks.model_k_values(k_list, "k_list"), dtype=torch.float32)
    n = len(k)
    if frames.shape[0] == n:
        stack = frames.unsqueeze(0).expand(batch, *frames.shape)
    elif frames.shape[0] == batch * n:
        stack = frames.reshape(batch, n, *frames.shape[1:])
    else:
        raise ValueError(f"stack_images has {frames.shape[0]} frames but k_list has {n} K values "
                         f"(for {batch} image(s)): give one K per frame")
    return stack, k.unsqueeze(0).expand(batch, n)


def network_stack(x: torch.Tensor, focus_stack: Optional[torch.Tensor], k_stack):
    """Check a model forward's stack against ``x`` ``[B,3,H,W]``: (focus_stack ``[B,N,3,H,W]``,
    K ``[B,N]`` on x's device) or (None, None) when there is no stack."""
    if focus_stack is None or focus_stack.shape[1] == 0:
        return None, None
    b, _, h, w = x.shape
    if focus_stack.ndim != 5 or focus_stack.shape[0] != b or tuple(focus_stack.shape[2:]) != (3, h, w):
        raise ValueError(f"focus_stack must be [B,N,3,H,W] = [{b},N,3,{h},{w}], got {tuple(focus_stack.shape)}")
    n = focus_stack.shape[1]
    if k_stack is None:
        raise ValueError("focus_stack given without k_stack: pass one raw K per frame")
    k_stack = torch.as_tensor(k_stack, device=x.device)
    if k_stack.numel() != b * n:
        raise ValueError(f"k_stack must be [B,N] or [B,N,1] = [{b},{n}], got {tuple(k_stack.shape)}")
    return focus_stack, k_stack.reshape(b, n)


def normalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    """``[N,3,H,W]`` 0..1 -> ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
