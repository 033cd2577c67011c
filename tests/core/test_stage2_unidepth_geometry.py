"""UniDepthV2's input geometry: padding into the aspect range, the pixel budget, and intrinsics into
the network input and back."""

from __future__ import annotations

import math

import pytest
import torch

from bokehdepth_core import camera as cam
from bokehdepth_core.stage2 import unidepth_geometry as geometry


def test_paddings_and_resize_follow_unidepth_rules():
    assert geometry.get_paddings((100, 150), (0.5, 2.5)) == ((0, 0, 0, 0), (100, 150))
    pads, shape = geometry.get_paddings((60, 200), (0.5, 2.5))  # 3.33 wide -> pad height to W / 2.5
    assert shape == (80, 200) and pads == (0, 0, 10, 10)
    pads, shape = geometry.get_paddings((181, 60), (0.5, 2.5))  # too tall -> pad width to H * 0.5
    assert shape == (181, 90) and pads == (15, 15, 0, 0)
    f, size = geometry.get_resize_factor((480, 640), (200000, 600000), 14)
    assert f == 1.0 and size == (490, 644)
    f, size = geometry.get_resize_factor((4000, 6000), (200000, 600000), 14)
    assert f == pytest.approx(math.sqrt(600000 / 24e6)) and all(s % 14 == 0 for s in size)
    lo, hi = geometry.pixel_bounds(3, 200000, 600000)
    assert (lo, hi) == (320000, 360000)
    for bad in (-1, 10, 2.5, True):
        with pytest.raises(ValueError, match="resolution_level"):
            geometry.pixel_bounds(bad, 200000, 600000)


def test_known_pinhole_through_pad_resize_unpad_returns_same_intrinsics():
    torch.manual_seed(6)
    for pads, factor in (((0, 0, 10, 11), 0.37), ((15, 16, 0, 0), 2.2), ((0, 0, 0, 0), 1.0)):
        k = cam.intrinsics_matrix(torch.rand(3) * 500 + 100, torch.rand(3) * 500 + 100, torch.rand(3) * 300,
                                  torch.rand(3) * 200)
        net = geometry.camera_to_network(k, pads, factor)
        assert float(net[0, 0, 2]) == pytest.approx((float(k[0, 0, 2]) + pads[0]) * factor, rel=1e-6)
        assert float(net[0, 1, 2]) == pytest.approx((float(k[0, 1, 2]) + pads[2]) * factor, rel=1e-6)
        torch.testing.assert_close(geometry.intrinsics_from_network(net, pads, factor), k)
