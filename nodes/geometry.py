"""Geometry nodes: pinhole cameras (from the lens, a photo's EXIF, by hand, or the authors' guess),
depth -> camera/confidence, and 3-D outputs (coloured point clouds and meshes, GLB or PLY) that
ComfyUI's Preview 3D node shows."""

from __future__ import annotations

import os

import torch

from ..bokehdepth_core import camera as cam
from ..bokehdepth_core import exif, mesh, pointcloud
from . import comfy_seam as seam
from .common import CAMERA, DEPTH, category, depth_map, finite, image_size, image_size_inputs, photo_input, saved_ui

_CAMERA_OUT = (CAMERA, "STRING")
_CAMERA_NAMES = ("camera", "summary")
_CAMERA_TIPS = ("Intrinsics [B,3,3] in pixels (one per image of the connected batch).",
                "fx, fy, cx, cy in pixels, field of view, and where they came from.")
_SIZE_IMAGE = {"image": ("IMAGE", {"tooltip": "Take width, height and batch size from this image."})}


class _Camera:
    CATEGORY = category("Geometry")
    FUNCTION = "make"
    RETURN_TYPES = _CAMERA_OUT
    RETURN_NAMES = _CAMERA_NAMES
    OUTPUT_TOOLTIPS = _CAMERA_TIPS

    @staticmethod
    def _make(source: str, image, width, height, **values):
        b, width, height = image_size(image, width, height)
        k, note = cam.intrinsics_for(source, width, height, b, **values)
        finite("Camera Intrinsics", camera=k)
        return (k, f"{cam.describe_intrinsics(k, width, height)} ({note})")


class CameraIntrinsics(_Camera):
    DESCRIPTION = ("Pinhole camera intrinsics [B,3,3] in pixels from the lens: f_px = focal_length / sensor_width "
                   "x W. Keep the sensor width at 36 mm for a 35 mm-equivalent focal length. For UniDepthV2 and "
                   "3-D outputs; leave a model's camera input unconnected to let UniDepthV2 predict it instead.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "focal_length_mm": ("FLOAT", {"default": 35.0, "min": 0.1, "max": 5000.0, "step": 0.1,
                                          "tooltip": "Focal length in mm (35 mm-equivalent when the sensor width is 36)."}),
            "sensor_width_mm": ("FLOAT", {"default": 36.0, "min": 0.1, "max": 100.0, "step": 0.01,
                                          "tooltip": "Sensor width in mm; 36 = full frame / 35 mm-equivalent focal length."}),
            **image_size_inputs(),
        }, "optional": dict(_SIZE_IMAGE)}

    def make(self, focal_length_mm, sensor_width_mm, width, height, image=None):
        return self._make("sensor", image, width, height, focal_mm=focal_length_mm, sensor_width_mm=sensor_width_mm)


class CameraFromPhoto(_Camera):
    DESCRIPTION = ("Pinhole camera intrinsics from a photo's EXIF (35 mm-equivalent focal length, or focal length + "
                   "sensor size), picked like Load Image picks it; scaled to the connected image's size.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"photo": photo_input()}, "optional": dict(_SIZE_IMAGE)}

    @classmethod
    def IS_CHANGED(cls, photo, **_):
        return seam.input_change_key(photo)

    @classmethod
    def VALIDATE_INPUTS(cls, photo, **_):
        return seam.validate_input_file(photo, "photo")

    def make(self, photo, image=None):
        path = seam.input_path(photo, "photo")
        info = exif.read_lens_exif(path)
        return self._make("exif", image, info.width, info.height, photo=path)


class CameraManual(_Camera):
    DESCRIPTION = "Pinhole camera intrinsics typed in pixels: fx, fy and the principal point (-1 = image centre)."

    @classmethod
    def INPUT_TYPES(cls):
        px = {"min": 0.01, "max": 1e6, "step": 0.1}
        centre = {"default": -1.0, "min": -1.0, "max": 1e6, "step": 0.1}
        return {"required": {
            "fx": ("FLOAT", {"default": 1000.0, **px, "tooltip": "Focal length along x in pixels."}),
            "fy": ("FLOAT", {"default": 1000.0, **px, "tooltip": "Focal length along y in pixels."}),
            "cx": ("FLOAT", {**centre, "tooltip": "Principal point x in pixels; -1 = image centre."}),
            "cy": ("FLOAT", {**centre, "tooltip": "Principal point y in pixels; -1 = image centre."}),
            **image_size_inputs(),
        }, "optional": dict(_SIZE_IMAGE)}

    def make(self, fx, fy, cx, cy, width, height, image=None):
        return self._make("manual", image, width, height, fx=fx, fy=fy, cx=cx, cy=cy)


class CameraGuess(_Camera):
    DESCRIPTION = ("The BokehDepth authors' guessed camera: fx = fy = 0.7 x width, principal point at the centre "
                   "(about 71 degrees horizontal field of view).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": image_size_inputs(), "optional": dict(_SIZE_IMAGE)}

    def make(self, width, height, image=None):
        return self._make("guess", image, width, height)


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
        return {"required": {"depth": (DEPTH, {"tooltip": "Depth from 'BokehDepth Estimate Depth' with a UniDepthV2 "
                                                          "model."})}}

    def split(self, depth):
        depth = depth_map(depth)
        if depth.intrinsics is None:
            raise ValueError("this depth carries no intrinsics (only UniDepthV2 predicts a camera): use "
                             "a BokehDepth Camera node (from Lens, from Photo EXIF, Manual) to give one")
        k = depth.intrinsics.float()
        conf = pointcloud.unit_confidence(depth)
        h, w = depth.depth.shape[-2:]
        finite("Depth Camera & Confidence", camera=k, confidence=conf)
        return (k, torch.ones_like(depth.depth) if conf is None else conf, cam.describe_intrinsics(k, w, h))


def _3d_inputs(what: str, prefix: str) -> dict:
    return {
        "depth": (DEPTH, {"tooltip": f"Metric depth (one {what} per batch item)."}),
        "image": ("IMAGE", {"tooltip": "Colours (resized to the depth size if needed)."}),
        "filename_prefix": ("STRING", {"default": f"BokehDepth/{prefix}",
                                       "tooltip": "File name prefix, sub-folders allowed (like Save Image)."}),
        "format": (["glb", "ply"], {"default": "glb", "tooltip": "glb: glTF binary, shown by ComfyUI's Preview 3D and "
                                    "opened by Blender, three.js, Windows 3D Viewer. ply: binary PLY (MeshLab, "
                                    "CloudCompare, Open3D)."}),
        "stride": ("INT", {"default": 1, "min": 1, "max": 64,
                           "tooltip": "Keep every n-th pixel in x and y (2 = a quarter of the points)."}),
        "max_depth_m": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100000.0, "step": 0.1,
                                  "tooltip": "Drop what lies farther than this (metres); 0 = keep all."}),
        "min_confidence": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                     "tooltip": "Drop pixels whose confidence (scaled to 0..1 per image) is below "
                                                "this; 0 = keep all."}),
        "coordinates": (["opengl", "opencv"], {"default": "opengl",
                        "tooltip": "opengl: y up, camera looks down -z (glTF, Blender, MeshLab show it upright). "
                                   "opencv: y down, z forward."}),
    }


_CAMERA_IN = {"camera": (CAMERA, {"tooltip": "Intrinsics to unproject with; overrides the ones in the depth."})}


class _Save3D:
    CATEGORY = category("Geometry")
    FUNCTION = "save"
    OUTPUT_NODE = True
    _FILE_3D = seam.file_3d_type()  # newer ComfyUI: also hand the file over as its 3-D type
    RETURN_TYPES = ("STRING",) + (("FILE_3D",) if _FILE_3D else ())
    RETURN_NAMES = ("model_file",) + (("model_3d",) if _FILE_3D else ())
    OUTPUT_TOOLTIPS = ("The first file, relative to the output folder: connect it to ComfyUI's Preview 3D "
                       "(model_file) to look around in the scene.",) + (("The first file as a 3-D file.",)
                                                                     if _FILE_3D else ())

    @staticmethod
    def _paths(depth, filename_prefix: str, fmt: str) -> list[str]:
        if fmt not in ("glb", "ply"):
            raise ValueError(f"format must be glb or ply, got {fmt!r}")
        b, h, w = depth_map(depth).depth.shape
        folder, base, counter, _subfolder = seam.save_path(filename_prefix, w, h)
        return [os.path.join(folder, f"{base}_{counter + i:05}_.{fmt}") for i in range(b)]

    def _done(self, paths: list[str]) -> dict:
        first = seam.output_relative(paths[0])
        extra = (self._FILE_3D(paths[0]),) if self._FILE_3D else ()
        return saved_ui(paths, result=(first,) + extra)


class SavePointCloud(_Save3D):
    DESCRIPTION = ("Save metric depth as a coloured 3-D point cloud (GLB or PLY with a per-point confidence) in the "
                   "output folder and show the files written. Uses the connected camera, else the model's own 3-D "
                   "points / predicted camera (UniDepthV2).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _3d_inputs("point cloud", "points"), "optional": dict(_CAMERA_IN)}

    def save(self, depth, image, filename_prefix, format, stride, max_depth_m, min_confidence, coordinates,  # noqa: A002
             camera=None):
        paths = self._paths(depth, filename_prefix, format)
        pointcloud.write_point_clouds(paths, depth, image, camera, stride=stride, max_depth=max_depth_m,
                                      min_confidence=min_confidence, coordinates=coordinates,
                                      callback=seam.Progress(len(paths)).callback)
        return self._done(paths)


class SaveMesh(_Save3D):
    DESCRIPTION = ("Save metric depth as a coloured triangle mesh (GLB or PLY) in the output folder: one vertex "
                   "per pixel, two triangles per pixel square, cut where depth jumps (object edges) so foreground "
                   "and background stay apart. Connect model_file to ComfyUI's Preview 3D to look at it.")

    @classmethod
    def INPUT_TYPES(cls):
        req = _3d_inputs("mesh", "mesh")
        req["max_depth_jump"] = ("FLOAT", {"default": 0.05, "min": 0.0, "max": 10.0, "step": 0.01,
                                           "tooltip": "Cut triangles whose corners' depths differ by more than this "
                                                      "fraction of the nearest one (0.05 = 5%); 0 = no cut."})
        req["max_edge_m"] = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100000.0, "step": 0.01,
                                       "tooltip": "Cut triangles with an edge longer than this (metres); 0 = no cut."})
        return {"required": req, "optional": dict(_CAMERA_IN)}

    def save(self, depth, image, filename_prefix, format, stride, max_depth_m, min_confidence, coordinates,  # noqa: A002
             max_depth_jump, max_edge_m, camera=None):
        paths = self._paths(depth, filename_prefix, format)
        mesh.write_meshes(paths, depth, image, camera, stride=stride, max_depth=max_depth_m,
                          min_confidence=min_confidence, max_depth_jump=max_depth_jump, max_edge=max_edge_m,
                          coordinates=coordinates, callback=seam.Progress(len(paths)).callback)
        return self._done(paths)


NODE_CLASS_MAPPINGS = {
    "BokehDepthCameraIntrinsics": CameraIntrinsics,
    "BokehDepthCameraFromPhoto": CameraFromPhoto,
    "BokehDepthCameraManual": CameraManual,
    "BokehDepthCameraGuess": CameraGuess,
    "BokehDepthDepthCamera": DepthCamera,
    "BokehDepthSavePointCloud": SavePointCloud,
    "BokehDepthSaveMesh": SaveMesh,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "BokehDepthCameraIntrinsics": "BokehDepth Camera from Lens",
    "BokehDepthCameraFromPhoto": "BokehDepth Camera from Photo EXIF",
    "BokehDepthCameraManual": "BokehDepth Camera (Manual)",
    "BokehDepthCameraGuess": "BokehDepth Camera (Authors' Guess)",
    "BokehDepthDepthCamera": "BokehDepth Depth Camera & Confidence",
    "BokehDepthSavePointCloud": "BokehDepth Save Point Cloud",
    "BokehDepthSaveMesh": "BokehDepth Save Mesh",
}
