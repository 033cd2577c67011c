"""Geometry nodes (Camera Intrinsics, Depth Camera & Confidence, Save Point Cloud) without ComfyUI."""

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


def _make(mode, **kw):
    args = dict(width=60, height=40, focal_length_35mm=36.0, focal_length_mm=50.0, sensor_width_mm=24.0, fx=77.0,
                fy=70.0, cx=-1.0, cy=5.0)
    args.update(kw)
    return N["BokehDepthCameraIntrinsics"]().make(mode, **args)


@pytest.mark.parametrize("mode, expect_fx", [
    ("35mm-equivalent focal length", 36.0 / 36.0 * 60),
    ("focal length + sensor width", 50.0 / 24.0 * 60),
    ("manual fx fy cx cy", 77.0),
    ("authors' guess (fx = 0.7 W)", 42.0),
])
def test_camera_intrinsics_modes(mode, expect_fx):
    k, summary = _make(mode, image=torch.rand(3, 40, 60, 3))
    assert k.shape == (3, 3, 3) and float(k[2, 0, 0]) == pytest.approx(expect_fx)
    assert f"fx={expect_fx:.2f}" in summary and summary.count("#") == 3 and "FoV" in summary
    if mode.startswith("manual"):
        assert k[0].tolist() == [[77.0, 0.0, 30.0], [0.0, 70.0, 5.0], [0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="mode"):
        _make("fisheye")


def test_camera_intrinsics_from_exif(tmp_path, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_INPUT_DIR", str(tmp_path))
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0xA405] = 24  # FocalLengthIn35mmFilm
    exif_ifd[0x920A] = 6.0  # FocalLength
    Image.new("RGB", (90, 60)).save(tmp_path / "photo.jpg", exif=exif)
    k, summary = _make("photo EXIF", width=90, height=60, photo="photo.jpg")
    assert float(k[0, 0, 0]) == pytest.approx(24 / 36 * 90) and "photo.jpg" in summary
    assert N["BokehDepthCameraIntrinsics"].IS_CHANGED("photo EXIF", photo="photo.jpg")
    with pytest.raises(ValueError, match="photo"):
        _make("photo EXIF", width=90, height=60)


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
    out = node.save(depth, img, "clouds/test", 2, 0.0, 0.0, "opencv")
    paths = out["result"][0].split("\n")
    assert out["ui"]["text"] == [out["result"][0]]
    assert len(paths) == 2 and all(p.endswith(".ply") and os.path.isfile(p) for p in paths)
    assert os.path.dirname(paths[0]) == str(tmp_path / "clouds")
    back = pointcloud.read_ply(paths[1])
    assert len(back["x"]) == 6 * 8
    want = pointcloud.depth_to_points(depth.depth, k)[1, ::2, ::2].reshape(-1, 3).numpy()
    np.testing.assert_allclose(np.stack([back["x"], back["y"], back["z"]], 1), want, rtol=1e-6)
    # the model's own points (UniDepthV2) win over recomputing from the predicted camera
    depth.points = torch.ones(2, 12, 16, 3)
    back = pointcloud.read_ply(node.save(depth, img, "clouds/own", 1, 0.0, 0.0, "opengl")["result"][0].split("\n")[0])
    assert set(back["y"].tolist()) == {-1.0}
    with pytest.raises(ValueError, match="camera"):
        node.save(DepthMap(depth=torch.ones(1, 4, 4)), torch.rand(1, 4, 4, 3), "x", 1, 0.0, 0.0, "opencv")
