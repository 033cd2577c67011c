"""Depth maps in and out: colourised previews, lossless files, and images that encode depth.

* :mod:`.preview` / :mod:`.colormaps`: metric depth ``[B,H,W]`` -> ``[B,H,W,3]`` images (near = warm/bright).
* :mod:`.files`: ``save_depth`` / ``load_depth`` for float32 ``.npy``, ``.npz`` (depth + confidence +
  intrinsics), 16-bit PNG (:mod:`.png16`, metric range in its metadata) and float32 TIFF, each with
  a JSON header (:mod:`.metadata`); plain depth images and arrays from elsewhere load with a stated
  mapping to metres (:mod:`.mapping`); OpenEXR through :mod:`.exr`.
* :mod:`.sniff`: what a file is (our depth, other depth, a photo) from its header, for file pickers.

A new file format is one more module with a writer and a reader, registered in :mod:`.files`.
"""

from .colormaps import COLORMAPS, apply_colormap
from .files import READ_EXTENSIONS, SAVE_FORMATS, extension_for, format_for_path, load_depth, save_depth
from .mapping import IMAGE_CHANNELS, LOAD_MODES, image_to_depth, pick_channel, values_to_depth
from .metadata import sidecar_path
from .png16 import PNG_ENCODINGS
from .sniff import is_depth_file, is_photo
from .preview import RANGE_MODES, colorize, depth_range, describe, normalize_depth, valid_mask

__all__ = [
    "COLORMAPS", "IMAGE_CHANNELS", "LOAD_MODES", "PNG_ENCODINGS", "RANGE_MODES", "READ_EXTENSIONS", "SAVE_FORMATS",
    "apply_colormap", "colorize", "depth_range", "describe", "extension_for", "format_for_path", "image_to_depth",
    "is_depth_file", "is_photo", "load_depth", "normalize_depth", "pick_channel", "save_depth", "sidecar_path", "valid_mask", "values_to_depth",
]
