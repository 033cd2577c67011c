"""Lossless depth files and plain depth images (bokehdepth_core.depth_io.files and its formats)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from bokehdepth_core import depth_io as dio
from bokehdepth_core.types import DepthMap
from support import depth_with_holes


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize("fmt", ["npy", "tiff", "npz"])
def test_float_formats_round_trip_exactly(tmp_path, fmt):
    d = depth_with_holes()
    path = str(tmp_path / ("d" + dio.extension_for(fmt)))
    written = dio.save_depth(path, d, fmt, index=0, source="unit-test")
    assert written == [path, str(tmp_path / "d.json")]
    dm = dio.load_depth(path)
    assert dm.depth.shape == (1, 24, 32) and dm.depth.dtype == torch.float32
    assert torch.equal(torch.isnan(dm.depth[0]), torch.isnan(d[0]))
    same = torch.isfinite(d[0])
    assert torch.equal(dm.depth[0][same], d[0][same])
    assert torch.isinf(dm.depth[0, 1, 1])
    assert dm.meta["source"] == "unit-test"


def test_npz_keeps_confidence_and_intrinsics(tmp_path):
    d = depth_with_holes()
    conf = torch.rand(2, 24, 32)
    k = torch.tensor([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]]).expand(2, 3, 3)
    path = str(tmp_path / "d.npz")
    dio.save_depth(path, DepthMap(depth=d, confidence=conf, intrinsics=k), index=1)
    dm = dio.load_depth(path)
    assert torch.equal(dm.depth[0], d[1]) and torch.equal(dm.confidence[0], conf[1])
    assert torch.allclose(dm.intrinsics[0], k[1])
    side = json.loads((tmp_path / "d.json").read_text())
    assert side["shape"] == [24, 32] and side["unit"] == "m" and side["has_confidence"] is True
    assert side["intrinsics"][0][0] == 30.0
    ok = dio.valid_mask(d[1])
    assert side["stats"]["min"] == pytest.approx(d[1][ok].min().item())
    assert side["stats"]["valid_fraction"] == pytest.approx(ok.float().mean().item())


@pytest.mark.parametrize("encoding", ["linear", "inverse"])
def test_png16_round_trip_within_quantum(tmp_path, encoding):
    d = depth_with_holes(64, 48)
    path = str(tmp_path / "d.png")
    dio.save_depth(path, d, "png16", index=0, encoding=encoding, sidecar=False)
    assert not (tmp_path / "d.json").exists()
    with Image.open(path) as img:
        assert img.mode.startswith("I") and "bokehdepth" in img.text
        meta = json.loads(img.text["bokehdepth"])
    assert meta["encoding"] == encoding and meta["unit"] == "m"
    ok = dio.valid_mask(d[0])
    lo, hi = d[0][ok].min().item(), d[0][ok].max().item()
    assert meta["near"] == pytest.approx(lo) and meta["far"] == pytest.approx(hi)
    dm = dio.load_depth(path)
    got, ref = dm.depth[0][ok].double(), d[0][ok].double()
    if encoding == "linear":
        err = (got - ref).abs().max().item()
        assert err <= 0.5 * (hi - lo) / 65534 * 1.001 + 1e-6
    else:
        err = (1 / got - 1 / ref).abs().max().item()
        assert err <= 0.5 * (1 / lo - 1 / hi) / 65534 * 1.001 + 1e-9
    assert err > 0  # really quantised, not stored as floats
    assert (dm.depth[0][~ok] == 0).all() and not dio.valid_mask(dm.depth[0][~ok]).any()


def test_png16_fixed_range_clips_and_flat_depth(tmp_path):
    d = torch.tensor([[0.2, 1.0, 2.0, 9.0]])
    path = str(tmp_path / "c.png")
    dio.save_depth(path, d, near=0.5, far=4.0, sidecar=False)
    got = dio.load_depth(path).depth[0, 0]
    assert got[0].item() == pytest.approx(0.5) and got[3].item() == pytest.approx(4.0)
    assert got[1].item() == pytest.approx(1.0, abs=3e-5)
    dio.save_depth(path, torch.full((3, 3), 2.5), sidecar=False)
    assert torch.allclose(dio.load_depth(path).depth, torch.full((1, 3, 3), 2.5))
    with pytest.raises(ValueError, match="encoding"):
        dio.save_depth(path, d, encoding="log")


# ------------------------------------------------------------------ plain files

def test_plain_16bit_png_needs_a_mapping(tmp_path):
    mm = np.array([[0, 500, 1000], [2500, 40000, 65535]], dtype=np.uint16)
    path = tmp_path / "kinect.png"
    Image.fromarray(mm).save(path)
    with pytest.raises(ValueError, match=r"kinect\.png.*scale"):
        dio.load_depth(str(path))
    dm = dio.load_depth(str(path), mode="metric", scale=0.001)
    assert torch.allclose(dm.depth[0], torch.from_numpy(mm.astype(np.float32)) * 0.001)
    assert not dio.valid_mask(dm.depth[0, 0, 0])


def test_plain_8bit_disparity_and_depth_maps(tmp_path):
    v = np.array([[0, 51, 255]], dtype=np.uint8)
    path = tmp_path / "rel.png"
    Image.fromarray(v).save(path)
    dm = dio.load_depth(str(path), mode="disparity", near=1.0, far=10.0)
    t = v[0].astype(np.float64) / 255
    expect = 1 / (0.1 + t * (1.0 - 0.1))
    assert np.allclose(dm.depth[0, 0].numpy(), expect, rtol=1e-5)
    dd = dio.load_depth(str(path), mode="depth", near=1.0, far=10.0).depth[0, 0]
    assert np.allclose(dd.numpy(), 1 + t * 9, rtol=1e-5)
    di = dio.load_depth(str(path), mode="depth_inverted", near=1.0, far=10.0).depth[0, 0]
    assert np.allclose(di.numpy(), 10 - t * 9, rtol=1e-5)
    mm = dio.load_depth(str(path), mode="depth", near=2.0, far=4.0, normalize="minmax").depth[0, 0]
    assert mm[0].item() == pytest.approx(2.0) and mm[2].item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="near"):
        dio.load_depth(str(path), mode="disparity")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([v, v, v], -1)).save(rgb)
    assert torch.allclose(dio.load_depth(str(rgb), mode="depth", near=1.0, far=10.0).depth, dd[None, None])
    colour = tmp_path / "colour.png"
    Image.fromarray(np.stack([v, v[:, ::-1], v], -1).copy()).save(colour)
    with pytest.raises(ValueError, match="colour"):
        dio.load_depth(str(colour), mode="depth", near=1.0, far=10.0)
    g = dio.load_depth(str(colour), mode="depth", near=1.0, far=10.0, channel="g").depth[0, 0]
    assert g[0].item() == pytest.approx(10.0)


def test_foreign_numpy_files(tmp_path):
    raw = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 100)
    np.save(tmp_path / "mm.npy", raw)
    dm = dio.load_depth(str(tmp_path / "mm.npy"), mode="metric", scale=0.001)
    assert torch.allclose(dm.depth[0], torch.from_numpy(raw.astype(np.float32)) / 1000)
    f = np.random.default_rng(0).random((1, 5, 6, 1)).astype(np.float32) + 1
    np.save(tmp_path / "f.npy", f)
    assert torch.equal(dio.load_depth(str(tmp_path / "f.npy")).depth[0], torch.from_numpy(f[0, ..., 0]))
    np.save(tmp_path / "batch.npy", np.repeat(f[..., 0], 3, axis=0))
    assert dio.load_depth(str(tmp_path / "batch.npy")).depth.shape == (3, 5, 6)
    np.savez(tmp_path / "two.npz", a=f[0, ..., 0], b=f[0, ..., 0])
    with pytest.raises(ValueError, match="'depth'"):
        dio.load_depth(str(tmp_path / "two.npz"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        dio.load_depth(str(tmp_path / "obj.npy"))


def test_bad_files_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        dio.load_depth(str(tmp_path / "nope.npy"))
    (tmp_path / "x.exr").write_bytes(b"v/1\x01")
    with pytest.raises(ValueError, match="x.exr: not a readable OpenEXR file"):
        dio.load_depth(str(tmp_path / "x.exr"))
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png"):
        dio.load_depth(str(tmp_path / "junk.png"))
    with pytest.raises(ValueError, match="format"):
        dio.save_depth(str(tmp_path / "a.exr"), torch.ones(2, 2), "openexr")
    with pytest.raises(ValueError, match="extension"):
        dio.save_depth(str(tmp_path / "a.bin"), torch.ones(2, 2))
    with pytest.raises(ValueError, match="index"):
        dio.save_depth(str(tmp_path / "a.npy"), torch.ones(2, 2, 2), index=5)
    with pytest.raises(ValueError, match="scale"):
        dio.values_to_depth(torch.ones(2), "metric", scale=0.0)
    with pytest.raises(ValueError, match="mode"):
        dio.load_depth(str(tmp_path / "x.exr"), mode="meters")
    assert math.isclose(dio.values_to_depth(torch.tensor(0.5), "metric", scale=4.0).item(), 2.0)
