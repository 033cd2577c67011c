"""Geometry nodes: pinhole camera intrinsics, depth -> camera/confidence, and point clouds (PLY)."""

from __future__ import annotations

import os

import torch

from ..bokehdepth_core import optics, pointcloud
from ..bokehdepth_core import camera as cam
from ..bokehdepth_core.types import DepthMap
from . import comfy_seam as seam
from .common import CAMERA, DEPTH, category

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
                "width": ("INT", {"default": 1024, "min": 1, "max": 16384,
                                  "tooltip": "Image width in pixels (ignored when an image is connected)."}),
                "height": ("INT", {"default": 1024, "min": 1, "max": 16384,
                                   "tooltip": "Image height in pixels (ignored when an image is connected)."}),
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
        b = 1
        if image is not None:
            b, height, width = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
        how = MODES[mode]
        if how == "f35":
            k = cam.intrinsics_from_lens(width, height, focal_35mm=focal_length_35mm, batch=b)
            src = f"{focal_length_35mm:g} mm (35 mm equiv.)"
        elif how == "sensor":
            k = cam.intrinsics_from_lens(width, height, focal_mm=focal_length_mm, sensor_width_mm=sensor_width_mm,
                                         batch=b)
            src = f"{focal_length_mm:g} mm on a {sensor_width_mm:g} mm wide sensor"
        elif how == "exif":
            if not photo or not photo.strip():
                raise ValueError("photo: give the file name of a photo in ComfyUI's input folder for mode 'photo EXIF'")
            path = seam.input_path(photo.strip())
            info = optics.read_lens_exif(path)
            k = cam.intrinsics_from_exif(info, width, height, batch=b)
            src = f"EXIF of {os.path.basename(path)} ({info.summary()})"
        elif how == "manual":
            k = cam.intrinsics_matrix(fx, fy, cx if cx >= 0 else 0.5 * width,
                                      cy if cy >= 0 else 0.5 * height).expand(b, 3, 3).clone()
            src = "manual"
        else:
            k = cam.default_camera(width, height, b)
            src = "authors' guess"
        cam.check_camera(k, b)
        k0 = k[0]
        summary = (f"fx={k0[0, 0]:.2f} fy={k0[1, 1]:.2f} cx={k0[0, 2]:.2f} cy={k0[1, 2]:.2f} px for "
                   f"{width}x{height} ({src})")
        return (k, summary)


def _unit_confidence(depth: DepthMap):
    """The depth's confidence scaled to 0..1 per image (float32), or None."""
    if depth.confidence is None:
        return None
    conf = depth.confidence.float()
    return conf / conf.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


def _check_depth(depth):
    if not isinstance(depth, DepthMap):
        raise ValueError(f"depth must be a METRIC_DEPTH (from a depth node), got {type(depth).__name__}")


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
        _check_depth(depth)
        if depth.intrinsics is None:
            raise ValueError("this depth carries no intrinsics (only UniDepthV2 predicts a camera): use "
                             "'Camera Intrinsics' to give one")
        k = depth.intrinsics.float()
        conf = _unit_confidence(depth)
        if conf is None:
            conf = torch.ones_like(depth.depth)
        w = depth.depth.shape[-1]
        lines = [f"#{i}: fx={k[i, 0, 0]:.2f} fy={k[i, 1, 1]:.2f} cx={k[i, 0, 2]:.2f} cy={k[i, 1, 2]:.2f} px, "
                 f"horizontal FoV {2 * torch.atan(w / (2 * k[i, 0, 0])).rad2deg():.1f} deg"
                 for i in range(k.shape[0])]
        return (k, conf, "\n".join(lines))


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
        _check_depth(depth)
        d = depth.depth.float().cpu()
        b, h, w = d.shape
        if image.shape[0] not in (1, b):
            raise ValueError(f"image batch {image.shape[0]} does not match the depth batch {b}")
        if camera is not None:
            points = pointcloud.depth_to_points(d, torch.as_tensor(camera).float().cpu())
            how = "connected camera"
        elif depth.points is not None:
            points = depth.points.float().cpu()
            how = "model's own 3-D points"
        elif depth.intrinsics is not None:
            points = pointcloud.depth_to_points(d, depth.intrinsics.float().cpu())
            how = "predicted camera"
        else:
            raise ValueError("camera: this depth has no intrinsics (only UniDepthV2 predicts them); connect a "
                             "'Camera Intrinsics' node")
        conf = _unit_confidence(depth)
        folder, base, counter, _subfolder = seam.save_path(filename_prefix, w, h)
        paths = []
        for i in range(b):
            seam.check_interrupt()
            xyz, rgb, c = pointcloud.point_cloud(points[i], image[min(i, image.shape[0] - 1)],
                                                 None if conf is None else conf[i].cpu(), stride=int(stride),
                                                 max_depth=float(max_depth_m), min_confidence=float(min_confidence),
                                                 coordinates=coordinates)
            path = os.path.join(folder, f"{base}_{counter + i:05}_.ply")
            pointcloud.write_ply(path, xyz, rgb, c, comment=f"BokehDepth point cloud ({how}, {coordinates} axes, m)")
            paths.append(path)
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
