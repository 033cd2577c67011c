"""Stage-2 Depth Anything V2 + DSFA: release layout, DSFA formulation, attention scaling,
batched stack encoding, checkpoint files and estimate_depth on the core's conventions."""

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from support import DATA, ROOT
from bokehdepth_core import stage2
from bokehdepth_core.stage2 import (CheckpointError, build_dav2_dsfa, build_from_checkpoint, detect_model,
                                    estimate_depth, load_dsfa_checkpoint, read_checkpoint)
from bokehdepth_core.stage2.dinov2 import DinoV2
from bokehdepth_core.stage2.dsfa import DSFABlock
from bokehdepth_core.stage2.inputs import lower_bound_size
from bokehdepth_core.types import BokehStack

LAYOUTS = json.loads((DATA / "dav2_dsfa_layouts.json").read_text())["layouts"]


def _randomise(model, seed=0, qkv_gain=6.0):
    """Non-trivial random weights: layer scales and biases random, sharp attention (large qkv),
    so that scaling choices change the numbers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name:
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            if name.endswith("qkv.weight"):
                p.mul_(qkv_gain)
    return model


@pytest.fixture(scope="module")
def vits():
    torch.manual_seed(0)
    return _randomise(build_dav2_dsfa("vits")).eval()


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


# --------------------------------------------------------------------------- DSFA formulation

def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _lin(x, p, name):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def _mha(x, p, name, heads, logit_div, bias=None):
    n, d = x.shape
    hd = d // heads
    qkv = _lin(x, p, name + ".qkv").reshape(n, 3, heads, hd)
    q, k, v = qkv[:, 0].transpose(0, 1), qkv[:, 1].transpose(0, 1), qkv[:, 2].transpose(0, 1)
    logits = q @ k.transpose(-1, -2) / logit_div
    if bias is not None:
        logits = logits + bias
    out = torch.softmax(logits, -1) @ v
    return _lin(out.transpose(0, 1).reshape(n, d), p, name + ".out_proj")


def _mlp(x, p, name):
    h = _lin(x, p, name + ".fc1")
    return _lin(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), p, name + ".fc2")


def dsfa_reference(p, ref, stack, k, heads=8, alibi=1.0, space_div=None):
    """One DSFA block written from the paper's equations and the release's scaling, frame by
    frame and patch by patch (float64)."""
    b, n, length, d = stack.shape
    hd = d // heads
    space_div = hd if space_div is None else space_div
    film = "focus_film.0" if "focus_film.0.weight" in p else "focus_film"
    out = torch.empty(b, length, d, dtype=torch.float64)
    for bi in range(b):
        kv = torch.cat([torch.zeros(1, dtype=torch.float64), k[bi].double()])
        frames = [ref[bi]] + [stack[bi, j] for j in range(n)]
        t = [_lin(torch.relu(_lin(kv[f:f + 1], p, "k_embed.0")), p, "k_embed.2") for f in range(n + 1)]
        xs = []
        for f, x in enumerate(frames):  # space step
            s = torch.cat([t[f].reshape(1, d), x], 0)
            s = s + p["gamma_space_attn"] * _mha(_ln(s, p["ln_space_attn.weight"], p["ln_space_attn.bias"]),
                                                  p, "space_attn", heads, space_div)
            s = s + p["gamma_space_ffn"] * _mlp(_ln(s, p["ln_space_ffn.weight"], p["ln_space_ffn.bias"]), p, "space_ffn")
            xs.append(s[1:])
        for f in range(n + 1):  # FiLM
            ab = _lin(t[f], p, film)
            xs[f] = xs[f] * (1 + torch.tanh(ab[:d])) + ab[d:]
        bias = -alibi * (kv[:, None] - kv[None, :]).abs()
        for l in range(length):  # focus step, per patch across frames
            s = torch.stack([xs[f][l] for f in range(n + 1)])
            s = s + p["gamma_focus_attn"] * _mha(_ln(s, p["ln_focus_attn.weight"], p["ln_focus_attn.bias"]),
                                                  p, "focus_attn", heads, math.sqrt(hd), bias)
            s = s + p["gamma_focus_ffn"] * _mlp(_ln(s, p["ln_focus_ffn.weight"], p["ln_focus_ffn.bias"]), p, "focus_ffn")
            out[bi, l] = s[0]
    return out


@pytest.mark.parametrize("film_sequential", [True, False])
def test_dsfa_block_matches_equations(film_sequential):
    torch.manual_seed(1)
    d, heads = 64, 8
    block = _randomise(DSFABlock(d, num_heads=heads, film_sequential=film_sequential, alibi_scale=0.7), seed=3)
    with torch.no_grad():
        block.k_embed[0].weight.mul_(0.05)
    assert ("focus_film.0.weight" in block.state_dict()) == film_sequential
    ref = torch.randn(2, 5, d)
    stack = torch.randn(2, 3, 5, d)
    k = torch.tensor([[4.0, 11.0, 30.0], [2.0, 2.5, 9.0]])
    p = {kk: v.double() for kk, v in block.state_dict().items()}
    want = dsfa_reference(p, ref.double(), stack.double(), k, heads, alibi=0.7)
    with torch.no_grad():
        got = block(ref, stack, k)
        got3 = block(ref, stack, k.unsqueeze(-1))
        got64 = block.double()(ref.double(), stack.double(), k.double())
    assert torch.allclose(got64, want, atol=1e-10, rtol=0)
    assert torch.allclose(got.double(), want, atol=2e-5, rtol=0)
    assert torch.equal(got, got3)
    # the space step's double scaling is what the module does (textbook scaling differs clearly)
    other = dsfa_reference(p, ref.double(), stack.double(), k, heads, alibi=0.7, space_div=math.sqrt(d // heads))
    assert (other - want).abs().max() > 1e-3


def test_dsfa_block_without_stack_returns_reference():
    block = DSFABlock(32, num_heads=4)
    ref = torch.randn(1, 6, 32)
    assert block(ref, None, None) is ref
    assert block(ref, torch.empty(1, 0, 6, 32), torch.empty(1, 0)) is ref


# --------------------------------------------------------------------------- backbone attention scale

def test_backbone_attention_scaling():
    torch.manual_seed(2)
    vit = _randomise(DinoV2(embed_dim=64, depth=2, num_heads=4, img_size=56), seed=5).eval()
    attn = vit.blocks[0].attn
    x = torch.randn(2, 9, 64)
    qkv = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(2, 9, 3, 4, 16).permute(2, 0, 3, 1, 4)

    def manual(div):
        w = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / div, -1)
        return ((w @ qkv[2]).transpose(1, 2).reshape(2, 9, 64)) @ attn.proj.weight.T + attn.proj.bias

    with torch.no_grad():
        vit.attn_scale = "standard"
        std = attn(x)
        vit.attn_scale = "release_sdpa"
        rel = attn(x)
        assert all(b.attn.double_scale for b in vit.blocks)
        assert torch.allclose(std, manual(4.0), atol=1e-5)
        assert torch.allclose(rel, manual(16.0), atol=1e-5)
        assert (std - rel).abs().max() > 1e-2
    with pytest.raises(ValueError, match="attn_scale"):
        vit.attn_scale = "sqrt"


def test_loader_sets_backbone_scale_from_file(vits):
    sd = vits.state_dict()
    m = build_dav2_dsfa("vits")
    m.attn_scale = "standard"
    load_dsfa_checkpoint(m, sd)
    assert m.attn_scale == "release_sdpa"
    with torch.device("meta"):
        plain = build_dav2_dsfa("vits", fusion_layers=())
    plain.attn_scale = "release_sdpa"
    load_dsfa_checkpoint(plain, {k: v for k, v in sd.items() if not k.startswith("encoder_fusion.")}, assign=True)
    assert plain.attn_scale == "standard"


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


# --------------------------------------------------------------------------- checkpoint files

@pytest.mark.slow
def test_round_trips(vits, tmp_path):
    from safetensors.torch import save_file

    sd = vits.state_dict()
    ddp = tmp_path / "DAV2_dsfa_release.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, ddp)
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": sd}, bare)
    st = tmp_path / "dsfa.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    x = torch.randn(1, 3, 28, 42)
    s = torch.randn(1, 2, 3, 28, 42)
    k = torch.tensor([[6.0, 18.0]])
    with torch.no_grad():
        want = vits(x, s, k)
    for path in (ddp, bare, st):
        assert detect_model(read_checkpoint(str(path))) == ("dav2", "vits")
        m = build_from_checkpoint(str(path))
        assert m.has_dsfa and m.encoder == "vits" and m.attn_scale == "release_sdpa" and not m.training
        assert all(torch.equal(v, sd[kk]) for kk, v in m.state_dict().items())
        if path == ddp:
            with torch.no_grad():
                assert torch.equal(m(x, s, k), want)
    fresh = load_dsfa_checkpoint(build_dav2_dsfa("vits"), str(ddp))
    assert torch.equal(fresh.state_dict()["pretrained.pos_embed"], sd["pretrained.pos_embed"])


def test_plain_dav2_files(vits, tmp_path):
    sd = {k: v for k, v in vits.state_dict().items() if not k.startswith("encoder_fusion.")}
    rel = tmp_path / "depth_anything_v2_vits.pth"
    met = tmp_path / "depth_anything_v2_metric_hypersim_vits.pth"
    torch.save(sd, rel)
    torch.save(sd, met)
    assert detect_model(sd) == ("dav2_plain", "vits")
    mr = build_from_checkpoint(str(rel))
    mm = build_from_checkpoint(str(met))
    assert not mr.has_dsfa and not mr.metric and mr.attn_scale == "standard"
    assert mm.metric and mm.max_depth == 20.0
    img = torch.rand(1, 28, 42, 3)
    out = estimate_depth(mr, img, torch.rand(1, 2, 28, 42, 3), [3.0, 9.0], input_size=28)
    assert out["relative"] and not out["used_stack"] and out["depth"].shape == (1, 28, 42)
    assert torch.isfinite(out["depth"]).all() and (out["depth"] > 0).all()
    outm = estimate_depth(mm, img, input_size=28)
    assert not outm["relative"] and float(outm["depth"].max()) <= 20.0


def test_wrong_files_give_readable_errors(vits, tmp_path):
    sd = vits.state_dict()
    plain = {k: v for k, v in sd.items() if not k.startswith("encoder_fusion.")}
    with pytest.raises(CheckpointError, match="plain Depth Anything V2") as e:
        load_dsfa_checkpoint(build_dav2_dsfa("vits"), plain)
    assert "missing keys" in str(e.value) and "encoder_fusion.layers.2.block" in str(e.value)
    with torch.device("meta"):
        vitb = build_dav2_dsfa("vitb")
    with pytest.raises(CheckpointError, match="wrong encoder size: the file is vits, the model is vitb"):
        load_dsfa_checkpoint(vitb, sd)
    with torch.device("meta"):
        nodsfa = build_dav2_dsfa("vits", fusion_layers=())
    with pytest.raises(CheckpointError, match="built without DSFA"):
        load_dsfa_checkpoint(nodsfa, sd)
    uni = {"pixel_encoder.backbone.cls_token": torch.zeros(1, 1, 1024),
           "pixel_encoder.backbone.patch_embed.proj.weight": torch.zeros(1024, 3, 14, 14),
           "pixel_decoder.x": torch.zeros(3)}
    with pytest.raises(CheckpointError, match="(?i)unidepth") as e:
        load_dsfa_checkpoint(vitb, uni)
    assert "unexpected keys" in str(e.value)
    with pytest.raises(CheckpointError, match="unknown weight file layout"):
        detect_model({"backbone.embeddings.x": torch.zeros(2)})
    bad = tmp_path / "code.pth"
    torch.save({"model": sd, "obj": logging.getLogger("x")}, bad)
    with pytest.raises(CheckpointError, match="weights-only"):
        read_checkpoint(str(bad))
    with pytest.raises(FileNotFoundError, match="DAV2_dsfa_release"):
        read_checkpoint(str(tmp_path / "missing.pth"))


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
    assert out["depth"].shape == (2, 30, 40) and out["depth"].dtype == torch.float32
    assert out["network_size"] == (28, 42) and out["used_stack"]
    assert out["confidence"] is None and out["intrinsics"] is None and out["points"] is None
    assert calls == [(1, 2), (2, 2)]
    # same numbers as the model on the release preprocessing (bicubic, ImageNet norm, bilinear back)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def prep(t):
        return (F.interpolate(t.permute(0, 3, 1, 2), (28, 42), mode="bicubic", align_corners=False) - mean) / std

    with torch.no_grad():
        raw = vits(prep(img[1:]), prep(stack[1]).unsqueeze(0), torch.tensor([[4.0, 10.0, 25.0]]))
    want = F.interpolate(raw[:, None], (30, 40), mode="bilinear", align_corners=True)[:, 0]
    assert torch.allclose(out["depth"][1:], want, atol=1e-4)
    # a BokehStack carries its own K
    bs = BokehStack(frames=stack, k_values=torch.tensor([4.0, 10.0, 25.0]), reference=img)
    out2 = estimate_depth(vits, img, bs, input_size=28)
    assert torch.allclose(out2["depth"], out["depth"], atol=1e-5)
    single = estimate_depth(vits, img[:1], input_size=28)
    assert single["depth"].shape == (1, 30, 40) and not single["used_stack"]


def test_estimate_depth_bad_input(vits, caplog):
    img = torch.rand(1, 28, 42, 3)
    small = torch.rand(1, 2, 20, 24, 3)
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        out = estimate_depth(vits, img, small, [3.0, 9.0], input_size=28)
    assert out["depth"].shape == (1, 28, 42)
    assert any("resizing the stack" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match="k_values must give one K per stack frame"):
        estimate_depth(vits, img, torch.rand(1, 2, 28, 42, 3), [3.0, 9.0, 12.0], input_size=28)
    with pytest.raises(ValueError, match="no k_values"):
        estimate_depth(vits, img, torch.rand(1, 2, 28, 42, 3), None, input_size=28)
    nan = img.clone()
    nan[0, 3, 4, 1] = float("nan")
    with pytest.raises(ValueError, match="image contains NaN"):
        estimate_depth(vits, nan, input_size=28)
    bad_stack = torch.rand(1, 2, 28, 42, 3)
    bad_stack[0, 1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="stack contains NaN"):
        estimate_depth(vits, img, bad_stack, [1.0, 2.0], input_size=28)
    with pytest.raises(ValueError, match=r"image must be \[B,H,W,3\]"):
        estimate_depth(vits, torch.rand(1, 3, 28, 42), input_size=28)
    with pytest.raises(ValueError, match="k_values contains NaN"):
        estimate_depth(vits, img, torch.rand(1, 2, 28, 42, 3), [1.0, float("nan")], input_size=28)
    with pytest.raises(ValueError, match="Stage-2 depth model"):
        estimate_depth(torch.nn.Linear(2, 2), img)


def test_position_embedding_resize_as_dav2():
    torch.manual_seed(6)
    vit = DinoV2(embed_dim=32, depth=1, num_heads=4, img_size=14 * 6)  # 6x6 stored grid
    pos = vit.pos_embed.detach()
    assert torch.equal(vit.interpolate_pos_encoding(37, 84, 84, torch.float32), pos)  # same grid: unchanged
    got = vit.interpolate_pos_encoding(1 + 4 * 7, 56, 98, torch.float32)
    grid = pos[:, 1:].reshape(1, 6, 6, 32).permute(0, 3, 1, 2)
    # DAv2: bicubic with the scale factor (rows+0.1)/6, (cols+0.1)/6, which also sets the sampling grid
    want = F.interpolate(grid, scale_factor=(4.1 / 6, 7.1 / 6), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 28, 32)
    assert torch.allclose(got[:, 1:], want, atol=1e-6) and torch.equal(got[:, :1], pos[:, :1])
    by_size = F.interpolate(grid, size=(4, 7), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 28, 32)
    assert (by_size - want).abs().max() > 1e-4
