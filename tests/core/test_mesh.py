"""Meshes from depth: grid triangulation, cuts at depth jumps and long edges, winding, colours, and
GLB / PLY files read back with trimesh."""

import numpy as np
import pytest
import torch

pytest.importorskip("trimesh", reason="trimesh is a dependency: pip install trimesh")

from bokehdepth_core import camera as cam  # noqa: E402
from bokehdepth_core import mesh, mesh_files, pointcloud  # noqa: E402
from bokehdepth_core.types import DepthMap  # noqa: E402


def _step_scene(h=8, w=10):
    depth = torch.full((1, h, w), 2.0)
    depth[0, :, w // 2:] = 6.0  # a wall behind the left half
    k = cam.intrinsics_matrix(10.0, 10.0, w / 2, h / 2)
    return DepthMap(depth=depth, intrinsics=k, confidence=torch.linspace(0, 1, h * w).reshape(1, h, w))


def test_grid_is_two_triangles_per_quad_cut_at_the_depth_jump():
    dm = _step_scene()
    pts = pointcloud.depth_to_points(dm.depth, dm.intrinsics)[0]
    verts, faces, _ = mesh.grid_mesh(pts, max_depth_jump=0.0)
    assert len(verts) == 80 and len(faces) == 2 * 7 * 9
    verts, faces, _ = mesh.grid_mesh(pts, max_depth_jump=0.05)
    assert len(faces) == 2 * 7 * 9 - 2 * 7  # the column of quads across the jump is gone
    z = verts[faces, 2]
    assert np.all(z.max(1) - z.min(1) <= 0.05 * z.min(1))
    np.testing.assert_array_equal(np.sort(verts, axis=0), np.sort(pts.reshape(-1, 3).numpy(), axis=0))


def test_triangles_face_the_camera_in_both_axis_conventions():
    dm = _step_scene()
    pts = pointcloud.depth_to_points(dm.depth, dm.intrinsics)[0]
    for coords, toward in (("opencv", -1.0), ("opengl", 1.0)):
        verts, faces, _ = mesh.grid_mesh(pts, coordinates=coords)
        tri = verts[faces]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        assert np.all(np.sign(normals[:, 2]) == toward)
    gl, _, _ = mesh.grid_mesh(pts, coordinates="opengl")
    cv, _, _ = mesh.grid_mesh(pts, coordinates="opencv")
    np.testing.assert_allclose(gl, cv * np.array([1, -1, -1], dtype=np.float32))


def test_invalid_pixels_confidence_depth_and_edge_cuts_drop_triangles():
    dm = _step_scene()
    pts = pointcloud.depth_to_points(dm.depth, dm.intrinsics)[0].clone()
    pts[0, 0] = float("nan")
    _, faces, _ = mesh.grid_mesh(pts, max_depth_jump=0.0)
    assert len(faces) == 2 * 7 * 9 - 1  # the corner pixel belongs to one triangle only
    _, near_only, _ = mesh.grid_mesh(pts, max_depth=3.0, max_depth_jump=0.0)
    _, confident, _ = mesh.grid_mesh(pts, confidence=dm.confidence[0], min_confidence=0.5, max_depth_jump=0.0)
    assert 0 < len(near_only) < len(faces) and 0 < len(confident) < len(faces)
    _, short, _ = mesh.grid_mesh(pts, max_depth_jump=0.0, max_edge=0.3)
    assert 0 < len(short) < len(faces)  # the far wall's edges (0.6 m) are cut, the near ones (0.2-0.28 m) kept
    _, strided, _ = mesh.grid_mesh(pts, stride=2, max_depth_jump=0.0)
    assert len(strided) < len(faces)
    with pytest.raises(ValueError, match="stride"):
        mesh.grid_mesh(pts, stride=0)
    with pytest.raises(ValueError, match="coordinates"):
        mesh.grid_mesh(pts, coordinates="blender")


def test_write_meshes_glb_and_ply_read_back_with_trimesh(tmp_path):
    dm = _step_scene()
    colors = torch.rand(1, 8, 10, 3)
    for ext in ("glb", "ply"):
        out = mesh.write_meshes([tmp_path / f"m.{ext}"], dm, colors, coordinates="opengl")
        back = mesh_files.load(out[0]["path"])
        assert back.faces.shape == (out[0]["faces"], 3) and back.vertices.shape == (out[0]["vertices"], 3)
        verts, faces, rgb = mesh.grid_mesh(pointcloud.depth_to_points(dm.depth, dm.intrinsics)[0], colors[0],
                                           coordinates="opengl")
        np.testing.assert_allclose(np.asarray(back.vertices), verts, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(back.faces), faces)
        np.testing.assert_array_equal(np.asarray(back.visual.vertex_colors)[:, :3], rgb)
    with pytest.raises(ValueError, match="no triangle"):
        mesh.write_meshes([tmp_path / "none.glb"], DepthMap(depth=torch.full((1, 4, 4), -1.0),
                                                           intrinsics=dm.intrinsics), colors)
