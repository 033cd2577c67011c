"""Interop nodes: our metric depth to and from plain ComfyUI types and ComfyUI's own depth nodes
(MoGe, Depth Anything 3), so any depth drives the renderer, stacks, sweep and metrics."""

from __future__ import annotations

from ..bokehdepth_core import depth_io, interop
from ..bokehdepth_core.types import DepthMap
from . import comfy_seam as seam
from .common import DEPTH, category, depth_map

CAT = category("Interop")


def _out(t):
    return t.to(seam.intermediate_device())


def _preview(dm: DepthMap):
    return _out(depth_io.colorize(dm.depth))


def _to_device(dm: DepthMap) -> DepthMap:
    dm.depth = _out(dm.depth)
    return dm


class _DepthIn:
    """Another source's depth in: our DEPTH, its preview and a summary."""
    CATEGORY = CAT
    FUNCTION = "convert"
    RETURN_TYPES = (DEPTH, "IMAGE", "STRING")
    RETURN_NAMES = ("depth", "preview", "info")
    OUTPUT_TOOLTIPS = ("Metric depth for every BokehDepth node.", "Colourised preview.", "Size, valid share and range.")

    @staticmethod
    def outputs(dm: DepthMap) -> tuple:
        dm = _to_device(dm)
        return (dm, _preview(dm), depth_io.describe(dm))


class DepthToImage:
    DESCRIPTION = ("Metric depth as plain ComfyUI types: an IMAGE and a MASK whose values are metres (not 0..1), "
                   "for float savers such as ComfyUI's EXR output. Invalid pixels become 0.")
    CATEGORY = CAT
    FUNCTION = "convert"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("depth_image", "depth_mask")
    OUTPUT_TOOLTIPS = ("Depth in metres in R, G and B [B,H,W,3].", "Depth in metres [B,H,W].")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"depth": (DEPTH, {"tooltip": "Metric depth."})}}

    def convert(self, depth):
        img, mask = interop.depth_as_image(depth_map(depth))
        return (_out(img), _out(mask))


class ControlNetDepth:
    DESCRIPTION = ("A ControlNet-ready depth image from metric depth: inverse depth normalised per image, near = "
                   "white, far and invalid = black, 3 channels (as MiDaS / Depth Anything preprocessors make them).")
    CATEGORY = CAT
    FUNCTION = "convert"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("Grey depth map for a depth ControlNet.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "depth": (DEPTH, {"tooltip": "Metric depth."}),
            "range_mode": (["minmax", "percentile"], {"default": "minmax",
                           "tooltip": "minmax: nearest pixel white, farthest black (as ControlNet preprocessors). "
                                      "percentile: 2nd..98th percentile, robust to stray pixels."}),
        }}

    def convert(self, depth, range_mode):
        return (_out(interop.controlnet_image(depth_map(depth), range_mode)),)


def _scale_input(tip: str):
    return ("FLOAT", {"default": 1.0, "min": 0.000001, "max": 100000.0, "step": 0.001, "tooltip": tip})


class DepthFromMoGe(_DepthIn):
    DESCRIPTION = ("Metric depth from ComfyUI's Run MoGe Inference (MOGE_GEOMETRY): depth in metres (MoGe-2), its "
                   "camera converted from normalised units to pixels, its 3-D points, and its mask as confidence.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "moge_geometry": ("MOGE_GEOMETRY", {"tooltip": "From ComfyUI's Run MoGe Inference node."}),
            "scale": _scale_input("Multiply depth by this (1 for MoGe-2's metres; MoGe-1 is relative: give the "
                                  "metres its unit means)."),
        }}

    def convert(self, moge_geometry, scale):
        return self.outputs(interop.depth_from_moge(moge_geometry, scale))


class DepthFromDA3(_DepthIn):
    DESCRIPTION = ("Metric depth from ComfyUI's Run Depth Anything 3 (DA3_GEOMETRY): the Metric variant gives "
                   "metres, the others relative depth (set scale). Multiview cameras come along in pixels; the "
                   "confidence too.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "da3_geometry": ("DA3_GEOMETRY", {"tooltip": "From ComfyUI's Run Depth Anything 3 node."}),
            "scale": _scale_input("Multiply depth by this: 1 for DA3-Metric (metres), the metres one unit means "
                                  "for the relative variants."),
            "sky": (list(interop.SKY_MODES), {"default": "keep",
                    "tooltip": "keep: sky keeps the model's depth. invalid: pixels with sky probability >= 0.5 "
                               "become invalid (no blur source, no 3-D points)."}),
        }}

    def convert(self, da3_geometry, scale, sky):
        return self.outputs(interop.depth_from_da3(da3_geometry, scale, sky))


class DepthFromMetricImage(_DepthIn):
    DESCRIPTION = ("Metric depth from an IMAGE or MASK whose values are linear depth (another pack's raw metric "
                   "output, an EXR loaded as an image, Depth to Image): value x scale = metres.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "scale": _scale_input("Metres per value (1 when the values are metres, 0.001 for millimetres)."),
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "Linear depth in the first channel (or the one picked below)."}),
            "mask": ("MASK", {"tooltip": "Linear depth as a MASK (used when no image is connected)."}),
        }}

    def convert(self, scale, image=None, mask=None):
        if image is None and mask is None:
            raise ValueError("connect an image or a mask holding linear depth")
        values = image[..., :1] if image is not None else mask.unsqueeze(-1)
        depth = depth_io.values_to_depth(values[..., 0], "metric", scale=scale)
        return self.outputs(DepthMap(depth=depth, meta={"source": "image:metric", "scale": float(scale)}))


NODE_CLASS_MAPPINGS = {
    "BokehDepthDepthToImage": DepthToImage,
    "BokehDepthControlNetDepth": ControlNetDepth,
    "BokehDepthDepthFromMoGe": DepthFromMoGe,
    "BokehDepthDepthFromDA3": DepthFromDA3,
    "BokehDepthDepthFromMetricImage": DepthFromMetricImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthDepthToImage": "BokehDepth Depth to Image/Mask (metres)",
    "BokehDepthControlNetDepth": "BokehDepth ControlNet Depth Map",
    "BokehDepthDepthFromMoGe": "BokehDepth Depth from MoGe",
    "BokehDepthDepthFromDA3": "BokehDepth Depth from Depth Anything 3",
    "BokehDepthDepthFromMetricImage": "BokehDepth Depth from Metric Image",
}
