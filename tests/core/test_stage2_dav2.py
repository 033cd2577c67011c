"""Depth Anything V2 + DSFA: release layout, batched stack encoding, forward checks, the release's
preprocessing and estimates on the core's conventions."""

import json

import pytest
import torch
import torch.nn.functional as F

from support import DATA, dav2_vits
from bokehdepth_core.stage2 import build_dav2_dsfa, estimate_depth
from bokehdepth_core.stage2.dav2 import lower_bound_size
from bokehdepth_core.types import BokehStack, DepthMap

LAYOUTS = json.loads((DATA / "dav2_dsfa_layouts.json").read_text())["layouts"]


@pytest.fixture(scope="module")
def vits():
    return dav2_vits()


# --------------------------------------------------------------------------- layout

@pytest.mark.parametrize("encoder", ["vits", "vitb", "vitl", "vitg"])
def test_layout_matches_release(encoder):
    ref = LAYOUTS[encoder]
    with torch.device("meta"):
        model = build_dav2_dsfa(encoder, **{k: ref["config"][k] for k in
                                            ("max_depth", "fusion_layers", "num_heads", "layerscale_init", "alibi_scale")})
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(got) - set(ref["tensors"])) == []
    assert sorted(set(ref["tensors"]) - set(got)) == []
    assert {k: v for k, v in got.items() if ref["tensors"][k] != v} == {}
    assert model.intermediate_layer_idx == ref["intermediate_layer_idx"]


def test_plain_layout_is_release_minus_dsfa():
    ref = LAYOUTS["vitb"]["tensors"]
    with torch.device("meta"):
        model = build_dav2_dsfa("vitb", fusion_layers=())
    assert set(model.state_dict()) == {k for k in ref if not k.startswith("encoder_fusion.")}
    assert model.attn_scale == "standard" and not model.has_dsfa


# --------------------------------------------------------------------------- forward

@pytest.mark.slow
def test_batched_stack_equals_frame_by_frame(vits):
    torch.manual_seed(3)
    b, n, h, w = 2, 3, 28, 42
    x = torch.randn(b, 3, h, w)
    stack = torch.randn(b, n, 3, h, w)
    k = torch.tensor([[5.0, 12.0, 30.0], [1.0, 8.0, 20.0]])
    with torch.no_grad():
        got = vits(x, stack, k)
        ref_feats = vits.encode(x)
        frame_feats = [vits.encode(stack[:, j]) for j in range(n)]
        feats = []
        for i, (tok, cls) in enumerate(ref_feats):
            if i in vits.fusion_layers:
                st = torch.stack([ff[i][0] for ff in frame_feats], 1)
                tok = vits.encoder_fusion.layers[str(i)].block(tok, st, k.unsqueeze(-1))
            feats.append((tok, cls))
        want = vits.depth_head(feats, h // 14, w // 14).squeeze(1) * vits.max_depth
        plain = vits(x)
        plain_n0 = vits(x, torch.empty(b, 0, 3, h, w), torch.empty(b, 0))
    assert got.shape == (b, h, w)
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-4)
    assert torch.equal(plain, plain_n0)
    assert (got - plain).abs().max() > 1e-3  # the stack changes the result
    # swapping the K values changes the result too
    with torch.no_grad():
        swapped = vits(x, stack, k.flip(-1))
    assert (swapped - got).abs().max() > 1e-4


def test_forward_bad_arguments(vits):
    x = torch.randn(1, 3, 28, 28)
    with pytest.raises(ValueError, match="k_stack"):
        vits(x, torch.randn(1, 2, 3, 28, 28), None)
    with pytest.raises(ValueError, match="k_stack"):
        vits(x, torch.randn(1, 2, 3, 28, 28), torch.ones(1, 3))
    with pytest.raises(ValueError, match="focus_stack"):
        vits(x, torch.randn(1, 2, 3, 28, 42), torch.ones(1, 2))
    with pytest.raises(ValueError, match="multiple of the patch"):
        vits(torch.randn(1, 3, 30, 28))


def _plain_rcu(unit, x):
    out = unit.conv1(F.relu(x))
    out = unit.bn1(out) if unit.use_bn else out
    out = unit.conv2(F.relu(out))
    return (unit.bn2(out) if unit.use_bn else out) + x


def _plain_fusion(block, x, skip=None, size=None):
    if skip is not None:
        x = x + _plain_rcu(block.resConfUnit1, skip)
    x = _plain_rcu(block.resConfUnit2, x)
    x = F.interpolate(x, **({"scale_factor": 2} if size is None else {"size": tuple(size)}),
                      mode="bilinear", align_corners=True)
    return block.out_conv(x)


@pytest.mark.parametrize("use_bn,metric", [(False, True), (True, True), (True, False)])
def test_dpt_head_is_the_release_math(use_bn, metric):
    """The head's fused convolution+ReLU and in-place residuals compute the release's op sequence."""
    from bokehdepth_core.stage2.dpt import DPTHead
    torch.manual_seed(7)
    head = DPTHead(32, features=16, use_bn=use_bn, out_channels=(8, 16, 32, 32), metric=metric).eval()
    if not metric:  # a ReLU output: keep it off zero
        torch.nn.init.constant_(head.scratch.output_conv2[2].bias, 1.0)
    for m in head.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3), m.running_var.uniform_(0.5, 2.0)
    ph, pw = 4, 6
    feats = [(torch.randn(2, ph * pw, 32), torch.randn(2, 32)) for _ in range(4)]
    with torch.no_grad():
        got = head(feats, ph, pw)
        s = head.scratch
        maps = [head.resize_layers[i](head.projects[i](t.permute(0, 2, 1).reshape(2, 32, ph, pw)))
                for i, (t, _) in enumerate(feats)]
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1))
        p = _plain_fusion(s.refinenet4, l4, size=l3.shape[2:])
        p = _plain_fusion(s.refinenet3, p, l3, size=l2.shape[2:])
        p = _plain_fusion(s.refinenet2, p, l2, size=l1.shape[2:])
        p = _plain_fusion(s.refinenet1, p, l1)
        out = F.interpolate(s.output_conv1(p), (ph * 14, pw * 14), mode="bilinear", align_corners=True)
        want = s.output_conv2(out)
    assert got.shape == (2, 1, ph * 14, pw * 14)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got.min() >= 0 and got.std() > 1e-3 and (got.max() <= 1 if metric else True)


# --------------------------------------------------------------------------- estimate_depth

def test_lower_bound_size_matches_release_rule():
    assert lower_bound_size(480, 640) == (518, 686)
    assert lower_bound_size(1080, 1920) == (518, 924)
    assert lower_bound_size(518, 518) == (518, 518)
    assert lower_bound_size(800, 600) == (686, 518)
    assert lower_bound_size(30, 40, 28) == (28, 42)


def test_estimate_depth_shapes_and_conventions(vits):
    torch.manual_seed(4)
    img = torch.rand(2, 30, 40, 3)
    stack = torch.rand(2, 3, 30, 40, 3)
    calls = []
    out = estimate_depth(vits, img, stack, [4.0, 10.0, 25.0], input_size=28, callback=lambda d, t: calls.append((d, t)))
    assert isinstance(out, DepthMap)
    assert out.depth.shape == (2, 30, 40) and out.depth.dtype == torch.float32
    assert out.meta["network_size"] == (28, 42) and out.meta["used_stack"] and not out.meta["relative"]
    assert out.confidence is None and out.intrinsics is None and out.points is None
    per = len(vits.progress_modules())  # progress counts the ViT blocks and the head
    assert per == 13 and calls[-1] == (2 * per, 2 * per) and (per, 2 * per) in calls
    # same numbers as the model on the release preprocessing (bicubic, ImageNet norm, bilinear back)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def prep(t):
        return (F.interpolate(t.permute(0, 3, 1, 2), (28, 42), mode="bicubic", align_corners=False) - mean) / std

    with torch.no_grad():
        raw = vits(prep(img[1:]), prep(stack[1]).unsqueeze(0), torch.tensor([[4.0, 10.0, 25.0]]))
    want = F.interpolate(raw[:, None], (30, 40), mode="bilinear", align_corners=True)[:, 0]
    assert torch.allclose(out.depth[1:], want, atol=1e-4)
    # a BokehStack carries its own K
    bs = BokehStack(frames=stack, k_values=torch.tensor([4.0, 10.0, 25.0]), reference=img)
    out2 = estimate_depth(vits, img, bs, input_size=28)
    assert torch.allclose(out2.depth, out.depth, atol=1e-5)
    single = estimate_depth(vits, img[:1], input_size=28)
    assert single.depth.shape == (1, 30, 40) and not single.meta["used_stack"]
