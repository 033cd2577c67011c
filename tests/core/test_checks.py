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
