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
    assert {"Depth Preview", "Save Depth", "Load Depth", "Depth from Image"} <= names
    for node_id in ("BokehDepthDepthPreview", "BokehDepthSaveDepth", "BokehDepthLoadDepth", "BokehDepthDepthFromImage"):
        assert N[node_id].CATEGORY == "BokehDepth/Depth"
    assert {"Spectral", "turbo"} <= set(N["BokehDepthDepthPreview"].INPUT_TYPES()["required"]["colormap"][0])


def test_depth_preview_node():
    dm = _depth()
    img, text = N["BokehDepthDepthPreview"]().preview(dm, "turbo", "minmax", 0.5, 20.0, True)
    assert img.shape == (2, 20, 30, 3) and img.dtype == torch.float32
    assert img[0, 0, 0].tolist() == [0.0, 0.0, 0.0]  # invalid pixel
    assert "#1:" in text and "12" in text
    fixed, text = N["BokehDepthDepthPreview"]().preview(dm, "gray", "fixed", 1.0, 6.0, False)
    assert fixed[0, 0, 1, 0].item() == pytest.approx(1.0) and fixed[0, -1, -1, 0].item() == pytest.approx(0.0)
    assert "1..6 m" in text
    with pytest.raises(ValueError, match="near_m"):
        N["BokehDepthDepthPreview"]().preview(dm, "gray", "fixed", 6.0, 1.0, False)
    with pytest.raises(ValueError, match="METRIC_DEPTH"):
        N["BokehDepthDepthPreview"]().preview(torch.ones(1, 4, 4), "gray", "minmax", 1.0, 2.0, False)


@pytest.mark.parametrize("fmt", ["npy", "png16", "tiff", "npz"])
def test_save_then_load_nodes(dirs, fmt):
    out, inp = dirs
    dm = _depth()
    res = N["BokehDepthSaveDepth"]().save(dm, "run/depth", fmt, "linear", True, True)
    images = res["ui"]["images"]
    assert [i["type"] for i in images] == ["output", "output"] and images[0]["subfolder"] == "run"
    ext = dio.extension_for(fmt)
    names = sorted(os.listdir(out / "run"))
    data = [n for n in names if n.endswith(ext) and "preview" not in n]
    assert len(data) == 2 and len([n for n in names if n.endswith(".json")]) == 2
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
    loaded, preview, info = node().load(data[1], "auto", 1.0, 0.5, 20.0, "auto", "full")
    ok = dio.valid_mask(dm.depth[1])
    tol = 0.5 * (12.0 - 0.5) / 65534 * 1.001 if fmt == "png16" else 0.0
    assert (loaded.depth[0][ok] - dm.depth[1][ok]).abs().max().item() <= tol + 1e-7
    assert loaded.intrinsics is not None and torch.allclose(loaded.intrinsics[0], dm.intrinsics[1])
    assert preview.shape == (1, 20, 30, 3) and data[1] in info and "m" in info


def test_save_depth_counter_and_no_extras(dirs):
    out, _ = dirs
    node = N["BokehDepthSaveDepth"]()
    node.save(_depth(b=1), "d", "npy", "linear", False, False)
    res = node.save(_depth(b=1), "d", "npy", "linear", False, False)
    assert res["ui"]["images"] == []
    assert sorted(os.listdir(out)) == ["d_00001_.npy", "d_00002_.npy"]


def test_load_plain_image_needs_mapping(dirs):
    _, inp = dirs
    Image.fromarray(np.array([[0, 128, 255]], dtype=np.uint8)).save(inp / "rel.png")
    node = N["BokehDepthLoadDepth"]()
    with pytest.raises(ValueError, match="rel.png"):
        node.load("rel.png", "auto", 1.0, 1.0, 10.0, "auto", "full")
    dm, preview, _ = node.load("rel.png", "disparity", 1.0, 1.0, 10.0, "auto", "full")
    assert dm.depth[0, 0, 0].item() == pytest.approx(10.0) and dm.depth[0, 0, 2].item() == pytest.approx(1.0)
    assert preview[0, 0, 2].tolist() == pytest.approx(dio.apply_colormap(torch.tensor(1.0), "Spectral").tolist())


def test_depth_from_image_node():
    v = torch.tensor([0.0, 0.25, 1.0]).reshape(1, 1, 3, 1).expand(2, 1, 3, 3).clone()
    node = N["BokehDepthDepthFromImage"]()
    dm, preview = node.convert(v, "disparity", 1.0, 2.0, 8.0, "luminance", "full")
    assert isinstance(dm, DepthMap) and dm.depth.shape == (2, 1, 3) and preview.shape == (2, 1, 3, 3)
    expect = 1 / (1 / 8 + torch.tensor([0.0, 0.25, 1.0]) * (1 / 2 - 1 / 8))
    assert torch.allclose(dm.depth[0, 0], expect, rtol=1e-5)
    metric, _ = node.convert(v, "metric", 50.0, 2.0, 8.0, "r", "full")
    assert torch.allclose(metric.depth[1, 0], torch.tensor([0.0, 12.5, 50.0]))
    half = v * 0.5 + 0.25
    stretched, _ = node.convert(half, "depth", 1.0, 2.0, 8.0, "g", "minmax")
    assert torch.allclose(stretched.depth[0, 0], torch.tensor([2.0, 3.5, 8.0]), atol=1e-5)
    with pytest.raises(ValueError, match="near"):
        node.convert(v, "depth", 1.0, 8.0, 2.0, "r", "full")
