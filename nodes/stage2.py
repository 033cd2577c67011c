"""Stage-2 nodes: load a depth model (DSFA releases, plain Depth Anything V2) and estimate metric
depth from an image, optionally fused with its bokeh stack.

A loaded model travels as the seam's ManagedModel: ComfyUI's model manager moves it between the
GPU and its offload device, loading it before each run with the run's memory estimate."""

from __future__ import annotations

import dataclasses
import math

from ..bokehdepth_core import checks, depth_io, stage2, weight_files
from ..bokehdepth_core.stage2.checkpoints import WHERE_TO_GET
from ..bokehdepth_core.stage2.inputs import check_inputs, stack_from_images
from ..bokehdepth_core.stage2.model import MAX_FRAME_TOKENS
from ..bokehdepth_core.types import BokehStack
from . import comfy_seam as seam
from .common import BOKEH_STACK, CAMERA, DEPTH, DEPTH_MODEL, K_LIST, MODEL_HINT, category, finite, model_files

DEFAULT_FILE = "DAV2_dsfa_release.pth"
MAX_INPUT_SIZE = 14 * math.isqrt(MAX_FRAME_TOKENS)  # a square image at this size fills the token budget
LOADER = "BokehDepth Load Depth Model"
HEADS = ["auto", "metric", "relative"]


def _check_model(model) -> seam.ManagedModel:
    if not isinstance(model, seam.ManagedModel) or not isinstance(model.model, stage2.DepthModel):
        raise ValueError(f"model must come from '{LOADER}' (a BOKEHDEPTH_MODEL), got {type(model).__name__}")
    return model


def _common_inputs() -> dict:
    return {
        "model": (DEPTH_MODEL, {"tooltip": f"Depth model from '{LOADER}'."}),
        "image": ("IMAGE", {"tooltip": "Sharp reference image(s); depth comes out at this size."}),
        "input_size": ("INT", {"default": 518, "min": 14, "max": MAX_INPUT_SIZE, "step": 14,
                               "tooltip": "Short side the network sees (multiple of 14). 518 is what the "
                                          "models were trained at; larger = finer detail, slower. At most "
                                          f"{MAX_FRAME_TOKENS:,} tokens (14 px patches) per frame: "
                                          f"{MAX_INPUT_SIZE} for a square image, less for a wider one."}),
        "colormap": (list(depth_io.COLORMAPS), {"default": "Spectral",
                                                "tooltip": "Colormap of the preview image (near = warm/bright)."}),
    }


def _camera_input() -> dict:
    return {
        "camera": (CAMERA, {"tooltip": "Pinhole intrinsics [B,3,3] in pixels, for models that use a camera "
                                       "(UniDepthV2). Depth Anything V2 ignores it."}),
        "resolution_level": ("INT", {"default": -1, "min": -1, "max": 9,
                                     "tooltip": "UniDepthV2 only: network pixel budget, 0 (fewest pixels, fastest) .. "
                                                "9 (most). -1 = UniDepthV2's default. Depth Anything V2 uses "
                                                "input_size instead."}),
    }


def _to_device(dm, device):
    moved = {f.name: getattr(dm, f.name).to(device) for f in dataclasses.fields(dm)
             if f.name != "meta" and getattr(dm, f.name) is not None}
    meta = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in dm.meta.items()}
    return dataclasses.replace(dm, meta=meta, **moved)


def _run(node, managed, image, stack, k_values, input_size, colormap, camera, resolution_level):
    managed = _check_model(managed)
    seam.check_interrupt()
    level = int(resolution_level) if resolution_level is not None and resolution_level >= 0 else None
    # Checked before the model is loaded: a refused input must not move weights to the GPU.
    image, stack, k_values = check_inputs(image, stack, k_values)
    frames = 0 if stack is None else int(stack.shape[1])
    memory = managed.model.memory_required(int(image.shape[1]), int(image.shape[2]), frames, managed.dtype,
                                           input_size=int(input_size), resolution_level=level)
    device = managed.load(memory)
    progress = seam.Progress(int(image.shape[0]))  # the core's callback brings the block count
    dm = stage2.estimate_depth(managed.model, image, stack, k_values, int(input_size), device=device,
                               dtype=managed.dtype, callback=progress.callback, camera=camera, resolution_level=level)
    finite(node, MODEL_HINT, depth=dm.depth, confidence=dm.confidence, intrinsics=dm.intrinsics, points=dm.points)
    dm = _to_device(dm, seam.intermediate_device())
    return (dm, depth_io.colorize(dm.depth, cmap=colormap).to(dm.depth.device))


class LoadDepthModel:
    DESCRIPTION = ("Load a Stage-2 depth model from the 'bokehdepth' model folder: the BokehDepth releases "
                   "(DAV2_dsfa_release.pth, UDv2_dsfa_release.pth) or plain Depth Anything V2 files "
                   "(.pth/.safetensors). The model type and encoder size are read from the file; only depth "
                   "model files are listed (the bokeh adapter is not).")
    CATEGORY = category("Depth")
    FUNCTION = "load"
    RETURN_TYPES = (DEPTH_MODEL, "STRING")
    RETURN_NAMES = ("model", "info")
    OUTPUT_TOOLTIPS = ("The loaded depth model.", "What was loaded (family, encoder, head, attention).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_file": (seam.model_choices(model_files(weight_files.is_depth_model), DEFAULT_FILE,
                                              "UDv2_dsfa_release.pth"),
                           {"default": DEFAULT_FILE,
                            "tooltip": "Depth model file in models/bokehdepth (or a path added for 'bokehdepth' in "
                                       "extra_model_paths.yaml); files holding other weights are not listed."}),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {"default": "auto",
                                                         "tooltip": "auto = bf16/fp16 on GPU, fp32 on CPU."}),
            "plain_dav2_head": (HEADS, {"default": "auto",
                                        "tooltip": "Only for plain Depth Anything V2 files: metric or relative head. "
                                                   "auto follows the file name ('metric_hypersim'/'metric_vkitti' = "
                                                   "metric, otherwise relative)."}),
            "max_depth_m": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 1.0,
                                      "tooltip": "Only for plain metric Depth Anything V2 files: the head's maximum "
                                                 "depth. 0 = from the file name (hypersim 20 m, vkitti 80 m)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model_file, **_):
        return seam.model_change_key(model_file)

    def load(self, model_file, dtype, plain_dav2_head, max_depth_m):
        path = seam.model_path(model_file, where_to_get=WHERE_TO_GET)
        torch_dtype = seam.pick_dtype(seam.torch_device(), dtype)
        # Built on the offload device: ComfyUI's model manager moves it to the GPU for each run.
        model = stage2.build_from_checkpoint(path, device=seam.offload_device(), dtype=torch_dtype,
                                             plain_head=plain_dav2_head, plain_max_depth=float(max_depth_m) or None)
        managed = seam.ManagedModel(model, torch_dtype)
        return (managed, f"{model.describe()} from {model_file}, {torch_dtype} on {managed.load_device}")


class EstimateDepthStack:
    DESCRIPTION = ("Metric depth of an image, fused with its bokeh stack through DSFA (BokehDepth Stage-2). "
                   "The stack is a BOKEH_STACK, or an IMAGE batch of frames with their K list.")
    CATEGORY = category("Depth")
    FUNCTION = "estimate"
    RETURN_TYPES = (DEPTH, "IMAGE")
    RETURN_NAMES = ("depth", "preview")
    OUTPUT_TOOLTIPS = ("Metric depth [B,H,W] in metres (with confidence/intrinsics when the model predicts them).",
                       "Colourised depth for viewing.")

    @classmethod
    def INPUT_TYPES(cls):
        opt = {
            "bokeh_stack": (BOKEH_STACK, {"tooltip": "Bokeh stack (frames + K) of the image, e.g. from Stage-1."}),
            "stack_images": ("IMAGE", {"tooltip": "Instead of a bokeh stack: the N stack frames as an IMAGE batch "
                                                  "(N frames for every image, or B*N frames in image order)."}),
            "k_list": (K_LIST, {"tooltip": "The raw K (px*m) of each frame in stack_images, in the same order."}),
        }
        opt.update(_camera_input())
        return {"required": _common_inputs(), "optional": opt}

    def estimate(self, model, image, input_size, colormap, bokeh_stack=None, stack_images=None, k_list=None,
                 camera=None, resolution_level=-1):
        if bokeh_stack is not None:
            if not isinstance(bokeh_stack, BokehStack):
                raise ValueError(f"bokeh_stack must be a BOKEH_STACK, got {type(bokeh_stack).__name__}")
            stack, k = bokeh_stack.frames, bokeh_stack.k_values
        elif stack_images is not None:
            stack, k = stack_from_images(stack_images, k_list, checks.image_batch(image).shape[0])
        else:
            raise ValueError("connect a bokeh_stack, or stack_images with a k_list "
                             "(use 'BokehDepth Estimate Depth' for a single image without a stack)")
        return _run(NODE_DISPLAY_NAME_MAPPINGS["BokehDepthEstimateDepthStack"], model, image, stack, k, input_size,
                    colormap, camera, resolution_level)


class EstimateDepth:
    DESCRIPTION = "Metric depth of single images, without a bokeh stack (the plain depth model)."
    CATEGORY = category("Depth")
    FUNCTION = "estimate"
    RETURN_TYPES = (DEPTH, "IMAGE")
    RETURN_NAMES = ("depth", "preview")
    OUTPUT_TOOLTIPS = EstimateDepthStack.OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _common_inputs(), "optional": _camera_input()}

    def estimate(self, model, image, input_size, colormap, camera=None, resolution_level=-1):
        return _run(NODE_DISPLAY_NAME_MAPPINGS["BokehDepthEstimateDepth"], model, image, None, None, input_size,
                    colormap, camera, resolution_level)


NODE_CLASS_MAPPINGS = {
    "BokehDepthLoadDepthModel": LoadDepthModel,
    "BokehDepthEstimateDepthStack": EstimateDepthStack,
    "BokehDepthEstimateDepth": EstimateDepth,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthLoadDepthModel": LOADER,
    "BokehDepthEstimateDepthStack": "BokehDepth Estimate Depth (Bokeh Stack)",
    "BokehDepthEstimateDepth": "BokehDepth Estimate Depth",
}
