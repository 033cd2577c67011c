"""Input checks and pre/post-processing shared by the Stage-2 depth models.

Core conventions: image ``[B,H,W,3]`` in 0..1, stack ``[B,N,H,W,3]``, K ``[B,N]`` raw (px*m).
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..types import BokehStack

log = logging.getLogger("BokehDepth")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["validate_inputs", "stack_from_images", "model_inputs", "network_stack", "lower_bound_size",
           "to_network", "normalize_imagenet", "place_model", "IMAGENET_MEAN", "IMAGENET_STD"]


def _check_image(name: str, t, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor {layout}, got {type(t).__name__}")
    if t.ndim != ndim or t.shape[-1] != 3:
        raise ValueError(f"{name} must be {layout} (RGB last), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values; clean the image (e.g. clamp to 0..1) first")
    return t


def validate_inputs(image, stack=None, k_values=None):
    """Check and normalise the arguments of ``estimate_depth``.

    ``stack`` may be a :class:`BokehStack` (its K values are used unless ``k_values`` is given),
    a tensor ``[B,N,H,W,3]`` or ``[N,H,W,3]`` (same stack for every image), or None.
    Returns ``(image [B,H,W,3], stack [B,N,H,W,3] or None, k [B,N] or None)``; stack frames of
    another size than the image are resized to it with a warning.
    """
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        image = image.unsqueeze(0)
    image = _check_image("image", image, 4, "[B,H,W,3]")
    b, h, w, _ = image.shape
    if isinstance(stack, BokehStack):
        if k_values is None:
            k_values = stack.k_values
        stack = stack.frames
    if stack is None:
        if k_values is not None and torch.as_tensor(k_values).numel() > 0:
            log.warning("k_values given without a stack: ignored (single-image depth)")
        return image, None, None
    if isinstance(stack, torch.Tensor) and stack.ndim == 4:
        stack = stack.unsqueeze(0).expand(b, *stack.shape)
    stack = _check_image("stack", stack, 5, "[B,N,H,W,3]")
    if stack.shape[0] != b:
        if stack.shape[0] == 1:
            stack = stack.expand(b, *stack.shape[1:])
        else:
            raise ValueError(f"stack has batch {stack.shape[0]} but image has batch {b}; give one stack per image")
    n = stack.shape[1]
    if n == 0:
        return image, None, None
    if k_values is None:
        raise ValueError(f"stack has {n} frames but no k_values were given: pass one K per frame")
    if isinstance(k_values, str):
        raise ValueError("k_values must be numbers (parse a K list string with optics.parse_k_list first)")
    k = torch.as_tensor(k_values, dtype=torch.float32).cpu()
    if k.ndim == 3 and k.shape[-1] == 1:
        k = k[..., 0]
    if k.ndim == 1:
        k = k.unsqueeze(0)
    if k.shape[0] == 1 and b > 1:
        k = k.expand(b, -1)
    if k.ndim != 2 or k.shape[1] != n or k.shape[0] != b:
        raise ValueError(f"k_values must give one K per stack frame: stack has N={n} frames (batch {b}), "
                         f"got k_values of shape {tuple(k.shape)}")
    if not torch.isfinite(k).all():
        raise ValueError("k_values contains NaN or infinite values")
    if tuple(stack.shape[2:4]) != (h, w):
        log.warning("stack frames are %dx%d but the image is %dx%d: resizing the stack to the image size",
                    stack.shape[3], stack.shape[2], w, h)
        flat = stack.reshape(b * n, *stack.shape[2:]).permute(0, 3, 1, 2)
        flat = F.interpolate(flat, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
        stack = flat.permute(0, 2, 3, 1).reshape(b, n, h, w, 3)
    return image, stack, k.contiguous()


def stack_from_images(frames: torch.Tensor, k_list, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stack given as an IMAGE batch ``[N,H,W,3]`` (same N frames for every image) or
    ``[B*N,H,W,3]`` (image order) with one K per frame -> (stack ``[B,N,H,W,3]``, K ``[B,N]``)."""
    if k_list is None:
        raise ValueError("stack_images needs k_list: connect a K list with one K per stack frame")
    k = torch.as_tensor([float(v) for v in k_list], dtype=torch.float32)
    n = len(k)
    if n == 0:
        raise ValueError("k_list is empty: give one K per stack frame")
    if frames.shape[0] == n:
        stack = frames.unsqueeze(0).expand(batch, *frames.shape)
    elif frames.shape[0] == batch * n:
        stack = frames.reshape(batch, n, *frames.shape[1:])
    else:
        raise ValueError(f"stack_images has {frames.shape[0]} frames but k_list has {n} K values "
                         f"(for {batch} image(s)): give one K per frame")
    return stack, k.unsqueeze(0).expand(batch, n)


def model_inputs(model, image, stack=None, k_values=None):
    """:func:`validate_inputs` for ``model.estimate``; a stack is dropped with a warning when the
    model has no DSFA weights to fuse it."""
    image, stack, k = validate_inputs(image, stack, k_values)
    if stack is not None and not model.has_dsfa:
        log.warning("this %s model has no DSFA weights: the bokeh stack is ignored", model.family)
        stack, k = None, None
    return image, stack, k


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


def _multiple(x: float, m: int, min_val: int) -> int:
    y = int(round(x / m) * m)  # round-half-even, as numpy in the reference transform
    if y < min_val:
        y = int(math.ceil(x / m) * m)
    return y


def lower_bound_size(h: int, w: int, input_size: int = 518, multiple: int = 14) -> tuple[int, int]:
    """Keep-aspect size whose short side is at least ``input_size``, sides multiples of 14
    (Depth Anything V2's 'lower_bound' resize)."""
    if input_size < multiple:
        raise ValueError(f"input_size must be at least {multiple}, got {input_size}")
    scale = max(input_size / h, input_size / w)
    return _multiple(scale * h, multiple, input_size), _multiple(scale * w, multiple, input_size)


def to_network(images: torch.Tensor, size: tuple[int, int], device=None, dtype=None) -> torch.Tensor:
    """``[..., H, W, 3]`` 0..1 -> bicubic-resized, ImageNet-normalised ``[..., 3, h, w]``."""
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)
    return normalize_imagenet(x).to(dtype or torch.float32).reshape(*lead, 3, *size)


def normalize_imagenet(x: torch.Tensor) -> torch.Tensor:
    """``[N,3,H,W]`` 0..1 -> ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def place_model(model: torch.nn.Module, device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """Move ``model`` to ``device``/``dtype`` (default: where it is; fp32 on CPU) and set eval mode."""
    p = next(model.parameters())
    device = torch.device(device) if device is not None else p.device
    dtype = dtype or (p.dtype if device.type != "cpu" else torch.float32)
    if p.device != device or p.dtype != dtype:
        model.to(device=device, dtype=dtype)
    model.eval()
    return device, dtype
