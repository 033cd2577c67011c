"""Stage-2 weight files: the releases' formats round-trip, detection, the loader's settings
(backbone attention scale, plain heads, EMA overlay) and readable errors for wrong files."""

import logging

import pytest
import torch
from safetensors.torch import save_file

from support import UNIDEPTH_SMALL as SMALL, dav2_vits, randomize
from bokehdepth_core import stage2
from bokehdepth_core.stage2 import (CheckpointError, build_dav2_dsfa, build_from_checkpoint, build_unidepthv2_dsfa,
                                    detect_model, estimate_depth, load_dsfa_checkpoint, read_checkpoint)
from bokehdepth_core.stage2 import unidepth
from bokehdepth_core.stage2.unidepth_config import config_from_state_dict


@pytest.fixture(scope="module")
def vits():
    return dav2_vits()


@pytest.fixture(scope="module")
def small_sd():
    torch.manual_seed(0)
    return randomize(build_unidepthv2_dsfa(SMALL), seed=11).state_dict()


def _same_weights(model, sd):
    own = model.state_dict()
    return own.keys() == sd.keys() and all(torch.equal(own[k], sd[k].to(own[k].dtype)) for k in sd)


# --------------------------------------------------------------------------- Depth Anything V2

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
    assert out.meta["relative"] and not out.meta["used_stack"] and out.depth.shape == (1, 28, 42)
    assert "not metres" in out.meta["units"]
    assert torch.isfinite(out.depth).all() and (out.depth > 0).all()
    outm = estimate_depth(mm, img, input_size=28)
    assert not outm.meta["relative"] and float(outm.depth.max()) <= 20.0


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


# --------------------------------------------------------------------------- UniDepthV2

@pytest.mark.parametrize("form", ["model_module", "bare", "state_dict", "safetensors"])
def test_release_format_round_trip(tmp_path, small_sd, form):
    path = tmp_path / ("udv2.safetensors" if form == "safetensors" else "udv2.pth")
    if form == "model_module":
        torch.save({"model": {f"module.{k}": v for k, v in small_sd.items()}, "step": 10,
                    "config": {"model": {"name": "UniDepthV2DSFA"}}}, path)
    elif form == "bare":
        torch.save(small_sd, path)
    elif form == "state_dict":
        torch.save({"state_dict": small_sd}, path)
    else:
        save_file({k: v.contiguous() for k, v in small_sd.items()}, str(path))
    assert stage2.detect_model(stage2.read_checkpoint(str(path))) == ("unidepthv2", "vit128x4")
    model = stage2.build_from_checkpoint(str(path), config={"pixels_min": 3000, "pixels_max": 9000})
    assert type(model).__name__ == "UniDepthV2DSFA" and _same_weights(model, small_sd)
    assert model.config["fusion_layers"] == [0, 1, 2, 3] and model.config["out_dim"] == SMALL["out_dim"]
    fresh = build_unidepthv2_dsfa(SMALL)
    stage2.load_dsfa_checkpoint(fresh, str(path))
    assert _same_weights(fresh, small_sd)
    img = torch.rand(1, 28, 42, 3)
    torch.testing.assert_close(model.estimate(img).depth, fresh.estimate(img).depth)


def test_ema_list_overlay_in_state_dict_order(tmp_path, small_sd):
    ema = [v + 1.0 for v in small_sd.values()]
    torch.save({"model": small_sd, "ema": {"decay": 0.995, "num_updates": 7, "shadow_params": ema}},
               tmp_path / "ema.pth")
    model = stage2.build_from_checkpoint(str(tmp_path / "ema.pth"))
    assert _same_weights(model, {k: v + 1.0 for k, v in small_sd.items()})


def test_ema_dict_overlay_and_mismatch_is_ignored(tmp_path, small_sd, caplog):
    key = "pixel_decoder.depth_layer.to_latents.bias"
    torch.save({"model": small_sd, "ema": {"shadow_params": {f"module.{key}": small_sd[key] * 0 + 3.0}}},
               tmp_path / "emadict.pth")
    model = stage2.build_from_checkpoint(str(tmp_path / "emadict.pth"))
    assert torch.equal(model.state_dict()[key], torch.full_like(small_sd[key], 3.0))
    torch.save({"model": small_sd, "ema": {"shadow_params": list(small_sd.values())[:-1]}}, tmp_path / "short.pth")
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        model = stage2.build_from_checkpoint(str(tmp_path / "short.pth"))
    assert _same_weights(model, small_sd)
    assert "EMA" in caplog.text


def test_missing_unused_tensors_still_required(tmp_path, small_sd):
    sd = {k: v for k, v in small_sd.items() if "register_tokens" not in k and "mask_token" not in k}
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="missing keys.*(register_tokens|mask_token)"):
        stage2.load_dsfa_checkpoint(build_unidepthv2_dsfa(SMALL), str(tmp_path / "partial.pth"))


def test_wrong_family_and_size_errors(tmp_path, small_sd):
    dav2 = stage2.build_dav2_dsfa("vits").state_dict()
    torch.save(dav2, tmp_path / "dav2.pth")
    with pytest.raises(CheckpointError, match="dav2"):
        stage2.load_dsfa_checkpoint(build_unidepthv2_dsfa(SMALL), str(tmp_path / "dav2.pth"))
    torch.save(small_sd, tmp_path / "small.pth")
    with torch.device("meta"):
        release = build_unidepthv2_dsfa()
    with pytest.raises(CheckpointError, match="wrong encoder size: the file is vit128x4, the model is vitl14"):
        stage2.load_dsfa_checkpoint(release, str(tmp_path / "small.pth"))
    with pytest.raises(CheckpointError, match="unidepthv2"):
        stage2.load_dsfa_checkpoint(stage2.build_dav2_dsfa("vits"), str(tmp_path / "small.pth"))


def test_release_file_detected_and_built_on_meta():
    with torch.device("meta"):
        sd = build_unidepthv2_dsfa().state_dict()
    assert stage2.detect_model(sd) == ("unidepthv2", "vitl14")
    cfg = config_from_state_dict(sd)
    with torch.device("meta"):
        model = unidepth.build_for_checkpoint(sd)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {k: list(v.shape) for k, v in sd.items()}
    assert cfg["out_dim"] == 64 and cfg["output_idx"] == [6, 12, 18, 24] and cfg["decoder_depths"] == [2, 2, 2]
