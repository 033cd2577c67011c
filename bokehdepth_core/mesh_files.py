"""3-D files through trimesh: coloured meshes and point clouds as GLB (glTF binary) or PLY.

PLY point clouds keep a per-point ``confidence`` property (trimesh writes extra vertex attributes),
so no hand-written writer is needed.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np

FORMATS = ("glb", "ply")

PathLike = Union[str, os.PathLike]


def _trimesh():
    try:
        import trimesh  # noqa: PLC0415 - imported on use so the rest of the core works without it
    except ImportError as exc:
        raise ValueError("3-D files need the trimesh package (pip install trimesh)") from exc
    return trimesh


def format_of(path: PathLike) -> str:
    """``glb`` or ``ply`` from a file name; anything else is an error."""
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"{os.path.basename(os.fspath(path))}: 3-D files are .glb or .ply, got '.{ext}'")
    return ext


def _colors(colors: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
    if colors is None:
        return None
    c = np.asarray(colors)
    if c.shape != (n, 3):
        raise ValueError(f"colors must be [{n},3], got {c.shape}")
    if c.dtype != np.uint8:
        c = (np.clip(c, 0, 1) * 255).round().astype(np.uint8)
    return c


def save_points(path: PathLike, points: np.ndarray, colors: Optional[np.ndarray] = None,
                confidence: Optional[np.ndarray] = None) -> str:
    """A point cloud ``[N,3]`` (+ colours ``[N,3]`` uint8 or 0..1, confidence ``[N]``) as GLB or PLY
    (binary; the confidence becomes a float vertex property in PLY)."""
    tm = _trimesh()
    fmt = format_of(path)
    pts = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    cloud = tm.PointCloud(pts, colors=_colors(colors, len(pts)))
    if confidence is not None:
        conf = np.asarray(confidence, dtype=np.float32).reshape(-1)
        if len(conf) != len(pts):
            raise ValueError(f"confidence must have {len(pts)} values, got {len(conf)}")
        cloud.vertex_attributes = {"confidence": conf}
    if fmt == "ply":
        data = tm.exchange.ply.export_ply(cloud, encoding="binary", include_attributes=confidence is not None)
    else:
        data = tm.Scene(cloud).export(file_type="glb")
    return _write(path, data)


def save_mesh(path: PathLike, vertices: np.ndarray, faces: np.ndarray,
              colors: Optional[np.ndarray] = None) -> str:
    """A triangle mesh (vertices ``[N,3]``, faces ``[M,3]``, vertex colours ``[N,3]``) as GLB or PLY."""
    tm = _trimesh()
    fmt = format_of(path)
    verts = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    mesh = tm.Trimesh(verts, np.asarray(faces, dtype=np.int64).reshape(-1, 3),
                      vertex_colors=_colors(colors, len(verts)), process=False)
    data = mesh.export(file_type=fmt) if fmt == "ply" else tm.Scene(mesh).export(file_type="glb")
    return _write(path, data)


def _write(path: PathLike, data: bytes) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    return os.fspath(path)


def load(path: PathLike):
    """Read a GLB or PLY back with trimesh (a Trimesh, a PointCloud, or the one geometry of a GLB scene)."""
    tm = _trimesh()
    loaded = tm.load(os.fspath(path), file_type=format_of(path), process=False)
    if isinstance(loaded, tm.Scene):
        geoms = list(loaded.geometry.values())
        if len(geoms) != 1:
            raise ValueError(f"{os.fspath(path)}: expected one geometry, found {len(geoms)}")
        return geoms[0]
    return loaded


def ply_property(path: PathLike, name: str) -> np.ndarray:
    """One vertex property of a PLY file as written (e.g. ``confidence``), read with trimesh."""
    cloud = _trimesh().load(os.fspath(path), file_type="ply", process=False)
    raw = cloud.metadata.get("_ply_raw", {}).get("vertex", {}).get("data")
    if raw is None or name not in (raw.dtype.names or ()):
        raise ValueError(f"{os.fspath(path)}: no vertex property {name!r}")
    return np.asarray(raw[name])
