"""UniDepthV2 decoder pieces against their equations: attention block, Fourier ray embedding, camera
head scaling, radius/points relation and a given camera's rays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bokehdepth_core import camera as cam
from bokehdepth_core.stage2 import build_unidepthv2_dsfa
from bokehdepth_core.stage2.kernels import conv_layout
from bokehdepth_core.stage2.unidepth_decoder import (AttentionBlock, ResUpsampleBil, fourier_features,
                                                   ray_angles)
from support import UNIDEPTH_SMALL as SMALL, randomize


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return randomize(build_unidepthv2_dsfa(SMALL))


def _ln(x, mod):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def test_attention_block_matches_equations():
    torch.manual_seed(1)
    blk = randomize(AttentionBlock(32, num_heads=4, expansion=2, layer_scale=0.7, use_bias=False), seed=3)
    x, ctx, pos = torch.randn(2, 5, 32), torch.randn(2, 7, 32), torch.randn(2, 5, 32)
    got = blk(x, context=ctx, pos_embed=pos)

    q = _ln(x, blk.norm_attnx) @ blk.q.weight.T + pos
    kv = _ln(ctx, blk.norm_attnctx) @ blk.kv.weight.T
    k, v = kv[..., :32], kv[..., 32:]
    heads = []
    for h in range(4):
        s = slice(8 * h, 8 * h + 8)
        logits = q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(8)
        heads.append(torch.softmax(logits, -1) @ v[..., s])
    y = x + blk.ls1.gamma * (torch.cat(heads, -1) @ blk.out.weight.T)
    m = blk.mlp
    hidden = _ln(y, m.norm) @ m.proj1.weight.T + m.proj1.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    want = y + blk.ls2.gamma * (hidden @ m.proj2.weight.T + m.proj2.bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_res_upsample_matches_equations():
    """Residual conv units (leaky ReLU fused into the first convolution, residual in place), 1x1, 2x."""
    blk = conv_layout(randomize(ResUpsampleBil(8, 4, num_layers=2, layer_scale=0.3), seed=5), torch.device("cpu"))
    x = torch.randn(2, 8, 6, 10).contiguous(memory_format=torch.channels_last)
    keep = x.clone()
    with torch.no_grad():
        got = blk(x)
        y = x
        for unit in blk.convs:
            inner = F.conv2d(F.leaky_relu(y), unit.conv1.weight, unit.conv1.bias, padding=1)
            y = unit.gamma * F.conv2d(F.leaky_relu(inner), unit.conv2.weight, unit.conv2.bias, padding=1) + y
        want = F.interpolate(F.conv2d(y, blk.up[0].weight, blk.up[0].bias), scale_factor=2, mode="bilinear",
                             align_corners=False)
    assert got.shape == (2, 4, 12, 20)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(x, keep)  # the input is not written


def test_fourier_features_and_ray_angles_match_equations():
    torch.manual_seed(2)
    x = torch.rand(3, 2) * 3
    got = fourier_features(x, dim=12, max_freq=8)
    want = torch.empty(3, 12)
    for c in range(2):
        for j in range(6):
            f = 2.0 ** (j * math.log2(8) / 5)
            want[:, 6 * c + j] = torch.sin(math.pi * x[:, c] * f)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    r = F.normalize(torch.tensor([[0.3, -0.2, 0.9], [-0.5, 0.4, 0.7], [0.0, 0.1, 1.0]]), dim=-1)
    ang = ray_angles(r)
    torch.testing.assert_close(ang[:, 0], torch.acos(r[:, 2]))
    torch.testing.assert_close(ang[:2, 1], torch.atan2(r[:2, 1], r[:2, 0]))
    assert ang[2, 1] == pytest.approx(math.atan2(float(r[2, 1]), 1e-3), rel=1e-6)  # x = 0 kept off zero, positive


def test_camera_head_output_scaling_and_predicted_rays(small):
    model = build_unidepthv2_dsfa(SMALL)
    model.load_state_dict(small.state_dict())
    head = model.pixel_decoder.camera_layer
    c = 0.3
    with torch.no_grad():
        head.out_pinhole.proj2.weight.zero_()
        head.out_pinhole.proj2.bias.fill_(c)
    H, W = 42, 70
    with torch.no_grad():
        out = model(torch.randn(1, 3, H, W))
    diag = math.hypot(H, W)
    k = out["intrinsics"][0]
    assert float(k[0, 0]) == pytest.approx(math.exp(c) * 0.7 * diag, rel=1e-5)
    assert float(k[1, 1]) == pytest.approx(math.exp(c) * 0.7 * diag, rel=1e-5)
    assert float(k[0, 2]) == pytest.approx(W / (1 + math.exp(-c)), rel=1e-5)
    assert float(k[1, 2]) == pytest.approx(H / (1 + math.exp(-c)), rel=1e-5)
    # predicted rays: normalised K^-1 (u + .5, v + .5, 1)
    kin = np.linalg.inv(k.double().numpy())
    uu, vv = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays = np.einsum("ij,jhw->ihw", kin, np.stack([uu, vv, np.ones_like(uu)]))
    rays /= np.linalg.norm(rays, axis=0, keepdims=True)
    np.testing.assert_allclose(out["rays"][0].double().numpy(), rays, atol=1e-5)


def test_radius_depth_points_relation(small):
    model = build_unidepthv2_dsfa(SMALL)
    model.load_state_dict(small.state_dict())
    with torch.no_grad():
        last = model.pixel_decoder.depth_layer.to_depth_hr[2]
        last.weight.zero_()
        last.bias.fill_(0.5)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 28, 42))
    torch.testing.assert_close(out["radius"], torch.full_like(out["radius"], math.exp(2.5)))
    torch.testing.assert_close(out["points"], out["rays"] * math.exp(2.5))
    torch.testing.assert_close(out["depth"][:, 0], out["points"][:, 2])
    assert (out["confidence"] > 0).all()


def test_given_rays_replace_prediction_but_not_intrinsics(small):
    x = torch.randn(1, 3, 28, 42)
    k = cam.intrinsics_matrix(30.0, 33.0, 20.0, 15.0)
    rays = cam.camera_rays(k, 28, 42)
    with torch.no_grad():
        a, b = small(x), small(x, rays=rays)
    torch.testing.assert_close(a["intrinsics"], b["intrinsics"])
    torch.testing.assert_close(b["rays"], rays)
    assert not torch.allclose(a["radius"], b["radius"])  # the camera prompts the depth head
