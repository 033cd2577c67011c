"""Geometry nodes (cameras, Depth Camera & Confidence, Save Point Cloud / Mesh) without ComfyUI."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from support import load_extension

EXT = load_extension()
N = EXT.NODE_CLASS_MAPPINGS
DepthMap = EXT.bokehdepth_core.types.DepthMap
cam = EXT.bokehdepth_core.camera
pointcloud = EXT.bokehdepth_core.pointcloud
mesh_files = EXT.bokehdepth_core.mesh_files


def test_camera_nodes_show_only_what_they_use():
    req = {name: list(N[name].INPUT_TYPES()["required"]) for name in
           ("BokehDepthCameraIntrinsics", "BokehDepthCameraFromPhoto", "BokehDepthCameraManual", "BokehDepthCameraGuess")}
    assert req == {"BokehDepthCameraIntrinsics": ["focal_length_mm", "sensor_width_mm", "width", "height"],
                   "BokehDepthCameraFromPhoto": ["photo"],
                   "BokehDepthCameraManual": ["fx", "fy", "cx", "cy", "width", "height"],
                   "BokehDepthCameraGuess": ["width", "height"]}


@pytest.mark.parametrize("node, args, expect_fx", [
    ("BokehDepthCameraIntrinsics", (36.0, 36.0, 60, 40), 36.0 / 36.0 * 60),  # 35 mm-equivalent
    ("BokehDepthCameraIntrinsics", (50.0, 24.0, 60, 40), 50.0 / 24.0 * 60),
    ("BokehDepthCameraManual", (77.0, 70.0, -1.0, 5.0, 60, 40), 77.0),
    ("BokehDepthCameraGuess", (60, 40), 42.0),
])
def test_camera_nodes(node, args, expect_fx):
    k, summary = N[node]().make(*args, image=torch.rand(3, 40, 60, 3))
    assert k.shape == (3, 3, 3) and float(k[2, 0, 0]) == pytest.approx(expect_fx)
    assert f"fx={expect_fx:.2f}" in summary and summary.count("#") == 3 and "FoV" in summary
    if node == "BokehDepthCameraManual":
        assert k[0].tolist() == [[77.0, 0.0, 30.0], [0.0, 70.0, 5.0], [0.0, 0.0, 1.0]]


def test_camera_from_photo_exif(tmp_path, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_INPUT_DIR", str(tmp_path))
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0xA405] = 24  # FocalLengthIn35mmFilm
    exif_ifd[0x920A] = 6.0  # FocalLength
    Image.new("RGB", (90, 60)).save(tmp_path / "photo.jpg", exif=exif)
    np.save(tmp_path / "depth.npy", np.ones((2, 2), np.float32))
    node = N["BokehDepthCameraFromPhoto"]
    assert node.INPUT_TYPES()["required"]["photo"] == (["photo.jpg"], node.INPUT_TYPES()["required"]["photo"][1])
    assert node.INPUT_TYPES()["required"]["photo"][1]["image_upload"] is True
    k, summary = node().make("photo.jpg")
    assert float(k[0, 0, 0]) == pytest.approx(24 / 36 * 90) and "photo.jpg" in summary and "90x60" in summary
    k, summary = node().make("photo.jpg", image=torch.rand(2, 30, 45, 3))  # scaled to the connected image
    assert k.shape == (2, 3, 3) and float(k[1, 0, 0]) == pytest.approx(24 / 36 * 45)
    assert node.IS_CHANGED("photo.jpg") and node.VALIDATE_INPUTS("nope.jpg") is not True


def test_depth_camera_node():
    k = cam.intrinsics_matrix(30.0, 30.0, 8.0, 6.0).expand(2, 3, 3).clone()
    conf = torch.rand(2, 12, 16) * 5
    k_out, mask, text = N["BokehDepthDepthCamera"]().split(DepthMap(depth=torch.ones(2, 12, 16), confidence=conf,
                                                                    intrinsics=k))
    assert torch.equal(k_out, k) and mask.shape == (2, 12, 16) and float(mask[1].max()) == pytest.approx(1.0)
    fov = 2 * np.degrees(np.arctan(16 / 60))
    assert f"FoV {fov:.1f}" in text and text.count("\n") == 1
    _, ones, _ = N["BokehDepthDepthCamera"]().split(DepthMap(depth=torch.ones(1, 4, 4), intrinsics=k[:1]))
    assert torch.equal(ones, torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="intrinsics"):
        N["BokehDepthDepthCamera"]().split(DepthMap(depth=torch.ones(1, 4, 4)))
    with pytest.raises(ValueError, match="METRIC_DEPTH"):
        N["BokehDepthDepthCamera"]().split(torch.ones(1, 4, 4))


def test_save_point_cloud_node(tmp_path, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_OUTPUT_DIR", str(tmp_path))
    k = cam.intrinsics_matrix(20.0, 20.0, 8.0, 6.0).expand(2, 3, 3).clone()
    depth = DepthMap(depth=torch.full((2, 12, 16), 2.0), confidence=torch.rand(2, 12, 16), intrinsics=k)
    img = torch.rand(2, 12, 16, 3)
    node = N["BokehDepthSavePointCloud"]()
    out = node.save(depth, img, "clouds/test", "ply", 2, 0.0, 0.0, "opencv")
    shown = out["ui"]["text"][0].split("\n")
    assert shown == ["clouds/test_00001_.ply", "clouds/test_00002_.ply"] and out["result"][0] == shown[0]
    paths = [str(tmp_path / p) for p in shown]
    back = mesh_files.load(paths[1])
    assert len(back.vertices) == 6 * 8
    want = pointcloud.depth_to_points(depth.depth, k)[1, ::2, ::2].reshape(-1, 3).numpy()
    np.testing.assert_allclose(np.asarray(back.vertices), want, rtol=1e-6)
    assert len(mesh_files.ply_property(paths[1], "confidence")) == 6 * 8
    # the model's own points (UniDepthV2) win over recomputing from the predicted camera; GLB for Preview 3D
    depth.points = torch.ones(2, 12, 16, 3)
    rel = node.save(depth, img, "clouds/own", "glb", 1, 0.0, 0.0, "opengl")["result"][0]
    assert rel == "clouds/own_00001_.glb"
    assert set(np.asarray(mesh_files.load(tmp_path / rel).vertices)[:, 1].tolist()) == {-1.0}
    with pytest.raises(ValueError, match="camera"):
        node.save(DepthMap(depth=torch.ones(1, 4, 4)), torch.rand(1, 4, 4, 3), "x", "ply", 1, 0.0, 0.0, "opencv")


def test_save_mesh_node_glb_for_preview_3d(tmp_path, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_OUTPUT_DIR", str(tmp_path))
    depth = torch.full((1, 12, 16), 2.0)
    depth[0, :, 8:] = 5.0
    dm = DepthMap(depth=depth)
    node = N["BokehDepthSaveMesh"]
    assert list(node.INPUT_TYPES()["optional"]) == ["camera"]
    camera = cam.intrinsics_matrix(20.0, 20.0, 8.0, 6.0)
    out = node().save(dm, torch.rand(1, 12, 16, 3), "m/scene", "glb", 1, 0.0, 0.0, "opengl", 0.05, 0.0, camera=camera)
    assert out["result"][0] == "m/scene_00001_.glb" and out["ui"]["text"] == ["m/scene_00001_.glb"]
    back = mesh_files.load(tmp_path / "m" / "scene_00001_.glb")
    assert len(back.faces) == 2 * 11 * 15 - 2 * 11  # no wall across the depth step
    assert np.asarray(back.visual.vertex_colors).shape == (len(back.vertices), 4)
    with pytest.raises(ValueError, match="no triangle"):
        node().save(DepthMap(depth=-torch.ones(1, 4, 4)), torch.rand(1, 4, 4, 3), "m/x", "glb", 1, 0.0, 0.0,
                    "opengl", 0.05, 0.0, camera=camera)
