"""Depth I/O nodes: colourised preview, lossless save (EXR included), load from files and from images."""

from __future__ import annotations

import os

from ..bokehdepth_core import depth_io
from ..bokehdepth_core.images import save_rgb
from ..bokehdepth_core.types import DepthMap
from . import comfy_seam as seam
from .common import DEPTH, category, depth_map, finite, input_files, saved_ui


def _near_far_inputs(near_tip: str, far_tip: str):
    return {"near_m": ("FLOAT", {"default": 0.5, "min": 0.001, "max": 100000.0, "step": 0.01, "tooltip": near_tip}),
            "far_m": ("FLOAT", {"default": 20.0, "min": 0.002, "max": 100000.0, "step": 0.1, "tooltip": far_tip})}


_INVERSE = ("BOOLEAN", {"default": True, "tooltip": "Spread colours evenly in 1/depth (more detail up close, as "
                                                   "depth models are usually shown); off = evenly in metres."})


def _preview(dm: DepthMap, cmap="Spectral", inverse=True, ranges=None):
    img = depth_io.colorize(dm.depth, cmap=cmap, inverse=inverse, ranges=ranges)
    return img.to(seam.intermediate_device())


class DepthPreview:
    DESCRIPTION = ("Colourise metric depth for viewing: near objects warm/bright, invalid pixels black; the colour "
                   "range follows each image. For one range shared by many images use Depth Preview (Fixed Range).")
    CATEGORY = category("Depth")
    FUNCTION = "preview"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "range")
    OUTPUT_TOOLTIPS = ("Colourised depth [B,H,W,3].", "The depth range (metres) each image was coloured with.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "depth": (DEPTH, {"tooltip": "Metric depth to show."}),
            "colormap": (list(depth_io.COLORMAPS), {"default": "Spectral",
                         "tooltip": "Spectral (as Depth Anything shows depth), turbo, inferno, viridis, magma or gray."}),
            "range_mode": (["percentile", "minmax"], {"default": "percentile",
                           "tooltip": "2nd..98th percentile of valid depth (robust to outliers), or min..max."}),
            "inverse_depth": _INVERSE,
        }}

    def preview(self, depth, colormap, range_mode, inverse_depth, near_m=None, far_m=None):
        ranges = depth_io.depth_range(depth_map(depth).depth, range_mode, near_m, far_m)
        img = _preview(depth, colormap, bool(inverse_depth), ranges)
        text = "; ".join(f"#{i}: {lo:.4g}..{hi:.4g} m" for i, (lo, hi) in enumerate(ranges))
        return (img, text)


class DepthPreviewFixed(DepthPreview):
    DESCRIPTION = ("Colourise metric depth over a fixed near..far range in metres, the same for every image (so "
                   "previews compare): near objects warm/bright, invalid pixels black.")

    @classmethod
    def INPUT_TYPES(cls):
        req = super().INPUT_TYPES()["required"]
        req.pop("range_mode")
        req.update(_near_far_inputs("Nearest depth in metres (gets the warm/bright end).",
                                    "Farthest depth in metres (gets the cool/dark end)."))
        return {"required": req}

    def preview(self, depth, colormap, inverse_depth, near_m, far_m):  # noqa: D102 - same outputs
        if not near_m < far_m:
            raise ValueError(f"near_m ({near_m}) must be smaller than far_m ({far_m})")
        return super().preview(depth, colormap, "fixed", inverse_depth, near_m, far_m)


# format widget value -> (save format, PNG encoding)
_SAVE_CHOICES = {"exr": ("exr", "linear"), "npy": ("npy", "linear"), "npz": ("npz", "linear"),
                 "tiff": ("tiff", "linear"), "png16": ("png16", "linear"), "png16 (inverse depth)": ("png16", "inverse")}


class SaveDepth:
    DESCRIPTION = ("Save metric depth losslessly to ComfyUI's output folder: OpenEXR (float32 channel Z, opens in "
                   "Blender/Nuke), float32 .npy/.npz/TIFF, or 16-bit PNG with its metric range in the PNG "
                   "metadata; plus a JSON sidecar and a colour preview. The node shows what it wrote.")
    CATEGORY = category("Depth")
    FUNCTION = "save"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    OUTPUT_TOOLTIPS = ("The written depth files, one per line (relative to the output folder).",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "depth": (DEPTH, {"tooltip": "Metric depth to save (one file per batch item)."}),
            "filename_prefix": ("STRING", {"default": "BokehDepth/depth",
                                           "tooltip": "File name prefix, sub-folders allowed (like Save Image)."}),
            "format": (list(_SAVE_CHOICES), {"default": "exr",
                       "tooltip": "exr: float32 channel Z (+ confidence), header with units, K, focus, intrinsics. "
                                  "npy: float32 metres. npz: depth + confidence + intrinsics. tiff: float32 TIFF. "
                                  "png16: 16-bit PNG, codes even in metres (1/65534 of the range); png16 (inverse "
                                  "depth): codes even in 1/depth, finer up close."}),
            "sidecar": ("BOOLEAN", {"default": True,
                                    "tooltip": "Also write a JSON file with shape, range, units, intrinsics and source."}),
            "preview": ("BOOLEAN", {"default": True,
                                    "tooltip": "Also write a colourised PNG and show it on the node."}),
        }, "optional": {
            "K": ("FLOAT", {"forceInput": True, "tooltip": "Bokeh strength K (px*m) to record in the file's header."}),
            "focus_distance_m": ("FLOAT", {"forceInput": True,
                                           "tooltip": "Focus distance (m) to record in the file's header."}),
        }}

    def save(self, depth, filename_prefix, format, sidecar, preview, K=None, focus_distance_m=None):  # noqa: A002
        if format not in _SAVE_CHOICES:
            raise ValueError(f"format must be one of {', '.join(_SAVE_CHOICES)}, got {format!r}")
        fmt, encoding = _SAVE_CHOICES[format]
        ext = depth_io.extension_for(fmt)
        b, h, w = depth_map(depth).depth.shape
        folder, base, counter, subfolder = seam.save_path(filename_prefix, w, h)
        colour = _preview(depth) if preview else None
        extra = {key: float(v) for key, v in (("K", K), ("focus_m", focus_distance_m)) if v is not None}
        images, files = [], []
        for i in range(b):
            seam.check_interrupt()
            stem = os.path.join(folder, f"{base}_{counter + i:05}_")
            files += depth_io.save_depth(stem + ext, depth, fmt, index=i, encoding=encoding, sidecar=bool(sidecar),
                                         source=str(depth.meta.get("source", "")), extra=extra)
            if colour is not None:
                save_rgb(stem + "preview.png", colour[i])
                images.append({"filename": os.path.basename(stem) + "preview.png", "subfolder": subfolder,
                               "type": "output"})
        data = [f for f in files if f.endswith(ext)]
        return saved_ui(files, images, ("\n".join(seam.output_relative(f) for f in data),))


class LoadDepth:
    DESCRIPTION = ("Load metric depth from ComfyUI's input folder: files from Save Depth (.exr/.npy/.npz/16-bit "
                   ".png/.tif, restored to metres with their camera), EXR depth from Blender or Nuke, and float or "
                   "16-bit depth from elsewhere (x scale). 8-bit depth pictures: use Load Image + Depth from Image.")
    CATEGORY = category("Depth")
    FUNCTION = "load"
    RETURN_TYPES = (DEPTH, "IMAGE", "STRING")
    RETURN_NAMES = ("depth", "preview", "info")
    OUTPUT_TOOLTIPS = ("Metric depth (metres).", "Colourised preview.", "What was loaded: size and range.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "depth_file": (input_files(depth_io.is_depth_file), {"image_upload": True,
                           "tooltip": "A depth file in ComfyUI's input folder (photos are not listed). Upload "
                                      "PNG/TIFF here; copy .exr/.npy/.npz files into the folder."}),
            "scale": ("FLOAT", {"default": 1.0, "min": 0.000001, "max": 100000.0, "step": 0.001,
                                "tooltip": "Metres per stored unit for files not saved by BokehDepth: 1 for metres "
                                           "(Blender EXR), 0.001 for millimetre PNGs, 0.00390625 (1/256) for KITTI."}),
            "channel": ("STRING", {"default": "auto",
                                   "tooltip": "EXR: the channel holding depth (auto finds Z, depth.Z, Blender's "
                                              "ViewLayer.Depth.Z, then R). RGB images: r, g, b or luminance."}),
        }}

    @classmethod
    def IS_CHANGED(cls, depth_file, **_):
        return seam.input_change_key(depth_file)

    @classmethod
    def VALIDATE_INPUTS(cls, depth_file, **_):
        return seam.validate_input_file(depth_file, "depth file")

    def load(self, depth_file, scale, channel):
        path = seam.input_path(depth_file, "depth file")
        channel = (channel or "auto").strip() or "auto"
        ours = depth_io.sniff.kind(path) == depth_io.sniff.OURS
        pick = channel if channel in depth_io.IMAGE_CHANNELS else "auto"
        dm = depth_io.load_depth(path, mode="auto" if ours else "metric", scale=scale, channel=pick,
                                 exr_channel=channel)
        finite("Load Depth", confidence=dm.confidence, intrinsics=dm.intrinsics)  # depth: NaN marks invalid pixels
        dm.meta.setdefault("source", f"file:{os.path.basename(path)}")
        dm.depth = dm.depth.to(seam.intermediate_device())
        return (dm, _preview(dm), f"{os.path.basename(path)}: {depth_io.describe(dm)}")


_IMAGE_MODES = {
    "disparity": "bright = near, even in 1/depth between near_m and far_m (Depth Anything / MiDaS style maps)",
    "depth": "bright = far, even in metres between near_m and far_m",
    "depth_inverted": "bright = near, even in metres between near_m and far_m",
}


class DepthFromImage:
    DESCRIPTION = ("Turn a relative depth IMAGE (another node's depth map, 0..1) into metric depth by stating the "
                   "metres its darkest and brightest values mean. Linear metres in an image: use Depth from "
                   "Metric Image.")
    CATEGORY = category("Depth")
    FUNCTION = "convert"
    RETURN_TYPES = (DEPTH, "IMAGE")
    RETURN_NAMES = ("depth", "preview")
    OUTPUT_TOOLTIPS = ("Metric depth (metres).", "Colourised preview.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Depth encoded as an image, values 0..1 (batch allowed)."}),
            "mode": (list(_IMAGE_MODES), {"default": "disparity", "tooltip": "; ".join(
                f"{k}: {v}" for k, v in _IMAGE_MODES.items()) + "."}),
            **_near_far_inputs("Metres that the nearest value means.", "Metres that the farthest value means."),
            "channel": (list(depth_io.IMAGE_CHANNELS), {"default": "luminance",
                        "tooltip": "Which channel holds depth (grey maps: any)."}),
            "value_range": (["full", "minmax"], {"default": "full",
                            "tooltip": "Use values as 0..1, or stretch each image's own min..max to 0..1 first "
                                       "(relative maps that do not span the full range)."}),
        }}

    def convert(self, image, mode, near_m, far_m, channel, value_range):
        depth = depth_io.image_to_depth(image, mode, near=near_m, far=far_m, channel=channel, value_range=value_range)
        finite("Depth from Image", depth=depth)
        dm = DepthMap(depth=depth.to(seam.intermediate_device()),
                      meta={"source": f"image:{mode}", "near": near_m, "far": far_m})
        return (dm, _preview(dm))


NODE_CLASS_MAPPINGS = {
    "BokehDepthDepthPreview": DepthPreview,
    "BokehDepthDepthPreviewFixed": DepthPreviewFixed,
    "BokehDepthSaveDepth": SaveDepth,
    "BokehDepthLoadDepth": LoadDepth,
    "BokehDepthDepthFromImage": DepthFromImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthDepthPreview": "BokehDepth Depth Preview",
    "BokehDepthDepthPreviewFixed": "BokehDepth Depth Preview (Fixed Range)",
    "BokehDepthSaveDepth": "BokehDepth Save Depth",
    "BokehDepthLoadDepth": "BokehDepth Load Depth",
    "BokehDepthDepthFromImage": "BokehDepth Depth from Image",
}
