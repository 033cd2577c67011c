"""The core's boundary checks: each bad input is refused with a message naming it."""

import math

import pytest
import torch

from bokehdepth_core import checks
from bokehdepth_core.types import DepthMap


@pytest.mark.parametrize("value,match", [("x", "must be a number"), (float("nan"), "finite"), (0, "finite number > 0"),
                                         (-1, "> 0")])
def test_number_refuses(value, match):
    with pytest.raises(ValueError, match=f"focus_m.*{match}"):
        checks.number("focus_m", value)


def test_number_minimum_inclusive():
    assert checks.number("gamma", 0, ">= 0", inclusive=True) == 0.0
    assert checks.number("width", "12") == 12.0


def test_k_values():
    assert checks.k_values([10, "20", 30.5]) == [10.0, 20.0, 30.5]
    assert checks.k_values(torch.tensor([[1.0, 2.0]])) == [1.0, 2.0]
    assert checks.k_values(7) == [7.0]
    for bad, match in [([], "empty"), (None, "no K values"), ("10, 20", "text"), ([1, math.inf], "finite"),
                       ([0.0], "> 0"), ([1, "a"], "list of numbers")]:
        with pytest.raises(ValueError, match=match):
            checks.k_values(bad, "k_list")


def test_per_item():
    assert checks.per_item("k", 2.0, 3).tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="one per batch item"):
        checks.per_item("k", [1.0, 2.0], 3)
    with pytest.raises(ValueError, match="> 0"):
        checks.per_item("k", [1.0, 0.0], 2, positive=True)
    with pytest.raises(ValueError, match=">= 0"):
        checks.per_item("k", [-1.0], 1, allow_negative=False)


def test_image_batch():
    assert checks.image_batch(torch.rand(8, 8, 3)).shape == (1, 8, 8, 3)
    assert checks.image_batch(torch.rand(2, 8, 8, 3, dtype=torch.float64)).dtype == torch.float32
    for bad, match in [(torch.rand(1, 3, 8, 8), r"\[B,H,W,3\]"), (torch.zeros(0, 8, 8, 3), "empty"),
                       (torch.full((1, 2, 2, 3), float("nan")), "NaN"), ("img", "torch tensor")]:
        with pytest.raises(ValueError, match=match):
            checks.image_batch(bad, "image")


def test_depth_batch():
    assert checks.depth_batch(torch.ones(4, 5)).shape == (1, 4, 5)
    assert checks.depth_batch(torch.ones(2, 4, 5, 1)).shape == (2, 4, 5)
    assert checks.depth_batch(DepthMap(depth=torch.ones(1, 4, 5))).shape == (1, 4, 5)
    with pytest.raises(ValueError, match=r"prior must be \[B,H,W\]"):
        checks.depth_batch(torch.ones(2, 3, 4, 5), "prior")


def test_per_item_rows():
    assert checks.per_item_rows("f", [1.0, 2.0], 3).tolist() == [[1.0, 2.0]] * 3
    assert checks.per_item_rows("f", [[1.0], [2.0]], 2).tolist() == [[1.0], [2.0]]
    assert checks.per_item_rows("f", 4.0, 2).shape == (2, 1)
    for bad, match in [([[1.0], [2.0]], r"\[3,N\]"), ([], r"\[3,N\]"), ([1.0, math.nan], "finite")]:
        with pytest.raises(ValueError, match=match):
            checks.per_item_rows("f", bad, 3)
    with pytest.raises(ValueError, match=">= 0"):
        checks.per_item_rows("f", [0.0, -1.0], 1, allow_negative=False)


def test_k_table():
    assert checks.k_table([10, 20], 2).tolist() == [[10.0, 20.0]] * 2
    assert checks.k_table(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 2, frames=2).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    for bad, match in [([], "k_list is empty"), (None, "no K values"), ("1, 2", "text"), ([1.0, 0.0], "> 0")]:
        with pytest.raises(ValueError, match=match):
            checks.k_table(bad, 1, name="k_list")
    with pytest.raises(ValueError, match="one K per frame"):
        checks.k_table([1.0, 2.0], 1, frames=3)


def test_map_like():
    image = torch.rand(2, 8, 6, 3)
    assert checks.map_like(torch.ones(8, 6), image, "d").shape == (2, 8, 6)
    resized = checks.map_like(torch.arange(12.0).reshape(1, 4, 3), image, "d", resize=True)
    assert resized.shape == (2, 8, 6) and float(resized[1, 0, 0]) == pytest.approx(0.0)
    for bad, kwargs, match in [(torch.ones(3, 8, 6), {}, "batch 3"), (torch.ones(1, 4, 3), {}, r"\(4, 3\)"),
                               (torch.full((1, 8, 6), math.inf), {}, "NaN or inf"),
                               (torch.zeros(1, 8, 6), {"positive": True}, "> 0, 48 of 48 values are not"),
                               (-torch.ones(1, 8, 6), {"allow_negative": False}, "negative"),
                               ("x", {}, "must be a depth map")]:
        with pytest.raises(ValueError, match=match):
            checks.map_like(bad, image, "depth", **kwargs)


def test_stack_frames():
    ref = torch.rand(1, 8, 8, 3)
    r, f = checks.stack_frames([torch.rand(8, 8, 3), torch.rand(1, 8, 8, 3)], ref, min_frames=2)
    assert r.shape == (1, 8, 8, 3) and f.shape == (1, 2, 8, 8, 3)
    r, f = checks.stack_frames(torch.rand(3, 2, 8, 8, 3), ref)
    assert r.shape == (3, 8, 8, 3)  # one reference shared by the batch
    for frames, match in [([torch.rand(1, 8, 8, 3)], "at least 2"), (torch.rand(1, 1, 8, 8, 3), "N >= 2"),
                          ([torch.rand(1, 8, 8, 3), torch.rand(1, 7, 8, 3)], r"frames\[1\] is \(7, 8\)"),
                          (torch.rand(1, 2, 8, 8, 4), r"\[B,N,H,W,3\]"),
                          (torch.full((1, 2, 8, 8, 3), math.nan), "NaN")]:
        with pytest.raises(ValueError, match=match):
            checks.stack_frames(frames, ref, min_frames=2)
    with pytest.raises(ValueError, match="reference batch 2"):
        checks.stack_frames(torch.rand(3, 2, 8, 8, 3), torch.rand(2, 8, 8, 3))
