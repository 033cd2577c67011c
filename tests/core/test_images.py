"""8-bit image files and ComfyUI-layout tensors (bokehdepth_core.images)."""

import numpy as np
import pytest
import torch
from PIL import Image

from bokehdepth_core import images


def test_save_then_open_round_trips_8bit(tmp_path):
    img = torch.rand(5, 7, 3)
    images.save_rgb(tmp_path / "a.png", img)
    with images.open_image(tmp_path / "a.png") as back:
        t = images.to_tensor(back)
    assert t.shape == (1, 5, 7, 3) and t.dtype == torch.float32
    assert (t[0] - img).abs().max() <= 0.5 / 255 + 1e-6  # rounded to the nearest level


def test_to_rgb8_rounds_and_clamps():
    assert images.to_rgb8(torch.tensor([[[-1.0, 0.5, 2.0]]])).tolist() == [[[0, 128, 255]]]


def test_jpeg_quality(tmp_path):
    img = torch.rand(32, 32, 3)
    images.save_rgb(tmp_path / "lo.jpg", img, quality=10)
    images.save_rgb(tmp_path / "hi.jpg", img, quality=95)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size


def test_open_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        images.open_image(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.png"):
        images.open_image(tmp_path / "bad.png")


def test_to_tensor_makes_rgb():
    grey = Image.fromarray(np.full((2, 3), 51, np.uint8))
    assert images.to_tensor(grey)[0, 0, 0].tolist() == pytest.approx([0.2] * 3)
