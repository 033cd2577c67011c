"""Depth I/O nodes: colourised preview, lossless save, load from files and from images."""

from __future__ import annotations

import os

from ..bokehdepth_core import depth_io
from ..bokehdepth_core.images import save_rgb
from ..bokehdepth_core.types import DepthMap
from . import comfy_seam as seam
from .common import DEPTH, category, depth_map, finite


def _near_far_inputs(near_tip: str, far_tip: str):
    return {"near_m": ("FLOAT", {"default": 0.5, "min": 0.001, "max": 100000.0, "step": 0.01, "tooltip": near_tip}),
            "far_m": ("FLOAT", {"default": 20.0, "min": 0.002, "max": 100000.0, "step": 0.1, "tooltip": far_tip})}


def _range_inputs():
    return {
        "range_mode": (list(depth_io.RANGE_MODES), {"default": "percentile",
                       "tooltip": "Colour range per image: 2nd..98th percentile of valid depth (robust), min..max, "
                                  "or the fixed near/far below (comparable across images)."}),
        **_near_far_inputs("Nearest depth in metres for the 'fixed' range (gets the warm/bright end).",
                           "Farthest depth in metres for the 'fixed' range (gets the cool/dark end)."),
        "inverse_depth": ("BOOLEAN", {"default": True,
                                      "tooltip": "Spread colours evenly in 1/depth (more detail up close, as depth "
                                                 "models are usually shown); off = evenly in metres."}),
    }


def _preview(dm: DepthMap, cmap="Spectral", inverse=True, ranges=None):
    img = depth_io.colorize(dm.depth, cmap=cmap, inverse=inverse, ranges=ranges)
    return img.to(seam.intermediate_device())


class DepthPreview:
    DESCRIPTION = "Colourise metric depth for viewing: near objects warm/bright, invalid pixels black."
    CATEGORY = category("Depth")
    FUNCTION = "preview"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "range")
    OUTPUT_TOOLTIPS = ("Colourised depth [B,H,W,3].", "The depth range (metres) each image was coloured with.")

    @classmethod
    def INPUT_TYPES(cls):
        req = {
            "depth": (DEPTH, {"tooltip": "Metric depth to show."}),
            "colormap": (list(depth_io.COLORMAPS), {"default": "Spectral",
                         "tooltip": "Spectral (as Depth Anything shows depth), turbo, inferno, viridis, magma or gray."}),
        }
        req.update(_range_inputs())
        return {"required": req}

    def preview(self, depth, colormap, range_mode, near_m, far_m, inverse_depth):
        if range_mode == "fixed" and not near_m < far_m:
            raise ValueError(f"near_m ({near_m}) must be smaller than far_m ({far_m}) for the 'fixed' range")
        ranges = depth_io.depth_range(depth_map(depth).depth, range_mode, near_m, far_m)
        img = _preview(depth, colormap, bool(inverse_depth), ranges)
        text = "; ".join(f"#{i}: {lo:.4g}..{hi:.4g} m" for i, (lo, hi) in enumerate(ranges))
        return (img, text)


class SaveDepth:
    DESCRIPTION = ("Save metric depth losslessly to ComfyUI's output folder: float32 .npy/.npz, 16-bit PNG with "
                   "its metric range in the PNG metadata, or float32 TIFF; plus a JSON sidecar and a colour preview.")
    CATEGORY = category("Depth")
    FUNCTION = "save"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "depth": (DEPTH, {"tooltip": "Metric depth to save (one file per batch item)."}),
            "filename_prefix": ("STRING", {"default": "BokehDepth/depth",
                                           "tooltip": "File name prefix, sub-folders allowed (like Save Image)."}),
            "format": (list(depth_io.SAVE_FORMATS), {"default": "npy",
                       "tooltip": "npy: float32 metres. png16: 16-bit PNG, metric range in its metadata (quantised "
                                  "to 1/65534 of the range). tiff: float32 TIFF. npz: depth + confidence + intrinsics. "
                                  "EXR is not offered (no EXR library)."}),
            "png_encoding": (list(depth_io.PNG_ENCODINGS), {"default": "linear",
                             "tooltip": "png16 only: code steps even in metres (linear) or in 1/depth (inverse, finer up close)."}),
            "sidecar": ("BOOLEAN", {"default": True,
                                    "tooltip": "Also write a JSON file with shape, range, units, intrinsics and source."}),
            "preview": ("BOOLEAN", {"default": True,
                                    "tooltip": "Also write a colourised PNG and show it on the node."}),
        }}

    def save(self, depth, filename_prefix, format, png_encoding, sidecar, preview):  # noqa: A002 - widget name
        ext = depth_io.extension_for(format)
        b, h, w = depth_map(depth).depth.shape
        folder, base, counter, subfolder = seam.save_path(filename_prefix, w, h)
        colour = _preview(depth) if preview else None
        images, files = [], []
        for i in range(b):
            seam.check_interrupt()
            stem = os.path.join(folder, f"{base}_{counter + i:05}_")
            files += depth_io.save_depth(stem + ext, depth, format, index=i, encoding=png_encoding,
                                         sidecar=bool(sidecar), source=str(depth.meta.get("source", "")))
            if colour is not None:
                save_rgb(stem + "preview.png", colour[i])
                images.append({"filename": os.path.basename(stem) + "preview.png", "subfolder": subfolder,
                               "type": "output"})
        seam.log.info("BokehDepth: saved %d depth file(s): %s", b, ", ".join(os.path.basename(f) for f in files))
        return {"ui": {"images": images}}


def _mapping_inputs(modes, default_mode):
    return {
        "mode": (list(modes), {"default": default_mode,
                 "tooltip": "How values become metres. auto: our own files as saved (float files as metres). "
                            "metric: value x scale. disparity: bright = near, even in 1/depth between near_m and "
                            "far_m (Depth Anything / MiDaS style maps). depth: bright = far, even in metres. "
                            "depth_inverted: bright = near, even in metres."}),
        "scale": ("FLOAT", {"default": 1.0, "min": 0.000001, "max": 100000.0, "step": 0.001,
                            "tooltip": "metric mode: metres per stored unit (0.001 for millimetre PNGs, 0.00390625 = "
                                       "1/256 for KITTI, 1 for float metres)."}),
        **_near_far_inputs("disparity/depth modes: metres that the nearest value means.",
                           "disparity/depth modes: metres that the farthest value means."),
    }


_VALUE_RANGE = ("value_range", (["full", "minmax"], {"default": "full",
                "tooltip": "disparity/depth modes: 0..1 is the format's full range (0..255, 0..65535), or this "
                           "image's own min..max (for relative maps that do not span the full range)."}))


class LoadDepth:
    DESCRIPTION = ("Load metric depth from ComfyUI's input folder: files from Save Depth (.npy/.npz/16-bit PNG/"
                   "TIFF, restored to metres), or plain depth images and arrays with a stated mapping.")
    CATEGORY = category("Depth")
    FUNCTION = "load"
    RETURN_TYPES = (DEPTH, "IMAGE", "STRING")
    RETURN_NAMES = ("depth", "preview", "info")
    OUTPUT_TOOLTIPS = ("Metric depth (metres).", "Colourised preview.", "What was loaded: size and range.")

    @classmethod
    def INPUT_TYPES(cls):
        req = {"depth_file": (seam.list_input_files(depth_io.READ_EXTENSIONS), {"image_upload": True,
                              "tooltip": "A depth file in ComfyUI's input folder (.npy, .npz, .png, .tif; "
                                         "upload images here, copy .npy/.npz files into the folder)."})}
        req.update(_mapping_inputs(depth_io.LOAD_MODES, "auto"))
        req["channel"] = (["auto", "r", "g", "b", "luminance"], {"default": "auto",
                          "tooltip": "Which channel of an RGB image holds depth; auto takes grey images as they are."})
        req[_VALUE_RANGE[0]] = _VALUE_RANGE[1]
        return {"required": req}

    @classmethod
    def IS_CHANGED(cls, depth_file, **_):
        return seam.input_change_key(depth_file)

    @classmethod
    def VALIDATE_INPUTS(cls, depth_file, **_):
        return seam.validate_input_file(depth_file, "depth file")

    def load(self, depth_file, mode, scale, near_m, far_m, channel, value_range):
        path = seam.input_path(depth_file, "depth file")
        dm = depth_io.load_depth(path, mode=mode, scale=scale, near=near_m, far=far_m, channel=channel,
                                 normalize="minmax" if value_range == "minmax" else "dtype")
        finite("Load Depth", confidence=dm.confidence, intrinsics=dm.intrinsics)  # depth: NaN marks invalid pixels
        dm.meta.setdefault("source", f"file:{os.path.basename(path)}")
        dm.depth = dm.depth.to(seam.intermediate_device())
        return (dm, _preview(dm), f"{os.path.basename(path)}: {depth_io.describe(dm)}")


class DepthFromImage:
    DESCRIPTION = ("Turn an IMAGE that encodes depth (e.g. another node's depth map) into metric depth, with a "
                   "stated mapping: disparity or depth between near and far metres, or value x scale.")
    CATEGORY = category("Depth")
    FUNCTION = "convert"
    RETURN_TYPES = (DEPTH, "IMAGE")
    RETURN_NAMES = ("depth", "preview")
    OUTPUT_TOOLTIPS = ("Metric depth (metres).", "Colourised preview.")

    @classmethod
    def INPUT_TYPES(cls):
        req = {"image": ("IMAGE", {"tooltip": "Depth encoded as an image, values 0..1 (batch allowed)."})}
        req.update(_mapping_inputs(depth_io.LOAD_MODES[1:], "disparity"))
        req["scale"][1]["tooltip"] = "metric mode: metres that the value 1.0 (white) means."
        req["channel"] = (list(depth_io.IMAGE_CHANNELS), {"default": "luminance",
                          "tooltip": "Which channel holds depth (grey maps: any)."})
        req[_VALUE_RANGE[0]] = (["full", "minmax"], {"default": "full",
                                "tooltip": "disparity/depth modes: use values as 0..1, or stretch each image's "
                                           "own min..max to 0..1 (relative maps)."})
        return {"required": req}

    def convert(self, image, mode, scale, near_m, far_m, channel, value_range):
        depth = depth_io.image_to_depth(image, mode, near=near_m, far=far_m, scale=scale, channel=channel,
                                        value_range=value_range)
        finite("Depth from Image", depth=depth)
        dm = DepthMap(depth=depth.to(seam.intermediate_device()),
                      meta={"source": f"image:{mode}", "near": near_m, "far": far_m, "scale": scale})
        return (dm, _preview(dm))


NODE_CLASS_MAPPINGS = {
    "BokehDepthDepthPreview": DepthPreview,
    "BokehDepthSaveDepth": SaveDepth,
    "BokehDepthLoadDepth": LoadDepth,
    "BokehDepthDepthFromImage": DepthFromImage,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthDepthPreview": "Depth Preview",
    "BokehDepthSaveDepth": "Save Depth",
    "BokehDepthLoadDepth": "Load Depth",
    "BokehDepthDepthFromImage": "Depth from Image",
}
