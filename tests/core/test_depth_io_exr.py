"""OpenEXR depth files: bit-exact round trips, attributes other tools read, Blender/Nuke channels."""

import numpy as np
import pytest
import torch

OpenEXR = pytest.importorskip("OpenEXR", reason="the OpenEXR package is a dependency: pip install OpenEXR")

from bokehdepth_core import depth_io  # noqa: E402
from bokehdepth_core.depth_io import exr  # noqa: E402
from bokehdepth_core.types import DepthMap  # noqa: E402


def _depth():
    g = torch.Generator().manual_seed(3)
    d = torch.rand(2, 9, 11, generator=g) * 10 + 0.1
    d[0, 0, 0], d[0, 0, 1], d[0, 1, 0], d[1, 2, 2] = float("nan"), float("inf"), -1.0, 0.0
    k = torch.tensor([[[900.0, 0, 5.5], [0, 901.25, 4.5], [0, 0, 1]]]).expand(2, 3, 3)
    return DepthMap(depth=d, confidence=torch.rand(2, 9, 11, generator=g), intrinsics=k.clone())


def _write(path, channels, header=None):
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, **(header or {})}
    with OpenEXR.File(hdr, channels) as f:
        f.write(str(path))


def test_round_trip_is_bit_exact_with_nan_inf_confidence_and_intrinsics(tmp_path):
    dm = _depth()
    for i in range(2):
        path = str(tmp_path / f"d{i}.exr")
        depth_io.save_depth(path, dm, index=i, extra={"K": 23.456789012345, "focus_m": 1.75})
        back = depth_io.load_depth(path)
        assert back.depth.shape == (1, 9, 11)
        assert np.array_equal(back.depth[0].numpy().view(np.uint32), dm.depth[i].numpy().view(np.uint32))
        assert np.array_equal(back.confidence[0].numpy(), dm.confidence[i].numpy())
        assert torch.equal(back.intrinsics[0], dm.intrinsics[i])
        assert back.meta["K"] == 23.456789012345 and back.meta["focus_m"] == 1.75
        assert back.meta["storage"] == "exr" and back.meta["exr_channel"] == "Z"


def test_the_file_reads_back_with_the_openexr_library(tmp_path):
    dm = _depth()
    path = str(tmp_path / "d.exr")
    depth_io.save_depth(path, dm, sidecar=False, extra={"K": 20.0, "focus_m": 2.0})
    with OpenEXR.File(path, separate_channels=True) as f:  # the channel dict lives as long as the file
        header = dict(f.header())
        names = set(f.channels())
        z = f.channels()["Z"].pixels.copy()
    assert names == {"Z", "confidence"}
    assert z.dtype == np.float32 and z.shape == (9, 11)
    assert np.array_equal(z.view(np.uint32), dm.depth[0].numpy().view(np.uint32))
    assert header["units"] == "m" and header["bokehK"] == 20.0 and header["focusDistance"] == 2.0
    assert np.array_equal(header["intrinsics"], dm.intrinsics[0].double().numpy())
    assert '"format": "bokehdepth-depth"' in header["bokehdepth"]


def test_blender_multilayer_depth_is_found_by_auto_and_by_name(tmp_path):
    z = np.full((4, 5), 3.5, np.float32)
    z[0, 0] = 1e10  # Blender's empty background
    rgb = np.zeros((4, 5), np.float32)
    path = tmp_path / "blender.exr"
    _write(path, {"ViewLayer.Combined.R": rgb, "ViewLayer.Combined.G": rgb, "ViewLayer.Combined.B": rgb,
                  "ViewLayer.Depth.Z": z})
    dm = depth_io.load_depth(str(path))
    assert dm.meta["exr_channel"] == "ViewLayer.Depth.Z" and dm.meta["mode"] == "metric"
    assert np.array_equal(dm.depth[0].numpy(), z)
    named = depth_io.load_depth(str(path), exr_channel="ViewLayer.Combined.G")
    assert float(named.depth.abs().max()) == 0.0


def test_nuke_depth_layer_half_float_and_scale(tmp_path):
    z = (np.arange(12, dtype=np.float32).reshape(3, 4) + 1).astype(np.float16)
    path = tmp_path / "nuke.exr"
    _write(path, {"rgba.R": z.astype(np.float32), "depth.Z": z})
    dm = depth_io.load_depth(str(path), mode="metric", scale=0.01)
    assert dm.meta["exr_channel"] == "depth.Z"
    assert torch.allclose(dm.depth[0], torch.from_numpy(z.astype(np.float32)) * 0.01)


def test_plain_rgb_exr_uses_r_and_unknown_channel_names_what_exists(tmp_path):
    r = np.full((2, 3), 4.0, np.float32)
    path = tmp_path / "rgb.exr"
    _write(path, {"R": r, "G": r * 2, "B": r * 3})
    assert float(depth_io.load_depth(str(path)).depth.mean()) == 4.0
    assert sorted(exr.channel_names(str(path))) == ["B", "G", "R"]
    with pytest.raises(ValueError, match="no EXR channel 'Z'.*B, G, R|no EXR channel 'Z'"):
        depth_io.load_depth(str(path), exr_channel="Z")


def test_ambiguous_channels_and_broken_files_give_clear_errors(tmp_path):
    a = np.ones((2, 2), np.float32)
    path = tmp_path / "two.exr"
    _write(path, {"alpha": a, "beta": a})
    with pytest.raises(ValueError, match="cannot tell which EXR channel"):
        depth_io.load_depth(str(path))
    bad = tmp_path / "bad.exr"
    bad.write_bytes(b"not an exr")
    with pytest.raises(ValueError, match="not a readable OpenEXR file"):
        depth_io.load_depth(str(bad))
