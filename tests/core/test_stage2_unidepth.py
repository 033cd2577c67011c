"""Stage-2 UniDepthV2 + DSFA: release layout, decoder pieces against the equations, encoder wiring,
UniDepthV2's input geometry and camera handling, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bokehdepth_core import stage2
from support import DATA, UNIDEPTH_SMALL as SMALL, randomize
from bokehdepth_core.stage2 import build_unidepthv2_dsfa
from bokehdepth_core import camera as cam
from bokehdepth_core.stage2 import geometry
from bokehdepth_core.stage2.unidepth import RELEASE_CONFIG
from bokehdepth_core.stage2.unidepth_decoder import AttentionBlock, fourier_features, ray_angles

LAYOUT = json.loads((DATA / "udv2_dsfa_vitl14_layout.json").read_text())["tensors"]

@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return randomize(build_unidepthv2_dsfa(SMALL))


# --------------------------------------------------------------------------- layout

def test_release_layout_on_meta_matches_reference_in_order():
    with torch.device("meta"):
        model = build_unidepthv2_dsfa()
    mine = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert len(mine) == len(LAYOUT) == 656
    assert {k for k, _ in mine} == {k for k, _ in LAYOUT}
    assert dict((k, s) for k, s in mine) == dict((k, s) for k, s in LAYOUT)
    # same order too: an EMA list in a UniDepth checkpoint is aligned by state-dict order
    assert [k for k, _ in mine] == [k for k, _ in LAYOUT]
    assert stage2.detect_model(model.state_dict()) == ("unidepthv2", "vitl14")


def test_authors_nested_config_gives_release_model():
    nested = {"model": {"name": "UniDepthV2DSFA", "num_heads": 8, "expansion": 4, "layer_scale": 1.0,
                        "pixel_decoder": {"hidden_dim": 512, "depths": [2, 2, 2], "out_dim": 64, "kernel_size": 3},
                        "pixel_encoder": {"name": "dinov2_vitl14_DSFA", "output_idx": [6, 12, 18, 24],
                                          "fusion_layers": [0, 1, 2, 3], "fusion_num_heads": 8,
                                          "fusion_layerscale": 0.1, "alibi_scale": 1.0, "use_norm": True}},
              "data": {"augmentations": {"shape_constraints": {"ratio_bounds": [0.5, 2.5], "pixels_min": 200000,
                                                                "pixels_max": 600000, "shape_mult": 14}}}}
    with torch.device("meta"):
        model = build_unidepthv2_dsfa(nested)
    assert model.config == RELEASE_CONFIG


@pytest.mark.parametrize("bad, match", [
    ({"no_such_key": 1}, "unknown UniDepthV2 config keys"),
    ({"output_idx": [2, 1, 3, 4]}, "output_idx"),
    ({"fusion_layers": [0, 7]}, "fusion_layers"),
])
def test_bad_config(bad, match):
    with pytest.raises(ValueError, match=match):
        build_unidepthv2_dsfa({**SMALL, **bad})


# --------------------------------------------------------------------------- decoder pieces

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


# --------------------------------------------------------------------------- encoder wiring

@torch.no_grad()
def test_encoder_batched_frames_equal_separate_frames_and_fuse_last_block(small):
    torch.manual_seed(4)
    enc = small.pixel_encoder
    x, stack, k = torch.randn(2, 3, 28, 42), torch.randn(2, 3, 3, 28, 42), torch.tensor([[4., 9., 20.], [1., 2., 30.]])
    feats, cls = enc(x, stack, k)
    plain, _ = enc(x)
    taps = [i - 1 for i in SMALL["output_idx"]]
    ref = enc.backbone.get_intermediate_layers(x, taps, return_class_token=True)
    frames = [enc.backbone.get_intermediate_layers(stack[:, j], taps, return_class_token=True) for j in range(3)]
    for s in range(4):
        st = torch.stack([frames[j][s][0] for j in range(3)], dim=1)
        want = enc.fusion_blocks[str(s)](ref[s][0], st, k).reshape(2, 2, 3, -1)
        torch.testing.assert_close(feats[s], want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(cls[s], ref[s][1].unsqueeze(1), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(plain[s], ref[s][0].reshape(2, 2, 3, -1), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(plain[s], feats[s], atol=1e-3)


def test_stack_order_with_its_k_does_not_matter_but_k_does(small):
    torch.manual_seed(5)
    x, stack = torch.randn(1, 3, 28, 28), torch.randn(1, 3, 3, 28, 28)
    k = torch.tensor([[5., 12., 25.]])
    perm = [2, 0, 1]
    with torch.no_grad():
        a = small(x, stack, k)["depth"]
        b = small(x, stack[:, perm], k[:, perm])["depth"]
        c = small(x, stack, k.flip(1))["depth"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a, c, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- geometry

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


def test_given_camera_rays_survive_the_round_trip_at_image_resolution(small):
    """A camera given in image pixels, mapped into the padded network input and back, yields the
    rays of that camera at the image's own pixels (sizes chosen so that no resampling happens:
    UniDepthV2 scales intrinsics by the nominal factor, exact only then)."""
    H, W = 42, 140  # aspect 3.3: padded to 56 x 140 (7 rows top and bottom), within the pixel budget
    k = cam.intrinsics_matrix(70.0, 75.0, 60.0, 17.0)
    out = small.estimate(torch.rand(1, H, W, 3), camera=k)
    assert out["paddings"] == (0, 0, 7, 7) and out["network_size"] == (56, 140)
    want = cam.camera_rays(k, H, W)[0].permute(1, 2, 0)
    torch.testing.assert_close(out["rays"][0], want, rtol=1e-5, atol=1e-5)
    # the principal point's ray looks straight ahead (pixel centres at +0.5)
    assert out["rays"][0, 16, 59].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=0.02)
    # the predicted camera also comes back in image pixels: same mapping, model's own values
    net = geometry.camera_to_network(out["intrinsics"], out["paddings"], 1.0)
    assert float(net[0, 1, 2]) == pytest.approx(float(out["intrinsics"][0, 1, 2]) + 7, rel=1e-6)


# --------------------------------------------------------------------------- estimate

def test_estimate_outputs_and_batch_equals_single(small):
    torch.manual_seed(8)
    img, stack = torch.rand(2, 50, 80, 3), torch.rand(2, 2, 50, 80, 3)
    k = torch.tensor([[6.0, 18.0], [3.0, 27.0]])
    out = stage2.estimate_depth(small, img, stack, k)
    assert out["depth"].shape == (2, 50, 80) and out["points"].shape == (2, 50, 80, 3)
    assert out["confidence"].shape == (2, 50, 80) and out["intrinsics"].shape == (2, 3, 3)
    assert out["used_stack"] and not out["relative"] and out["camera"] == "predicted"
    torch.testing.assert_close(out["depth"], out["points"][..., 2])
    assert torch.isfinite(out["points"]).all() and (out["depth"] > 0).all()
    assert (out["intrinsics"][:, 0, 0] > 0).all()
    one = small.estimate(img[1:], stack[1:], k[1:])
    torch.testing.assert_close(out["depth"][1:], one["depth"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["intrinsics"][1:], one["intrinsics"], rtol=1e-4, atol=1e-4)


def test_camera_options_and_callers_tensor_untouched(small):
    img = torch.rand(1, 40, 60, 3)
    k = cam.intrinsics_matrix(50.0, 50.0, 30.0, 20.0)
    keep = k.clone()
    given = small.estimate(img, camera=k)
    assert torch.equal(k, keep)
    predicted = small.estimate(img)
    guess = stage2.estimate_depth(small, img, camera="authors_guess")
    explicit = small.estimate(img, camera=cam.default_camera(60, 40))
    torch.testing.assert_close(guess["depth"], explicit["depth"])
    torch.testing.assert_close(given["intrinsics"], predicted["intrinsics"])  # always the model's own
    assert not torch.allclose(given["depth"], predicted["depth"])
    assert given["camera"] == "given" and guess["camera"] == "authors_guess"
    assert torch.equal(cam.default_camera(60, 40)[0], torch.tensor([[42.0, 0, 30], [0, 42, 20], [0, 0, 1]]))


def test_resolution_level_picks_network_size(small):
    img = torch.rand(1, 60, 80, 3)
    lo = small.estimate(img, resolution_level=0)["network_size"]
    hi = small.estimate(img, resolution_level=9)["network_size"]
    assert lo[0] * lo[1] < hi[0] * hi[1]
    with pytest.raises(ValueError, match="resolution_level"):
        small.estimate(img, resolution_level=12)


def test_extreme_aspect_is_padded_like_unidepth(small):
    out = small.estimate(torch.rand(1, 12, 400, 3))
    h, w = out["network_size"]
    assert 0.5 <= w / h <= 2.5 + 14 / h
    assert out["depth"].shape == (1, 12, 400) and torch.isfinite(out["depth"]).all()


@pytest.mark.parametrize("camera, match", [
    (torch.eye(2), "3x3"),
    (torch.zeros(1, 3, 4), "3x3"),
    (cam.intrinsics_matrix(0.0, 50.0, 30.0, 20.0), "focal"),
    (cam.intrinsics_matrix(-5.0, 50.0, 30.0, 20.0), "focal"),
    (cam.intrinsics_matrix(float("nan"), 50.0, 30.0, 20.0), "NaN"),
    (cam.intrinsics_matrix(50.0, 50.0, 30.0, 20.0) * 2, "pinhole"),
    (torch.stack([torch.eye(3)] * 3), "batch"),
    ("guess", "camera must be"),
])
def test_bad_camera(small, camera, match):
    with pytest.raises(ValueError, match=match):
        small.estimate(torch.rand(2, 28, 28, 3), camera=camera)


def test_bad_stack_and_k(small):
    img, stack = torch.rand(1, 28, 28, 3), torch.rand(1, 2, 28, 28, 3)
    with pytest.raises(ValueError, match="one K per stack frame"):
        small.estimate(img, stack, [5.0, 10.0, 20.0])
    with pytest.raises(ValueError, match="k_values"):
        small.estimate(img, stack, None)
    with pytest.raises(ValueError, match="focus_stack"):
        small(torch.randn(1, 3, 28, 28), torch.randn(1, 2, 3, 14, 28), torch.ones(1, 2))
    with pytest.raises(ValueError, match="k_stack"):
        small(torch.randn(1, 3, 28, 28), torch.randn(1, 2, 3, 28, 28), torch.ones(1, 3))
    with pytest.raises(ValueError, match="multiples of 14"):
        small(torch.randn(1, 3, 30, 28))
