"""Depth I/O nodes run through the extension package, without ComfyUI."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from support import load_extension

EXT = load_extension()
N = EXT.NODE_CLASS_MAPPINGS
DepthMap = EXT.bokehdepth_core.types.DepthMap
dio = EXT.bokehdepth_core.depth_io


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    out, inp = tmp_path / "output", tmp_path / "input"
    out.mkdir()
    inp.mkdir()
    monkeypatch.setenv("BOKEHDEPTH_OUTPUT_DIR", str(out))
    monkeypatch.setenv("BOKEHDEPTH_INPUT_DIR", str(inp))
    return out, inp


def _depth(b=2, h=20, w=30):
    d = torch.linspace(0.5, 12.0, h * w).reshape(1, h, w).repeat(b, 1, 1)
    d[:, 0, 0] = float("nan")
    return DepthMap(depth=d, intrinsics=torch.eye(3).expand(b, 3, 3) * 25, meta={"source": "test"})


def test_display_names():
    names = set(EXT.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert {"BokehDepth Depth Preview", "BokehDepth Save Depth", "BokehDepth Load Depth",
            "BokehDepth Depth from Image"} <= names
    for node_id in ("BokehDepthDepthPreview", "BokehDepthSaveDepth", "BokehDepthLoadDepth", "BokehDepthDepthFromImage"):
        assert N[node_id].CATEGORY == "BokehDepth/Depth"
    assert {"Spectral", "turbo"} <= set(N["BokehDepthDepthPreview"].INPUT_TYPES()["required"]["colormap"][0])


def test_depth_preview_node():
    dm = _depth()
    img, text = N["BokehDepthDepthPreview"]().preview(dm, "turbo", "minmax", True)
    assert img.shape == (2, 20, 30, 3) and img.dtype == torch.float32
    assert img[0, 0, 0].tolist() == [0.0, 0.0, 0.0]  # invalid pixel
    assert "#1:" in text and "12" in text
    assert list(N["BokehDepthDepthPreview"].INPUT_TYPES()["required"]) == ["depth", "colormap", "range_mode",
                                                                           "inverse_depth"]
    fixed_node = N["BokehDepthDepthPreviewFixed"]
    assert list(fixed_node.INPUT_TYPES()["required"]) == ["depth", "colormap", "inverse_depth", "near_m", "far_m"]
    fixed, text = fixed_node().preview(dm, "gray", False, 1.0, 6.0)
    assert fixed[0, 0, 1, 0].item() == pytest.approx(1.0) and fixed[0, -1, -1, 0].item() == pytest.approx(0.0)
    assert "1..6 m" in text
    with pytest.raises(ValueError, match="near_m"):
        fixed_node().preview(dm, "gray", False, 6.0, 1.0)
    with pytest.raises(ValueError, match="METRIC_DEPTH"):
        N["BokehDepthDepthPreview"]().preview(torch.ones(1, 4, 4), "gray", "minmax", False)


@pytest.mark.parametrize("fmt", ["exr", "npy", "png16", "tiff", "npz"])
def test_save_then_load_nodes(dirs, fmt):
    out, inp = dirs
    dm = _depth()
    res = N["BokehDepthSaveDepth"]().save(dm, "run/depth", fmt, True, True, K=21.5, focus_distance_m=2.0)
    images = res["ui"]["images"]
    assert [i["type"] for i in images] == ["output", "output"] and images[0]["subfolder"] == "run"
    ext = dio.extension_for(fmt)
    names = sorted(os.listdir(out / "run"))
    data = [n for n in names if n.endswith(ext) and "preview" not in n]
    assert len(data) == 2 and len([n for n in names if n.endswith(".json")]) == 2
    # the node shows what it wrote (data files and sidecars), and returns the data files
    shown = res["ui"]["text"][0].split("\n")
    assert shown == [f"run/{n}" for d in data for n in (d, d[: -len(ext)] + ".json")]
    assert res["result"][0].split("\n") == [f"run/{n}" for n in data]
    for img in images:
        with Image.open(out / "run" / img["filename"]) as im:
            assert im.size == (30, 20) and im.mode == "RGB"
    # the file goes into the input folder, as a user would upload it
    (inp / data[1]).write_bytes((out / "run" / data[1]).read_bytes())
    (inp / data[1].replace(ext, ".json")).write_bytes((out / "run" / data[1].replace(ext, ".json")).read_bytes())
    node = N["BokehDepthLoadDepth"]
    assert data[1] in node.INPUT_TYPES()["required"]["depth_file"][0]
    assert node.VALIDATE_INPUTS(data[1]) is True and node.VALIDATE_INPUTS("gone.npy") is not True
    assert node.IS_CHANGED(data[1])
    loaded, preview, info = node().load(data[1], 1.0, "auto")
    ok = dio.valid_mask(dm.depth[1])
    tol = 0.5 * (12.0 - 0.5) / 65534 * 1.001 if fmt == "png16" else 0.0
    assert (loaded.depth[0][ok] - dm.depth[1][ok]).abs().max().item() <= tol + 1e-7
    assert loaded.intrinsics is not None and torch.allclose(loaded.intrinsics[0], dm.intrinsics[1])
    assert preview.shape == (1, 20, 30, 3) and data[1] in info and "m" in info
    assert loaded.meta["K"] == 21.5 and loaded.meta["focus_m"] == 2.0


def test_save_depth_counter_and_no_extras(dirs):
    out, _ = dirs
    node = N["BokehDepthSaveDepth"]()
    node.save(_depth(b=1), "d", "npy", False, False)
    res = node.save(_depth(b=1), "d", "npy", False, False)
    assert res["ui"]["images"] == [] and res["ui"]["text"] == ["d_00002_.npy"]
    assert sorted(os.listdir(out)) == ["d_00001_.npy", "d_00002_.npy"]


def test_load_lists_only_depth_files_and_reads_plain_ones_with_a_scale(dirs):
    _, inp = dirs
    Image.fromarray(np.array([[1000, 2000, 0]], dtype=np.uint16)).save(inp / "mm.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(inp / "photo.jpg")
    np.save(inp / "metres.npy", np.full((2, 2), 3.0, np.float32))
    node = N["BokehDepthLoadDepth"]
    assert node.INPUT_TYPES()["required"]["depth_file"][0] == ["metres.npy", "mm.png"]
    dm, _, _ = node().load("mm.png", 0.001, "auto")
    assert dm.depth[0, 0].tolist()[:2] == pytest.approx([1.0, 2.0])
    assert float(node().load("metres.npy", 1.0, "auto")[0].depth.mean()) == 3.0


def test_load_blender_exr_channel(dirs):
    OpenEXR = pytest.importorskip("OpenEXR")
    _, inp = dirs
    z = np.full((3, 4), 7.5, np.float32)
    with OpenEXR.File({"type": OpenEXR.scanlineimage}, {"ViewLayer.Depth.Z": z, "ViewLayer.Combined.R": z * 0}) as f:
        f.write(str(inp / "render.exr"))
    node = N["BokehDepthLoadDepth"]
    assert "render.exr" in node.INPUT_TYPES()["required"]["depth_file"][0]
    dm, _, info = node().load("render.exr", 1.0, "auto")
    assert float(dm.depth.mean()) == 7.5 and dm.meta["exr_channel"] == "ViewLayer.Depth.Z" and "render.exr" in info
    assert float(node().load("render.exr", 1.0, "ViewLayer.Combined.R")[0].depth.max()) == 0.0


def test_depth_from_image_node():
    v = torch.tensor([0.0, 0.25, 1.0]).reshape(1, 1, 3, 1).expand(2, 1, 3, 3).clone()
    node = N["BokehDepthDepthFromImage"]
    assert node.INPUT_TYPES()["required"]["mode"][0] == ["disparity", "depth", "depth_inverted"]
    assert "metric" not in node.INPUT_TYPES()["required"]["mode"][1]["tooltip"]
    dm, preview = node().convert(v, "disparity", 2.0, 8.0, "luminance", "full")
    assert isinstance(dm, DepthMap) and dm.depth.shape == (2, 1, 3) and preview.shape == (2, 1, 3, 3)
    expect = 1 / (1 / 8 + torch.tensor([0.0, 0.25, 1.0]) * (1 / 2 - 1 / 8))
    assert torch.allclose(dm.depth[0, 0], expect, rtol=1e-5)
    half = v * 0.5 + 0.25
    stretched, _ = node().convert(half, "depth", 2.0, 8.0, "g", "minmax")
    assert torch.allclose(stretched.depth[0, 0], torch.tensor([2.0, 3.5, 8.0]), atol=1e-5)
    with pytest.raises(ValueError, match="near"):
        node().convert(v, "depth", 8.0, 2.0, "r", "full")
