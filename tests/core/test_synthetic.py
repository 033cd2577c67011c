"""Synthetic SYNTHEBOKEH300-style scenes and the dataset writer."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from bokehdepth_core import cli, synthetic


def test_scene_is_deterministic_and_layered():
    a, b = synthetic.make_scene(7, 96), synthetic.make_scene(7, 96)
    assert torch.equal(a.image, b.image) and torch.equal(a.disparity, b.disparity) and a.k_values == b.k_values
    c = synthetic.make_scene(8, 96)
    assert not torch.equal(a.image, c.image)
    assert a.image.shape == (1, 96, 96, 3) and a.disparity.shape == (1, 96, 96)
    fg = a.alpha >= 0.5
    assert 0.1 < float(fg.float().mean()) < 0.6
    # the foreground is nearer than every background pixel, and focus lies in the foreground band
    assert float(a.disparity[fg].min()) > float(a.disparity[~fg].max())
    assert float(a.disparity[fg].min()) - 1e-6 <= a.focus_disparity <= float(a.disparity[fg].max()) + 1e-6
    assert all(1.4 <= f <= 22 for f in a.f_numbers)
    assert a.k_values == sorted(a.k_values)
    # larger K, smaller f-number
    assert a.f_numbers == sorted(a.f_numbers, reverse=True)


def test_background_follows_eq44():
    d = synthetic.planar_disparity(33, 0.2, -0.1, 0.5)
    x = torch.linspace(-1, 1, 33)
    assert torch.allclose(d[16], 0.5 / (1 - 0.2 * x + 0.1 * 0.0), atol=1e-6)
    assert torch.allclose(d[:, 16], 0.5 / (1 + 0.1 * x), atol=1e-6)


def test_dataset_layout(tmp_path):
    out = tmp_path / "synth"
    assert cli.main(["synth", "--out", str(out), "-n", "2", "--size", "48", "--seed", "3"]) == 0
    for sub, n in (("aif", 2), ("images", 6), ("depth", 2), ("metadata", 6)):
        assert len(os.listdir(out / sub)) == n, sub
    meta = json.loads((out / "metadata" / "000003_1.json").read_text())
    for key in ("K", "d_f", "f_number", "renderer", "aif", "depth", "image"):
        assert key in meta
    disp = np.load(out / meta["depth"])
    assert disp.dtype == np.float32 and disp.shape == (48, 48)
    scene = synthetic.make_scene(3, 48)
    assert np.allclose(disp, scene.disparity[0].numpy())
    with Image.open(out / meta["image"]) as im:
        assert im.format == "JPEG" and im.size == (48, 48)


def test_user_layers(tmp_path):
    fgd, bgd = tmp_path / "fg", tmp_path / "bg"
    fgd.mkdir(), bgd.mkdir()
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[5:35, 5:25] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(fgd / "a.png")
    Image.fromarray(np.full((50, 70, 3), (0, 0, 255), np.uint8)).save(bgd / "b.jpg")
    paths = synthetic.generate_dataset(str(tmp_path / "out"), 1, size=64, foreground_dir=str(fgd), background_dir=str(bgd))
    assert len(paths) == 3
    scene = synthetic.make_scene(0, 64, foreground=str(fgd / "a.png"), background=str(bgd / "b.jpg"))
    fg = scene.alpha >= 0.5
    assert float(scene.image[0][fg[0]][:, 0].mean()) > 0.9  # red foreground
    assert float(scene.image[0][~fg[0]][:, 2].mean()) > 0.9  # blue background
    with pytest.raises(ValueError, match="folder"):
        synthetic.generate_dataset(str(tmp_path / "x"), 1, foreground_dir=str(tmp_path / "missing"))
