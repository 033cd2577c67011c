"""Camera and point-cloud nodes: Camera Intrinsics in each of its modes (lens values, EXIF, manual,
the authors' guess) and Save Point Cloud."""

import os

import numpy as np
import pytest
import torch

from bokehdepth_core import camera as cam
from bokehdepth_core import pointcloud


@pytest.mark.parametrize("mode, expect_fx", [
    ("focal length + sensor width", 50.0 / 24.0 * 60),
    ("manual fx fy cx cy", 77.0),
    ("authors' guess (fx = 0.7 W)", 42.0),
])
def test_camera_intrinsics_modes(node_classes, mode, expect_fx):
    k, _ = node_classes["BokehDepthCameraIntrinsics"]().make(mode, 60, 40, 36.0, 50.0, 24.0, 77.0, 70.0, -1.0, 5.0,
                                                             image=torch.rand(3, 40, 60, 3))
    assert k.shape == (3, 3, 3) and float(k[2, 0, 0]) == pytest.approx(expect_fx)
    if mode.startswith("manual"):
        assert k[0].tolist() == [[77.0, 0.0, 30.0], [0.0, 70.0, 5.0], [0.0, 0.0, 1.0]]


def test_camera_intrinsics_from_exif(tmp_path, monkeypatch, node_classes):
    from PIL import Image

    monkeypatch.setenv("BOKEHDEPTH_INPUT_DIR", str(tmp_path))
    img = Image.new("RGB", (90, 60))
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0xA405] = 24  # FocalLengthIn35mmFilm
    exif_ifd[0x920A] = 6.0  # FocalLength
    img.save(tmp_path / "photo.jpg", exif=exif)
    k, summary = node_classes["BokehDepthCameraIntrinsics"]().make("photo EXIF", 90, 60, 36.0, 50.0, 36.0, 1.0, 1.0,
                                                                   -1.0, -1.0, photo="photo.jpg")
    assert float(k[0, 0, 0]) == pytest.approx(24 / 36 * 90) and "photo.jpg" in summary
    with pytest.raises(ValueError, match="photo"):
        node_classes["BokehDepthCameraIntrinsics"]().make("photo EXIF", 90, 60, 36.0, 50.0, 36.0, 1.0, 1.0, -1.0, -1.0)
    assert cam.focal_px(100, focal_mm=8.0, sensor_width_mm=16.0) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="focal"):
        cam.focal_px(100)


def test_save_point_cloud_node(tmp_path, monkeypatch, node_classes, ext):
    monkeypatch.setenv("BOKEHDEPTH_OUTPUT_DIR", str(tmp_path))
    import importlib

    types_mod = importlib.import_module(ext.__name__ + ".bokehdepth_core.types")
    DepthMap = types_mod.DepthMap
    k = cam.intrinsics_matrix(20.0, 20.0, 8.0, 6.0).expand(2, 3, 3).clone()
    depth = DepthMap(depth=torch.full((2, 12, 16), 2.0), confidence=torch.rand(2, 12, 16), intrinsics=k)
    img = torch.rand(2, 12, 16, 3)
    node = node_classes["BokehDepthSavePointCloud"]()
    out = node.save(depth, img, "clouds/test", 2, 0.0, 0.0, "opencv")
    paths = out["result"][0].split("\n")
    assert len(paths) == 2 and all(p.endswith(".ply") and os.path.isfile(p) for p in paths)
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
