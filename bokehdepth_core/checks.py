"""Checks for data entering the core: images, stacks, depth maps, K values, plain numbers.

Every public entry point of the core validates its arguments here, once, and the engines behind it
trust what they get. Messages name the argument, what was expected, what came, and the fix.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Union

import torch
import torch.nn.functional as F

Number = Union[int, float]

PIXEL_SLACK = 0.5  # resampling overshoot that images may carry beyond 0..1 (users of them clamp)
MAX_K_VALUES = 256  # frames of one stack
MAX_VALUES = 1 << 28  # the largest array a file may declare: 268 M values (1 GiB as float32)
# The models (Stage-1 adapter, Stage-2 DSFA) were trained on K in 1..30 for 512-px-wide pictures;
# far beyond that a K is a full-size photo's K or a typo, and in the depth models' K embedding it
# can overflow to NaN.
MODEL_K_MAX = 1000.0


def number(name: str, value, allowed: str = "> 0", *, minimum: float = 0.0, inclusive: bool = False,
           maximum: float = math.inf) -> float:
    """A finite float above ``minimum`` (or equal to it when ``inclusive``), at most ``maximum``."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number {allowed}, got {value!r}") from None
    if not math.isfinite(v) or v < minimum or (v == minimum and not inclusive) or v > maximum:
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return v


def integer(name: str, value, minimum: int, maximum: int) -> int:
    """A whole number in ``minimum..maximum``."""
    v = number(name, value, f"from {minimum} to {maximum}", minimum=-math.inf)
    if v != int(v) or not minimum <= v <= maximum:
        raise ValueError(f"{name} must be a whole number from {minimum} to {maximum}, got {value!r}")
    return int(v)


def aperture_blades(blades) -> int:
    """0 (a round aperture) or the blade count of a polygonal one, 3..32."""
    n = integer("blades", blades, 0, 32)
    if n in (1, 2):
        raise ValueError(f"blades must be 0 (round) or 3..32, got {blades}")
    return n


def declared_size(name: str, shape, limit: int = MAX_VALUES, unit: str = "values") -> int:
    """The number of values a file declares (``shape``), refused before anything is read or
    allocated when it exceeds ``limit``; ``name`` is the file."""
    n = math.prod(int(s) for s in shape)
    if n > limit:
        dims = " x ".join(str(int(s)) for s in shape)
        raise ValueError(f"{name}: declares {dims} = {n:,} {unit}, too large to load (at most {limit:,}); "
                         "downscale or crop it, or split a batch into several files")
    return n


def per_item(name: str, value, batch: int, device=None, *, positive: bool = False,
             allow_negative: bool = True) -> torch.Tensor:
    """One number or one per batch item -> finite float32 ``[batch]``."""
    t = _numbers(name, value, device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"{name} must be one number or one per batch item ({batch}), got {t.numel()} values")
    return _signed(name, t, positive, allow_negative).contiguous()


def per_item_rows(name: str, values, batch: int, device=None, *, positive: bool = False,
                  allow_negative: bool = True) -> torch.Tensor:
    """A list of numbers shared by the batch, or one row per batch item -> finite float32 ``[batch, N]``."""
    t = _numbers(name, values, device)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[0] not in (1, batch) or t.shape[1] == 0:
        raise ValueError(f"{name} must be a list of numbers or one list per batch item ([{batch},N]), "
                         f"got shape {tuple(t.shape)}")
    return _signed(name, t.expand(batch, -1), positive, allow_negative)


def _numbers(name: str, value, device=None) -> torch.Tensor:
    """``value`` (a number, a list of them or a tensor) as float32, or a ValueError naming ``name``."""
    if isinstance(value, str) or value is None:
        raise ValueError(f"{name} must be a number or a list of numbers, got {value!r}")
    try:
        return torch.as_tensor(value, dtype=torch.float32, device=device)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise ValueError(f"{name} must be a number or a list of numbers, got {type(value).__name__}") from None


def _signed(name: str, t: torch.Tensor, positive: bool, allow_negative: bool) -> torch.Tensor:
    """``t`` when all its values are finite (and > 0 or >= 0 as asked); the error lists a few values,
    or counts the offending pixels of a map."""
    rules = [("finite (no NaN or inf)", ~torch.isfinite(t))]
    if positive:
        rules.append(("> 0", t <= 0))
    if not allow_negative:
        rules.append(("non-negative (>= 0)", t < 0))
    for rule, bad in rules:
        if bool(bad.any()):
            got = f"got {t.tolist()}" if t.numel() <= 16 else f"{int(bad.sum())} of {t.numel()} values are not"
            raise ValueError(f"{name} must be {rule}, {got}")
    return t


def k_values(values: Union[Number, Iterable[Number], torch.Tensor, None], name: str = "k_values") -> list[float]:
    """Raw K values (px*m): a non-empty list of finite numbers > 0."""
    if values is None:
        raise ValueError(f"{name}: no K values; give at least one, e.g. '10, 20, 30' (a Bokeh K List node)")
    if isinstance(values, str):
        raise ValueError(f"{name} must be numbers, got the text {values!r}; parse it with optics.parse_k_list")
    if isinstance(values, torch.Tensor):
        values = values.detach().flatten().tolist()
    elif isinstance(values, (int, float)):
        values = [values]
    try:
        ks = [float(k) for k in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of numbers, got {values!r}") from None
    if not ks:
        raise ValueError(f"{name} is empty; give at least one K, e.g. '10, 20, 30' (a Bokeh K List node)")
    if len(ks) > MAX_K_VALUES:
        raise ValueError(f"{name} has {len(ks)} values; a stack takes at most {MAX_K_VALUES} (one frame each)")
    bad = [k for k in ks if not math.isfinite(k) or k <= 0]
    if bad:
        raise ValueError(f"{name} must be finite numbers > 0 (K is a blur strength in px*m), got {bad}")
    return ks


def model_k_values(values, name: str = "k_values") -> list[float]:
    """K values for the Stage-1 and Stage-2 models: :func:`k_values`, each at most ``MODEL_K_MAX``."""
    ks = k_values(values, name)
    absurd = [k for k in ks if k > MODEL_K_MAX]
    if absurd:
        raise ValueError(f"{name}: K {absurd} is far beyond what the BokehDepth models take (trained on 1..30 px*m "
                         f"for a 512-px-wide picture; at most {MODEL_K_MAX:g} is accepted). Give the K of a 512-px-wide "
                         "picture (the K_512 output of the K nodes), not the K of a full-size photo")
    return ks


def k_table(values, batch: int, frames: Optional[int] = None, name: str = "k_values", device=None) -> torch.Tensor:
    """K values per batch item ``[batch, N]``: one list shared by the batch, or one row per item;
    with ``frames``, exactly one K per frame."""
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], (list, tuple)):
        values = torch.tensor(values, dtype=torch.float32)  # one row per batch item
    k_values(values, name)
    table = per_item_rows(name, values, batch, device)
    if frames is not None and table.shape[1] != frames:
        raise ValueError(f"{name} must have one K per frame ({frames}), got {table.shape[1]} values")
    return table


def _tensor(name: str, t, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor {layout}, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    return t


def pixels(name: str, t: torch.Tensor) -> torch.Tensor:
    """Colour values as float32 in 0..1: uint8 is divided by 255 (said, not guessed); other integer or
    boolean types, non-finite values and values far outside 0..1 (e.g. 0..255 floats) are refused."""
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    if not t.is_floating_point():
        raise ValueError(f"{name} has {str(t.dtype).replace('torch.', '')} values; give float RGB in 0..1 "
                         "(or uint8 0..255)")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values; clean the image (e.g. clamp to 0..1) first")
    lo, hi = float(t.amin()), float(t.amax())
    if lo < -PIXEL_SLACK or hi > 1 + PIXEL_SLACK:
        raise ValueError(f"{name} values run from {lo:.4g} to {hi:.4g}, but images are 0..1 (ComfyUI's IMAGE); "
                         + ("divide 0..255 values by 255" if hi > 2 else "clamp them to 0..1") + " first")
    return t


def image_batch(image, name: str = "image") -> torch.Tensor:
    """An RGB image batch ``[B,H,W,3]`` (or one image ``[H,W,3]``) as float32 in 0..1 (:func:`pixels`)."""
    layout = "[B,H,W,3] (RGB, channels last, 0..1)"
    image = _tensor(name, image, layout)
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(image.shape)}")
    return pixels(name, image)


def depth_batch(depth, name: str = "depth") -> torch.Tensor:
    """A depth-like map as float32 ``[B,H,W]`` (accepts ``[H,W]``, ``[B,H,W,1]`` or a DepthMap)."""
    from .types import DepthMap

    if isinstance(depth, DepthMap):
        depth = depth.depth
    if not isinstance(depth, torch.Tensor):
        try:
            depth = torch.as_tensor(depth)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a depth map [B,H,W] (a DepthMap or a tensor), "
                             f"got {type(depth).__name__}") from None
    depth = _tensor(name, depth, "[B,H,W]")
    if depth.is_complex():
        raise ValueError(f"{name} has complex values; give real numbers")
    if depth.ndim == 2:
        depth = depth.unsqueeze(0)
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 3:
        raise ValueError(f"{name} must be [B,H,W] or [H,W], got shape {tuple(depth.shape)}")
    return depth.float()


def map_like(values, like: torch.Tensor, name: str, *, resize: bool = False, positive: bool = False,
             allow_negative: bool = True) -> torch.Tensor:
    """A per-pixel map (depth, disparity, confidence, mask) for ``like`` (``[B,H,W]`` or an image
    ``[B,H,W,3]``): finite float32 ``[B,H,W]`` on ``like``'s device, one map for the whole batch or
    one per item; of ``like``'s size, or resized to it (bilinear) with ``resize``."""
    m = depth_batch(values, name)
    b, h, w = like.shape[:3]
    if m.shape[0] not in (1, b):
        raise ValueError(f"{name} batch {m.shape[0]} does not match image batch {b}: give one {name} or one per image")
    m = _signed(name, m, positive, allow_negative).to(like.device)
    if tuple(m.shape[1:]) != (h, w):
        if not resize:
            raise ValueError(f"{name} is {tuple(m.shape[1:])} (H,W) but the image is {(h, w)}: "
                             "resize the depth map to the image size")
        m = F.interpolate(m.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return m.expand(b, -1, -1)


def stack_frames(frames, reference, name: str = "frames", min_frames: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of one scene ``[B,N,H,W,3]`` (or a list of N ``[B,H,W,3]`` images) and their sharp
    ``reference`` ``[B,H,W,3]``, checked against each other: ``(reference, frames)`` of one batch
    size (a single reference is shared), float32, on the reference's device."""
    reference = image_batch(reference, "reference")
    b, h, w, _ = reference.shape
    if isinstance(frames, (list, tuple)):
        if len(frames) < min_frames:
            raise ValueError(f"{name}: at least {min_frames} frames are needed, got {len(frames)}")
        items = []
        for i, f in enumerate(frames):
            f = image_batch(f, f"{name}[{i}]")
            _same_size(f"{name}[{i}]", f, (h, w))
            items.append(f.expand(b, -1, -1, -1))
        frames = torch.stack(items, 1)
    frames = _tensor(name, frames, "[B,N,H,W,3] or a list of [B,H,W,3] images")
    if frames.ndim == 4:
        frames = frames.unsqueeze(0)
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must be [B,N,H,W,3], got {tuple(frames.shape)}")
    if frames.shape[1] < min_frames:
        raise ValueError(f"{name}: at least {min_frames} frames are needed (N >= {min_frames}), got N={frames.shape[1]}")
    _same_size(name, frames, (h, w))
    if frames.shape[0] != b:
        if b != 1:
            raise ValueError(f"{name} batch {frames.shape[0]} does not match reference batch {b}")
        reference = reference.expand(frames.shape[0], -1, -1, -1)
    return reference, pixels(name, frames).to(reference.device)


def _same_size(name: str, t: torch.Tensor, size: tuple[int, int]) -> None:
    if tuple(t.shape[-3:-1]) != tuple(size):
        raise ValueError(f"{name} is {tuple(t.shape[-3:-1])} (H,W) but the reference is {tuple(size)}: "
                         "all frames must have the reference's size")
