"""Point clouds: unprojection against the pinhole equations, which points a depth map gives,
GLB / PLY files read back with trimesh."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from bokehdepth_core import mesh_files, pointcloud
from bokehdepth_core import camera as cam
from bokehdepth_core.types import DepthMap


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

    path = mesh_files.save_points(tmp_path / "a.ply", xyz, rgb, c)
    raw = open(path, "rb").read()
    head = raw[: raw.index(b"end_header\n")].decode("ascii")
    assert "format binary_little_endian 1.0" in head and f"element vertex {len(xyz)}\n" in head
    assert "property float confidence" in head
    back = mesh_files.load(path)
    np.testing.assert_array_equal(np.asarray(back.vertices, np.float32), xyz)
    np.testing.assert_array_equal(back.colors[:, :3], rgb)
    np.testing.assert_array_equal(mesh_files.ply_property(path, "confidence"), c)
    glb = mesh_files.load(mesh_files.save_points(tmp_path / "a.glb", xyz, rgb))
    np.testing.assert_array_equal(np.asarray(glb.vertices, np.float32), xyz)
    np.testing.assert_array_equal(glb.colors[:, :3], rgb)


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
        mesh_files.save_points(os.devnull + ".ply", np.zeros((3, 3)), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\.glb or \.ply"):
        mesh_files.save_points("cloud.obj", np.zeros((3, 3)))


def test_points_for_prefers_camera_then_own_points_then_intrinsics():
    k = cam.intrinsics_matrix(20.0, 20.0, 8.0, 6.0)
    dm = DepthMap(depth=torch.full((1, 12, 16), 2.0), intrinsics=k)
    pts, how = pointcloud.points_for(dm)
    assert how == "predicted camera" and torch.allclose(pts, pointcloud.depth_to_points(dm.depth, k))
    dm.points = torch.ones(1, 12, 16, 3)
    assert pointcloud.points_for(dm)[1] == "model's own 3-D points"
    other = cam.intrinsics_matrix(10.0, 10.0, 8.0, 6.0)
    pts, how = pointcloud.points_for(dm, other)
    assert how == "connected camera" and torch.allclose(pts, pointcloud.depth_to_points(dm.depth, other))
    with pytest.raises(ValueError, match="Camera Intrinsics"):
        pointcloud.points_for(DepthMap(depth=torch.ones(1, 4, 4)))


def test_unit_confidence():
    assert pointcloud.unit_confidence(DepthMap(depth=torch.ones(1, 2, 2))) is None
    conf = torch.tensor([[[1.0, 2.0], [4.0, 0.0]], [[0.5, 0.25], [0.0, 0.0]]])
    out = pointcloud.unit_confidence(DepthMap(depth=torch.ones(2, 2, 2), confidence=conf))
    assert out.tolist() == [[[0.25, 0.5], [1.0, 0.0]], [[1.0, 0.5], [0.0, 0.0]]]


def test_write_point_clouds(tmp_path):
    k = cam.intrinsics_matrix(20.0, 20.0, 8.0, 6.0).expand(2, 3, 3)
    dm = DepthMap(depth=torch.full((2, 12, 16), 2.0), confidence=torch.rand(2, 12, 16), intrinsics=k)
    paths = [tmp_path / "a.ply", tmp_path / "b.ply"]
    done = []
    out = pointcloud.write_point_clouds(paths, dm, torch.rand(1, 12, 16, 3), stride=2,
                                        callback=lambda i, n: done.append((i, n)))
    assert out == [str(p) for p in paths] and done == [(1, 2), (2, 2)]
    back = mesh_files.load(paths[1])
    want = pointcloud.depth_to_points(dm.depth, k)[1, ::2, ::2].reshape(-1, 3).numpy()
    np.testing.assert_allclose(np.asarray(back.vertices), want, rtol=1e-6)
    assert mesh_files.ply_property(paths[1], "confidence").max() <= 1.0
    with pytest.raises(ValueError, match="batch"):
        pointcloud.write_point_clouds(paths, dm, torch.rand(3, 12, 16, 3))
