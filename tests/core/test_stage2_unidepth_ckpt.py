"""UniDepthV2 + DSFA weight files: release-format round trips, detection, EMA overlay, clear errors,
and the Stage-2 nodes running a UniDepthV2 file end to end (camera in, intrinsics/points out)."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from bokehdepth_core import stage2
from bokehdepth_core.stage2 import CheckpointError, build_unidepthv2_dsfa

from support import UNIDEPTH_SMALL as SMALL, randomize


@pytest.fixture(scope="module")
def small_sd():
    torch.manual_seed(0)
    return randomize(build_unidepthv2_dsfa(SMALL), seed=11).state_dict()


def _same_weights(model, sd):
    own = model.state_dict()
    return own.keys() == sd.keys() and all(torch.equal(own[k], sd[k].to(own[k].dtype)) for k in sd)


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
    torch.testing.assert_close(model.estimate(img)["depth"], fresh.estimate(img)["depth"])


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
    from bokehdepth_core.stage2.unidepth import _build_for_checkpoint, config_from_state_dict

    assert stage2.detect_model(sd) == ("unidepthv2", "vitl14")
    cfg = config_from_state_dict(sd)
    with torch.device("meta"):
        model = _build_for_checkpoint(sd, "vitl14", plain_head="auto")
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {k: list(v.shape) for k, v in sd.items()}
    assert cfg["out_dim"] == 64 and cfg["output_idx"] == [6, 12, 18, 24] and cfg["decoder_depths"] == [2, 2, 2]


# --------------------------------------------------------------------------- nodes

def test_stage2_nodes_with_a_unidepth_file(tmp_path, monkeypatch, small_sd, node_classes):
    monkeypatch.setenv("BOKEHDEPTH_MODELS_DIR", str(tmp_path))
    torch.save({"model": small_sd}, tmp_path / "UDv2_small.pth")
    model, info = node_classes["BokehDepthLoadDepthModel"]().load("UDv2_small.pth", "fp32", "auto", 0.0)
    assert "UniDepthV2" in info
    model.config.update(pixels_min=3000, pixels_max=9000)  # the release budget (>= 200k px) is slow here
    img = torch.rand(1, 40, 60, 3)
    k_node = node_classes["BokehDepthCameraIntrinsics"]()
    camera, summary = k_node.make(36.0, 36.0, 10, 10, image=img)  # 35 mm-equivalent 36 mm
    assert camera.shape == (1, 3, 3) and float(camera[0, 0, 0]) == pytest.approx(60.0) and "fx=60.00" in summary
    stack = torch.rand(2, 40, 60, 3)
    depth, preview = node_classes["BokehDepthEstimateDepthStack"]().estimate(
        model, img, 518, "Spectral", stack_images=stack, k_list=[8.0, 20.0], camera=camera)
    assert type(depth).__name__ == "DepthMap" and depth.intrinsics.shape == (1, 3, 3)
    assert depth.confidence.shape == (1, 40, 60) and preview.shape == (1, 40, 60, 3)
    want = model.estimate(img, stack.unsqueeze(0), [[8.0, 20.0]], camera=camera)
    torch.testing.assert_close(depth.depth, want["depth"])
    lo, _ = node_classes["BokehDepthEstimateDepth"]().estimate(model, img, 518, "Spectral", resolution_level=0)
    hi, _ = node_classes["BokehDepthEstimateDepth"]().estimate(model, img, 518, "Spectral", resolution_level=9)
    assert lo.meta["network_size"] != hi.meta["network_size"]  # the node passes the level through
    k_pred, conf, text = node_classes["BokehDepthDepthCamera"]().split(depth)
    torch.testing.assert_close(k_pred, want["intrinsics"])
    assert float(conf.max()) == pytest.approx(1.0) and "FoV" in text
