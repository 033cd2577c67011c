"""Geometry nodes: pinhole camera intrinsics, depth -> camera/confidence, and point clouds (PLY)."""

from __future__ import annotations

import os

import torch

from ..bokehdepth_core import camera as cam
from ..bokehdepth_core import pointcloud
from . import comfy_seam as seam
from .common import CAMERA, DEPTH, category, depth_map, finite, image_size, image_size_inputs

MODES = {
    "35mm-equivalent focal length": "f35",
    "focal length + sensor width": "sensor",
    "photo EXIF": "exif",
    "manual fx fy cx cy": "manual",
    "authors' guess (fx = 0.7 W)": "guess",
}


class CameraIntrinsics:
    DESCRIPTION = ("Pinhole camera intrinsics [B,3,3] in pixels for UniDepthV2 and point clouds: from the lens "
                   "(f_px = focal_35mm / 36 x W, or focal_mm / sensor_width x W), a photo's EXIF, manual values, "
                   "or the BokehDepth authors' guess (fx = fy = 0.7 W, centred). Leave a model's camera input "
                   "unconnected to let UniDepthV2 predict the camera instead.")
    CATEGORY = category("Geometry")
    FUNCTION = "make"
    RETURN_TYPES = (CAMERA, "STRING")
    RETURN_NAMES = ("camera", "summary")
    OUTPUT_TOOLTIPS = ("Intrinsics [B,3,3] (one per image of the connected batch).",
                       "fx, fy, cx, cy in pixels and where they came from.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mode": (list(MODES), {"default": "35mm-equivalent focal length",
                                       "tooltip": "Where the focal length comes from."}),
                **image_size_inputs(),
                "focal_length_35mm": ("FLOAT", {"default": 35.0, "min": 1.0, "max": 5000.0, "step": 0.1,
                                                "tooltip": "35 mm-equivalent focal length in mm "
                                                           "(mode '35mm-equivalent')."}),
                "focal_length_mm": ("FLOAT", {"default": 50.0, "min": 0.1, "max": 2000.0, "step": 0.1,
                                              "tooltip": "Real focal length in mm "
                                                         "(mode 'focal length + sensor width')."}),
                "sensor_width_mm": ("FLOAT", {"default": 36.0, "min": 0.1, "max": 100.0, "step": 0.01,
                                              "tooltip": "Sensor width in mm (mode 'focal length + sensor width')."}),
                "fx": ("FLOAT", {"default": 1000.0, "min": 0.01, "max": 1e6, "step": 0.1,
                                 "tooltip": "Manual mode: focal length along x in pixels."}),
                "fy": ("FLOAT", {"default": 1000.0, "min": 0.01, "max": 1e6, "step": 0.1,
                                 "tooltip": "Manual mode: focal length along y in pixels."}),
                "cx": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1e6, "step": 0.1,
                                 "tooltip": "Manual mode: principal point x in pixels; -1 = image centre."}),
                "cy": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1e6, "step": 0.1,
                                 "tooltip": "Manual mode: principal point y in pixels; -1 = image centre."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Take width, height and batch size from this image."}),
                "photo": ("STRING", {"default": "", "tooltip": "Mode 'photo EXIF': file name of the photo in "
                                                               "ComfyUI's input folder (JPEG/TIFF with EXIF)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, mode, photo="", **_):
        # the photo is read by name: re-run when the file changes
        return seam.input_change_key(photo.strip()) if MODES.get(mode) == "exif" and photo.strip() else ""

    def make(self, mode, width, height, focal_length_35mm, focal_length_mm, sensor_width_mm, fx, fy, cx, cy,
             image=None, photo=""):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        b, width, height = image_size(image, width, height)
        photo = photo.strip() if photo else ""
        k, source = cam.intrinsics_for(MODES[mode], width, height, b, focal_35mm=focal_length_35mm,
                                       focal_mm=focal_length_mm, sensor_width_mm=sensor_width_mm, fx=fx, fy=fy,
                                       cx=cx, cy=cy, photo=seam.input_path(photo, "photo") if photo else None)
        finite("Camera Intrinsics", camera=k)
        return (k, f"{cam.describe_intrinsics(k, width, height)} ({source})")


class DepthCamera:
    DESCRIPTION = ("The camera intrinsics and per-pixel confidence that a depth model (UniDepthV2) predicted "
                   "with its depth.")
    CATEGORY = category("Geometry")
    FUNCTION = "split"
    RETURN_TYPES = (CAMERA, "MASK", "STRING")
    RETURN_NAMES = ("camera", "confidence", "summary")
    OUTPUT_TOOLTIPS = ("Predicted intrinsics [B,3,3] in pixels of the depth map.",
                       "Confidence [B,H,W] scaled to 0..1 per image (ones when the model gives none).",
                       "Predicted fx, fy, cx, cy and the horizontal field of view.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"depth": (DEPTH, {"tooltip": "Depth from 'Estimate Depth' with a UniDepthV2 model."})}}

    def split(self, depth):
        depth = depth_map(depth)
        if depth.intrinsics is None:
            raise ValueError("this depth carries no intrinsics (only UniDepthV2 predicts a camera): use "
                             "'Camera Intrinsics' to give one")
        k = depth.intrinsics.float()
        conf = pointcloud.unit_confidence(depth)
        h, w = depth.depth.shape[-2:]
        finite("Depth Camera & Confidence", camera=k, confidence=conf)
        return (k, torch.ones_like(depth.depth) if conf is None else conf, cam.describe_intrinsics(k, w, h))


class SavePointCloud:
    DESCRIPTION = ("Save metric depth as a coloured 3-D point cloud (binary PLY) in the output folder. Uses the "
                   "connected camera, else the model's own 3-D points / predicted camera (UniDepthV2).")
    CATEGORY = category("Geometry")
    FUNCTION = "save"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    OUTPUT_TOOLTIPS = ("Saved .ply files, one per line.",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "depth": (DEPTH, {"tooltip": "Metric depth (one point cloud per batch item)."}),
                "image": ("IMAGE", {"tooltip": "Colours of the points (resized to the depth size if needed)."}),
                "filename_prefix": ("STRING", {"default": "BokehDepth/points",
                                               "tooltip": "File name prefix, sub-folders allowed (like Save Image)."}),
                "stride": ("INT", {"default": 1, "min": 1, "max": 64,
                                   "tooltip": "Keep every n-th pixel in x and y (2 = a quarter of the points)."}),
                "max_depth_m": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100000.0, "step": 0.1,
                                          "tooltip": "Drop points farther than this (metres); 0 = keep all."}),
                "min_confidence": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "Drop points whose confidence (scaled to 0..1 per image) is "
                                                        "below this; 0 = keep all."}),
                "coordinates": (["opengl", "opencv"], {"default": "opengl",
                                                       "tooltip": "opengl: y up, camera looks down -z (Blender, "
                                                                  "MeshLab show it upright). "
                                                                  "opencv: y down, z forward."}),
            },
            "optional": {
                "camera": (CAMERA, {"tooltip": "Intrinsics to unproject with; overrides the ones in the depth."}),
            },
        }

    def save(self, depth, image, filename_prefix, stride, max_depth_m, min_confidence, coordinates, camera=None):
        b, h, w = depth_map(depth).depth.shape
        folder, base, counter, _subfolder = seam.save_path(filename_prefix, w, h)
        paths = [os.path.join(folder, f"{base}_{counter + i:05}_.ply") for i in range(b)]
        pointcloud.write_point_clouds(paths, depth, image, camera, stride=stride, max_depth=max_depth_m,
                                      min_confidence=min_confidence, coordinates=coordinates,
                                      callback=seam.Progress(b).callback)
        seam.log.info("BokehDepth: saved %d point cloud(s): %s", b, ", ".join(os.path.basename(p) for p in paths))
        text = "\n".join(paths)
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {
    "BokehDepthCameraIntrinsics": CameraIntrinsics,
    "BokehDepthDepthCamera": DepthCamera,
    "BokehDepthSavePointCloud": SavePointCloud,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthCameraIntrinsics": "Camera Intrinsics",
    "BokehDepthDepthCamera": "Depth Camera & Confidence",
    "BokehDepthSavePointCloud": "Save Point Cloud (PLY)",
}
