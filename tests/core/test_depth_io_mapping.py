"""Plain values and images that encode depth -> metres (bokehdepth_core.depth_io.mapping)."""

import numpy as np
import pytest
import torch

from bokehdepth_core import depth_io as dio


def test_image_to_depth_channels_and_ranges():
    img = torch.zeros(2, 4, 5, 3)
    img[..., 0] = 1.0
    img[1, ..., 1] = torch.linspace(0.25, 0.75, 5)
    lum = dio.image_to_depth(img, "metric", scale=10.0)
    assert torch.allclose(lum[0], torch.full((4, 5), 2.99))
    red = dio.image_to_depth(img, "metric", scale=10.0, channel="r")
    assert torch.allclose(red, torch.full((2, 4, 5), 10.0))
    stretched = dio.image_to_depth(img, "depth", near=2.0, far=8.0, channel="g", value_range="minmax")
    assert float(stretched[1].min()) == pytest.approx(2.0) and float(stretched[1].max()) == pytest.approx(8.0)
    grey = dio.image_to_depth(torch.full((1, 3, 3, 1), 0.5), "depth", near=2.0, far=8.0, channel="b")
    assert torch.allclose(grey, torch.full((1, 3, 3), 5.0))
    for kwargs, word in (({"channel": "alpha"}, "channel"), ({"value_range": "auto"}, "value_range")):
        with pytest.raises(ValueError, match=word):
            dio.image_to_depth(img, "metric", **kwargs)
    with pytest.raises(ValueError, match="IMAGE"):
        dio.image_to_depth(torch.zeros(4, 5), "metric")


def test_values_to_depth_modes():
    v = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(dio.values_to_depth(v, "depth", near=1.0, far=3.0), torch.tensor([1.0, 2.0, 3.0]))
    assert torch.allclose(dio.values_to_depth(v, "depth_inverted", near=1.0, far=3.0), torch.tensor([3.0, 2.0, 1.0]))
    disp = dio.values_to_depth(v, "disparity", near=1.0, far=4.0)
    assert torch.allclose(1 / disp, torch.tensor([0.25, 0.625, 1.0]))  # even steps in 1/depth
    assert torch.allclose(dio.values_to_depth(torch.tensor([2.0]), "depth", near=1.0, far=3.0), torch.tensor([3.0]))
    with pytest.raises(ValueError, match="mode"):
        dio.values_to_depth(v, "auto")


def test_pick_channel_on_arrays_and_tensors():
    rgb = np.array([[[10, 20, 30], [40, 40, 40]]], dtype=np.uint8)
    assert dio.pick_channel(rgb, "g").tolist() == [[20, 40]]
    assert np.allclose(dio.pick_channel(rgb, "luminance"), [[10 * 0.299 + 20 * 0.587 + 30 * 0.114, 40.0]])
    grey = np.repeat(np.array([[[7], [9]]], dtype=np.uint8), 3, axis=-1)
    assert dio.pick_channel(grey, "auto").tolist() == [[7, 9]]
    assert dio.pick_channel(torch.ones(2, 3, 1) * 0.5, "r").tolist() == [[0.5] * 3] * 2  # one channel: that one
    with pytest.raises(ValueError, match="colour"):
        dio.pick_channel(rgb, "auto", "x.png")
    with pytest.raises(ValueError, match="channel"):
        dio.pick_channel(rgb, "alpha")


def test_luminance_of_an_8bit_file_is_normalised_by_its_range(tmp_path):
    from PIL import Image

    v = np.array([[0, 51, 255]], dtype=np.uint8)
    Image.fromarray(np.stack([v, v, v], -1)).save(tmp_path / "g.png")
    d = dio.load_depth(str(tmp_path / "g.png"), mode="depth", near=1.0, far=11.0, channel="luminance").depth[0, 0]
    assert d.tolist() == pytest.approx([1.0, 3.0, 11.0], rel=1e-5)
