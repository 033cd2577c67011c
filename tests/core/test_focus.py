"""Focus distance: given, median under a subject mask, or at the sharp image's edges."""

import pytest
import torch

from bokehdepth_core import focus


def _square_scene():
    """A textured near square (1.2 m) on a flat far background (6 m)."""
    g = torch.Generator().manual_seed(0)
    img = torch.full((1, 32, 32, 3), 0.5)
    img[:, 10:22, 10:22] = torch.rand(1, 12, 12, 3, generator=g)
    depth = torch.full((1, 32, 32), 6.0)
    depth[:, 9:23, 9:23] = 1.2
    return img, depth


def test_focus_from_mask():
    depth = torch.full((1, 32, 32), 5.0)
    depth[:, 8:24, 8:24] = 1.5
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[:, 8:24, 8:24] = True
    assert focus.focus_from_mask(depth, mask).item() == pytest.approx(1.5)
    assert focus.focus_from_mask(depth[0]).item() == pytest.approx(5.0)  # [H,W] accepted, whole image
    with pytest.raises(ValueError, match="mask"):
        focus.focus_from_mask(depth, torch.zeros_like(mask))


def test_focus_from_edges_finds_the_textured_object():
    img, depth = _square_scene()
    assert focus.focus_from_edges(depth, img).item() == pytest.approx(1.2)
    flat = torch.full_like(img, 0.3)  # no edges at all: the plain median
    assert focus.focus_from_edges(depth, flat).item() == pytest.approx(float(depth.median()))
    with pytest.raises(ValueError, match="share"):
        focus.focus_from_edges(depth, img[:, :16])


def test_resolve_focus_modes():
    img, depth = _square_scene()
    depth = torch.cat([depth, depth])
    assert focus.resolve_focus(depth, None, "distance", 2.5).tolist() == [2.5, 2.5]
    small_mask = torch.zeros(1, 8, 8)
    small_mask[:, 3:5, 3:5] = 1.0  # a subject mask at a quarter of the depth's size is resized to it
    assert focus.resolve_focus(depth, None, "auto (median)", mask=small_mask).tolist() == pytest.approx([1.2, 1.2])
    assert focus.resolve_focus(depth, None, "auto (median)").tolist() == pytest.approx([6.0, 6.0])
    assert focus.resolve_focus(depth, img.expand(2, -1, -1, -1), "auto (edges)").tolist() == pytest.approx([1.2, 1.2])
    for mode, args, match in (("distance", (None, "distance", 0.0), "focus_distance_m"),
                              ("edges", (None, "auto (edges)"), "needs the image"),
                              ("bad", (None, "nearest"), "focus mode")):
        with pytest.raises(ValueError, match=match):
            focus.resolve_focus(depth, *args)
