"""UniDepthV2 + DSFA: release layout, configuration, encoder wiring, and estimates (UniDepthV2's input
geometry, camera handling, bad input) on the core's conventions."""

from __future__ import annotations

import json

import pytest
import torch

from bokehdepth_core import camera as cam
from bokehdepth_core import stage2
from bokehdepth_core.stage2 import build_unidepthv2_dsfa
from bokehdepth_core.stage2 import unidepth_geometry as geometry
from bokehdepth_core.stage2.unidepth import RELEASE_CONFIG
from bokehdepth_core.types import DepthMap
from support import DATA, UNIDEPTH_SMALL as SMALL, randomize

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


def test_given_camera_rays_survive_the_round_trip_at_image_resolution(small):
    """A camera given in image pixels, mapped into the padded network input and back, yields the
    rays of that camera at the image's own pixels (sizes chosen so that no resampling happens:
    UniDepthV2 scales intrinsics by the nominal factor, exact only then)."""
    H, W = 42, 140  # aspect 3.3: padded to 56 x 140 (7 rows top and bottom), within the pixel budget
    k = cam.intrinsics_matrix(70.0, 75.0, 60.0, 17.0)
    out = small.estimate(torch.rand(1, H, W, 3), camera=k)
    assert out.meta["paddings"] == (0, 0, 7, 7) and out.meta["network_size"] == (56, 140)
    want = cam.camera_rays(k, H, W)[0].permute(1, 2, 0)
    torch.testing.assert_close(out.meta["rays"][0], want, rtol=1e-5, atol=1e-5)
    # the principal point's ray looks straight ahead (pixel centres at +0.5)
    assert out.meta["rays"][0, 16, 59].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=0.02)
    # the predicted camera also comes back in image pixels: same mapping, model's own values
    net = geometry.camera_to_network(out.intrinsics, out.meta["paddings"], 1.0)
    assert float(net[0, 1, 2]) == pytest.approx(float(out.intrinsics[0, 1, 2]) + 7, rel=1e-6)


# --------------------------------------------------------------------------- estimate

def test_estimate_outputs_and_batch_equals_single(small):
    torch.manual_seed(8)
    img, stack = torch.rand(2, 50, 80, 3), torch.rand(2, 2, 50, 80, 3)
    k = torch.tensor([[6.0, 18.0], [3.0, 27.0]])
    out = stage2.estimate_depth(small, img, stack, k)
    assert isinstance(out, DepthMap) and "rays" in out.meta and "points" not in out.meta
    assert out.depth.shape == (2, 50, 80) and out.points.shape == (2, 50, 80, 3)
    assert out.confidence.shape == (2, 50, 80) and out.intrinsics.shape == (2, 3, 3)
    assert out.meta["used_stack"] and not out.meta["relative"] and out.meta["camera"] == "predicted"
    torch.testing.assert_close(out.depth, out.points[..., 2])
    assert torch.isfinite(out.points).all() and (out.depth > 0).all()
    assert (out.intrinsics[:, 0, 0] > 0).all()
    one = small.estimate(img[1:], stack[1:], k[1:])
    torch.testing.assert_close(out.depth[1:], one.depth, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.intrinsics[1:], one.intrinsics, rtol=1e-4, atol=1e-4)


def test_camera_options_and_callers_tensor_untouched(small):
    img = torch.rand(1, 40, 60, 3)
    k = cam.intrinsics_matrix(50.0, 50.0, 30.0, 20.0)
    keep = k.clone()
    given = small.estimate(img, camera=k)
    assert torch.equal(k, keep)
    predicted = small.estimate(img)
    guess = stage2.estimate_depth(small, img, camera="authors_guess")
    explicit = small.estimate(img, camera=cam.default_camera(60, 40))
    torch.testing.assert_close(guess.depth, explicit.depth)
    torch.testing.assert_close(given.intrinsics, predicted.intrinsics)  # always the model's own
    assert not torch.allclose(given.depth, predicted.depth)
    assert given.meta["camera"] == "given" and guess.meta["camera"] == "authors_guess"
    assert torch.equal(cam.default_camera(60, 40)[0], torch.tensor([[42.0, 0, 30], [0, 42, 20], [0, 0, 1]]))


def test_resolution_level_picks_network_size(small):
    img = torch.rand(1, 60, 80, 3)
    lo = small.estimate(img, resolution_level=0).meta["network_size"]
    hi = small.estimate(img, resolution_level=9).meta["network_size"]
    assert lo[0] * lo[1] < hi[0] * hi[1]
    with pytest.raises(ValueError, match="resolution_level"):
        small.estimate(img, resolution_level=12)


def test_extreme_aspect_is_padded_like_unidepth(small):
    out = small.estimate(torch.rand(1, 12, 96, 3))  # 8:1, the most Stage-2 takes
    h, w = out.meta["network_size"]
    assert 0.5 <= w / h <= 2.5 + 14 / h
    assert out.depth.shape == (1, 12, 96) and torch.isfinite(out.depth).all()
    with pytest.raises(ValueError, match="aspect ratio of 33.3:1"):
        small.estimate(torch.rand(1, 12, 400, 3))


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
