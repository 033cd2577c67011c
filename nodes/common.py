"""Socket type names, the category root and input/output helpers shared by the node families."""

import math
import os

import torch

from ..bokehdepth_core import depth_io, labels
from ..bokehdepth_core.types import DepthMap
from . import comfy_seam as seam

CATEGORY = "BokehDepth"

K_LIST = "BOKEH_K_LIST"  # list[float] of raw K values (px*m)
BOKEH_STACK = "BOKEH_STACK"  # bokehdepth_core.types.BokehStack
DEPTH = "METRIC_DEPTH"  # bokehdepth_core.types.DepthMap
CAMERA = "CAMERA_INTRINSICS"  # torch.Tensor [B,3,3] pinhole, pixels
DEPTH_MODEL = "BOKEHDEPTH_MODEL"  # comfy_seam.ManagedModel of a bokehdepth_core.stage2.DepthModel
KONTEXT_PIPELINE = "KONTEXT_PIPELINE"  # diffusers FluxKontextPipeline
BOKEH_ADAPTER = "BOKEH_ADAPTER"  # bokehdepth_core.stage1.BokehAdapter


def category(sub: str = "") -> str:
    return f"{CATEGORY}/{sub}" if sub else CATEGORY


def expect(value, kind: type, name: str, socket: str, hint: str = ""):
    """The value of an input socket, or a clear error when something else is connected to it."""
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a {socket}{hint}, got {type(value).__name__}")
    return value


def depth_map(value, name: str = "depth"):
    """The DepthMap on a ``METRIC_DEPTH`` input (a non-empty batch)."""
    dm = expect(value, DepthMap, name, DEPTH, " (connect a depth model, Load Depth or Synthetic Bokeh Scene)")
    if dm.depth.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(dm.depth.shape)}): connect a depth batch with at least one map")
    return dm


INPUT_HINT = "look for extreme values among them (a depth or focus near 0, a huge K or scale)"
MODEL_HINT = ("the model computed NaN or inf: in fp16 its values can overflow (load it as bf16 or fp32), or its "
              "weights or the input are damaged")


def finite(node: str, hint: str = INPUT_HINT, **outputs):
    """Check a node's outputs (tensors, numbers or lists of them) before they leave it: a NaN or inf
    would spoil every node downstream without a word. ``hint``: the cause to look for."""
    for name, value in outputs.items():
        if value is None:
            continue
        if isinstance(value, torch.Tensor):
            ok = bool(torch.isfinite(value).all())
        else:
            ok = all(math.isfinite(float(v)) for v in (value if isinstance(value, (list, tuple)) else [value]))
        if not ok:
            raise ValueError(f"{node}: its output '{name}' came out as NaN or infinite for these inputs; {hint}")


def image_major(frames):
    """Stack frames ``[B,N,H,W,3]`` as one IMAGE batch ``[B*N,H,W,3]``: image 0's frames first."""
    return frames.reshape(-1, *frames.shape[2:])


def stack_outputs(stack) -> tuple:
    """A BOKEH_STACK node's outputs: the stack, its frames as one IMAGE batch (image-major) and the
    same frames with their K written in the corner."""
    frames = image_major(stack.frames).to(seam.intermediate_device())
    return stack, frames, labels.caption(frames, labels.k_captions(stack.k_values))


def image_size_inputs() -> dict:
    """Width and height widgets, overridden by a connected image (see :func:`image_size`)."""
    return {
        "width": ("INT", {"default": 1024, "min": 1, "max": 16384,
                          "tooltip": "Image width in pixels (ignored when an image is connected)."}),
        "height": ("INT", {"default": 1024, "min": 1, "max": 16384,
                           "tooltip": "Image height in pixels (ignored when an image is connected)."}),
    }


def image_size(image, width: int, height: int) -> tuple[int, int, int]:
    """(batch, width, height): the connected image's, else 1 and the widgets'."""
    if image is None:
        return 1, int(width), int(height)
    return int(image.shape[0]), int(image.shape[2]), int(image.shape[1])


def input_files(accept) -> list[str]:
    """Files at the top of the input folder that ``accept(path)`` takes (read from their headers)."""
    return [f for f in seam.list_input_files() if accept(os.path.join(seam.input_directory(), f))]


def model_files(accept) -> list[str]:
    """Files of the 'bokehdepth' model folder that ``accept(path)`` takes (read from their headers)."""
    return [f for f in seam.list_models() if accept(seam.model_path(f))]


def photo_input(tip: str = "A photo from ComfyUI's input folder (JPEG/TIFF/WebP with EXIF); upload one here. "
                           "Depth files are not listed.") -> tuple:
    """An image picker with upload, like Load Image's, listing photos only."""
    return (input_files(depth_io.is_photo), {"image_upload": True, "tooltip": tip})


def saved_ui(files: list[str], images: list[dict] = (), result: tuple = ()) -> dict:
    """A save node's return: what it wrote as text on the node (and previews), plus its outputs."""
    text = "\n".join(seam.output_relative(f) for f in files)
    seam.log.info("BokehDepth: wrote %s", ", ".join(os.path.basename(f) for f in files))
    return {"ui": {"text": [text], "images": list(images)}, "result": tuple(result)}
