"""Point clouds: unprojection against the pinhole equations, binary PLY round trips, the
'Save Point Cloud (PLY)' node."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bokehdepth_core import pointcloud
from bokehdepth_core import camera as cam


def test_depth_to_points_matches_pinhole_equations():
    torch.manual_seed(0)
    depth = torch.rand(2, 5, 7) * 10 + 1
    k = torch.stack([cam.intrinsics_matrix(20.0, 22.0, 3.1, 2.4)[0], cam.intrinsics_matrix(9.0, 8.0, 4.0, 1.0)[0]])
    k[1, 0, 1] = 0.5  # skew
    pts = pointcloud.depth_to_points(depth, k)
    for b in range(2):
        fx, s, cx, fy, cy = k[b, 0, 0], k[b, 0, 1], k[b, 0, 2], k[b, 1, 1], k[b, 1, 2]
        for v in range(5):
            for u in range(7):
                z = depth[b, v, u]
                y = (v + 0.5 - cy) / fy
                x = (u + 0.5 - cx - s * y) / fx
                want = [float(x * z), float(y * z), float(z)]
                assert pts[b, v, u].tolist() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_points_agree_with_camera_rays():
    k = cam.intrinsics_matrix(30.0, 30.0, 16.0, 12.0)
    rays = cam.camera_rays(k, 24, 32)[0].permute(1, 2, 0)
    depth = torch.full((1, 24, 32), 3.0)
    pts = pointcloud.depth_to_points(depth, k)[0]
    torch.testing.assert_close(pts, rays / rays[..., 2:] * 3.0, rtol=1e-5, atol=1e-5)


def test_point_cloud_filters_and_ply_round_trip(tmp_path):
    torch.manual_seed(1)
    pts = torch.randn(6, 8, 3)
    pts[..., 2] = torch.linspace(-1, 20, 48).reshape(6, 8)
    pts[0, 0, 0] = float("nan")
    colors = torch.rand(6, 8, 3)
    conf = torch.rand(6, 8)
    xyz, rgb, c = pointcloud.point_cloud(pts, colors, conf, max_depth=15.0, min_confidence=0.2)
    keep = torch.isfinite(pts).all(-1) & (pts[..., 2] > 0) & (pts[..., 2] <= 15) & (conf >= 0.2)
    assert len(xyz) == int(keep.sum()) > 0
    np.testing.assert_allclose(xyz, pts[keep].numpy())
    np.testing.assert_array_equal(rgb, (colors[keep] * 255).round().to(torch.uint8).numpy())
    gl, _, _ = pointcloud.point_cloud(pts, coordinates="opengl", max_depth=15.0)
    cv, _, _ = pointcloud.point_cloud(pts, coordinates="opencv", max_depth=15.0)
    np.testing.assert_allclose(gl, cv * np.array([1, -1, -1], dtype=np.float32))
    sub, _, _ = pointcloud.point_cloud(pts, stride=2)
    assert len(sub) <= 12

    path = pointcloud.write_ply(tmp_path / "a.ply", xyz, rgb, c, comment="test cloud")
    raw = open(path, "rb").read()
    head = raw[: raw.index(b"end_header\n") + len(b"end_header\n")].decode("ascii")
    assert head.startswith("ply\nformat binary_little_endian 1.0\ncomment test cloud\n")
    assert f"element vertex {len(xyz)}\n" in head and "property uchar red" in head
    assert len(raw) - len(head) == len(xyz) * (12 + 3 + 4)
    back = pointcloud.read_ply(path)
    np.testing.assert_array_equal(np.stack([back["x"], back["y"], back["z"]], 1), xyz)
    np.testing.assert_array_equal(np.stack([back["red"], back["green"], back["blue"]], 1), rgb)
    np.testing.assert_array_equal(back["confidence"], c)


def test_bad_input():
    with pytest.raises(ValueError, match="intrinsics"):
        pointcloud.depth_to_points(torch.ones(1, 4, 4), torch.eye(2))
    with pytest.raises(ValueError, match="focal"):
        pointcloud.depth_to_points(torch.ones(1, 4, 4), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="batch"):
        pointcloud.depth_to_points(torch.ones(2, 4, 4), torch.eye(3).expand(3, 3, 3))
    with pytest.raises(ValueError, match="stride"):
        pointcloud.point_cloud(torch.ones(4, 4, 3), stride=0)
    with pytest.raises(ValueError, match="coordinates"):
        pointcloud.point_cloud(torch.ones(4, 4, 3), coordinates="blender")
    with pytest.raises(ValueError, match="colors"):
        pointcloud.write_ply(os.devnull, np.zeros((3, 3)), np.zeros((2, 3), np.uint8))
