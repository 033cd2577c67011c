"""Depth and image metrics against hand-computed values."""

import math
import sys
import types

import pytest
import torch

from bokehdepth_core import metrics
from bokehdepth_core.types import DepthMap


def test_depth_metrics_known_values():
    gt = torch.tensor([[[1.0, 2.0], [4.0, 0.0]]])  # 0 = invalid
    pred = torch.tensor([[[1.1, 2.0], [2.5, 5.0]]])
    m = metrics.depth_metrics(pred, gt)
    assert m["valid_pixels"] == 3
    assert m["abs_rel"] == pytest.approx((0.1 + 0 + 1.5 / 4) / 3)
    assert m["sq_rel"] == pytest.approx((0.01 / 1 + 0 + 2.25 / 4) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0.01 + 0 + 2.25) / 3))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(1.1) ** 2 + 0 + math.log(2.5 / 4) ** 2) / 3))
    # ratio 1.6 for the third pixel: outside 1.25 and 1.25^2, inside 1.25^3
    assert m["delta1"] == pytest.approx(2 / 3) and m["delta2"] == pytest.approx(2 / 3) and m["delta3"] == 1.0


def test_median_alignment_and_mask():
    gt = torch.rand(2, 16, 16) * 5 + 1
    m = metrics.depth_metrics(gt * 0.5, gt, align="median")
    assert m["abs_rel"] < 1e-6 and m["scale"] == pytest.approx([2.0, 2.0])
    assert metrics.depth_metrics(gt * 0.5, gt)["abs_rel"] == pytest.approx(0.5)
    mask = torch.zeros(2, 16, 16)
    mask[:, :4] = 1
    pred = gt.clone()
    pred[:, 4:] *= 3
    assert metrics.depth_metrics(pred, gt, mask)["abs_rel"] < 1e-6
    with pytest.raises(ValueError, match="size"):
        metrics.depth_metrics(gt[:, :8], gt)
    with pytest.raises(ValueError, match="valid"):
        metrics.depth_metrics(gt, torch.zeros_like(gt))


def test_psnr_ssim():
    a = torch.rand(1, 32, 32, 3)
    assert metrics.psnr(a, a) == math.inf
    assert metrics.psnr(a, (a + 0.1)) == pytest.approx(20.0, abs=1e-3)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    # flat images: only the luminance term, (2 m1 m2 + C1) / (m1^2 + m2^2 + C1)
    c1 = 0.01 ** 2
    expect = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    assert metrics.ssim(torch.full((1, 16, 16, 3), 0.2), torch.full((1, 16, 16, 3), 0.6)) == pytest.approx(expect, rel=1e-5)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 40, 40), 5, 1).permute(0, 2, 3, 1) * 0.5 + 0.25
    noisy = (smooth + 0.1 * torch.randn_like(smooth)).clamp(0, 1)
    assert metrics.ssim(smooth, noisy) < 0.5
    assert metrics.ssim(smooth, smooth * 0.95 + 0.02) > 0.9  # structure kept
    with pytest.raises(ValueError):
        metrics.psnr(a, a[:, :16])


def test_depth_maps_min_confidence_and_mask():
    gt = torch.full((1, 4, 4), 2.0)
    pred = gt.clone()
    pred[0, 0] = 4.0  # wrong, and the model says so
    conf = torch.ones(1, 4, 4)
    conf[0, 0] = 0.1
    dm = DepthMap(depth=pred, confidence=conf)
    assert metrics.depth_metrics(dm, DepthMap(depth=gt))["abs_rel"] == pytest.approx(0.25)
    m = metrics.depth_metrics(dm, gt, min_confidence=0.5)
    assert m["abs_rel"] == 0.0 and m["valid_pixels"] == 12
    mask = torch.zeros(4, 4)
    mask[2:] = 1
    assert metrics.depth_metrics(dm, gt, mask)["valid_pixels"] == 8
    with pytest.raises(ValueError, match="mask"):
        metrics.depth_metrics(dm, gt, torch.ones(3, 3))


class _FakeLPIPS(torch.nn.Module):
    """Stands in for lpips.LPIPS: mean absolute difference of the inputs it is given."""

    calls = []

    def __init__(self, net="alex", verbose=True):
        super().__init__()
        _FakeLPIPS.calls.append(net)

    def forward(self, a, b):
        assert a.shape[1] == 3 and float(a.min()) >= -1 and float(a.max()) <= 1  # NCHW in -1..1, as lpips wants
        return (a - b).abs().mean((1, 2, 3), keepdim=True)


def test_lpips_through_the_optional_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=_FakeLPIPS))
    a, b = torch.zeros(2, 8, 8, 3), torch.full((2, 8, 8, 3), 0.25)
    assert metrics.lpips(a, b, net="vgg") == pytest.approx(0.5)  # 0.25 in 0..1 is 0.5 in -1..1
    assert _FakeLPIPS.calls[-1] == "vgg"
    monkeypatch.setitem(sys.modules, "lpips", None)  # not installed
    with pytest.raises(ValueError, match="pip install lpips"):
        metrics.lpips(a, b)
