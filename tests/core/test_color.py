"""Rec. 601 luma (bokehdepth_core.color); the LAB colour transfer is checked with Stage-1."""

import numpy as np
import pytest
import torch

from bokehdepth_core import color


def test_luma_weights_on_tensors_and_arrays():
    rgb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    assert color.luma(rgb).tolist() == pytest.approx([0.299, 0.587, 0.114, 1.0])
    arr = np.array([[[200, 100, 50]]], dtype=np.uint8)
    assert color.luma(arr)[0, 0] == pytest.approx(200 * 0.299 + 100 * 0.587 + 50 * 0.114)
