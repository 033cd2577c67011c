"""DAv2 + DSFA training: options, data, checkpoints in the release layout, resume, seeds."""

from __future__ import annotations

import json
import os

import pytest
import torch

from bokehdepth_core.cli import main
from bokehdepth_core.stage2 import build_from_checkpoint, read_checkpoint
from bokehdepth_core.train import recipe_config, run_training
from bokehdepth_core.train.config import resolve
from bokehdepth_core.train.dav2 import DAv2Recipe, SiLogLoss
from bokehdepth_core.train.data import DepthStackDataset, load_manifest

TINY = dict(encoder="vits", img_size=28, max_depth=5.0, batch_size=2, num_workers=0, lr=1e-4,
            mixed_precision="no", progress=False, backbone_attention="standard")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_train")
    assert main(["synth", "--train", "--out", str(out), "-n", "4", "--size", "32", "--num-k", "2",
                 "--focus-frames", "2", "--val-fraction", "0.25"]) == 0
    return str(out)


def test_synth_train_writes_release_manifest(data):
    entries = load_manifest(data)
    assert len(entries) == 4 and [e["split"] for e in entries].count("val") == 1
    e = entries[0]
    assert len(e["stack"]) == len(e["k"]) == 2 and len(e["focus_stack"]) == len(e["focus_values"]) == 2
    for rel in (e["ref"], e["depth"], *e["stack"], *e["focus_stack"]):
        assert os.path.isfile(os.path.join(data, rel))
    ds = DepthStackDataset(data, "train", size=28, augment=False, max_depth=50.0, split="train")
    s = ds[0]
    assert s["image"].shape == (3, 28, 28) and s["focus_stack"].shape == (2, 3, 28, 28)
    assert s["depth"].shape == (28, 28) and bool(s["valid_mask"].any())
    assert s["intrinsics"].shape == (3, 3)


def test_options_precedence_and_errors(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.5\nepochs: 3\nfusion_layers: [1, 2]\n")
    cfg = recipe_config("dav2", str(cfg_file), {"epochs": 7, "manifest_path": "x"})
    assert cfg["lr"] == 0.5 and cfg["epochs"] == 7 and cfg["fusion_layers"] == [1, 2]
    assert cfg["weight_decay"] == 0.01 and cfg["mixed_precision"] == "bf16"  # release defaults
    with pytest.raises(ValueError, match="unknown option"):
        resolve(DAv2Recipe.DEFAULTS, {"learning_rat": 1.0})
    with pytest.raises(ValueError, match="manifest_path is required"):
        recipe_config("dav2", None, {})


def test_release_config_json_is_accepted(tmp_path):
    release = {"manifest_path": None, "save_path": "outputs/train_dsfa", "pretrained_from": None, "encoder": "vitl",
               "img_size": 518, "min_depth": 0.001, "max_depth": 80.0, "depth_scale": 1.0, "epochs": 40,
               "batch_size": 2, "num_workers": 4, "lr": 0.000005, "weight_decay": 0.01, "grad_accum_steps": 1,
               "mixed_precision": "bf16", "stack_indices": None, "fusion_layers": [2, 3], "num_heads": 8,
               "attn_dropout": 0.0, "layerscale_init": 0.1, "alibi_scale": 1.0, "use_sdpa": True,
               "grad_free_stack": False, "save_every": 1, "log_every": 10}
    path = tmp_path / "dsfa_train.json"
    path.write_text(json.dumps(release))
    cfg = recipe_config("dav2", str(path), {"manifest_path": "m.jsonl"})
    assert cfg["lr"] == 5e-6 and cfg["encoder"] == "vitl"


def test_silog_matches_formula():
    pred = torch.rand(2, 8, 8) + 0.5
    gt = torch.rand(2, 8, 8) + 0.5
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    valid[0, :2] = False
    d = (gt.log() - pred.log())[valid]
    expected = torch.sqrt((d ** 2).mean() - 0.5 * d.mean() ** 2)
    assert torch.allclose(SiLogLoss()(pred, gt, valid), expected, atol=1e-6)
    assert float(SiLogLoss()(pred, gt, torch.zeros_like(valid))) == 0.0


def _run(data, out, **kw):
    cfg = recipe_config("dav2", None, dict(TINY, manifest_path=data, save_path=str(out), **kw))
    return run_training("dav2", cfg)


def test_checkpoints_layout_resume_and_seed(data, tmp_path):
    s = _run(data, tmp_path / "a", epochs=1, max_steps=2, safetensors=True, val_manifest_path=data)
    assert s["steps"] == 2 and "val_abs_rel" in s["last"]
    a = tmp_path / "a"
    for name in ("latest.pth", "best.pth", "epoch_1.pth", "latest.safetensors", "metrics.csv", "metrics.jsonl"):
        assert (a / name).is_file(), name
    raw = torch.load(a / "latest.pth", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "epoch", "args"} <= set(raw) and raw["epoch"] == 0
    model = build_from_checkpoint(str(a / "latest.pth"))  # our loader reads it strictly
    assert model.has_dsfa and model.encoder == "vits"
    st = read_checkpoint(str(a / "latest.safetensors"))
    assert set(st) == set(raw["model"]) and any(k.startswith("encoder_fusion.layers.2.block.") for k in st)
    # same seed, same weights (validation and file options do not touch the training)
    _run(data, tmp_path / "b", epochs=1, max_steps=2)
    wa, wb = (torch.load(tmp_path / d / "latest.pth", weights_only=True)["model"] for d in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # resume continues at the next epoch from the saved optimiser state
    s2 = _run(data, a, epochs=2, max_steps=4, resume_from=str(a / "latest.pth"))
    assert s2["steps"] == 4
    rows = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_init_from_plain_dav2_and_focus_stacks(data, tmp_path):
    from bokehdepth_core.stage2 import build_dav2_dsfa

    plain = build_dav2_dsfa("vits", fusion_layers=())
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(plain.state_dict(), path)
    s = _run(data, tmp_path / "f", epochs=1, max_steps=1, pretrained_from=str(path), stack_source="focus",
             gradient_checkpointing=True)
    assert s["steps"] == 1
    trained = torch.load(tmp_path / "f" / "latest.pth", weights_only=True)["model"]
    key = "pretrained.blocks.0.attn.qkv.weight"
    assert (trained[key] - plain.state_dict()[key]).abs().max() < 1e-3  # started from the file
    with pytest.raises(ValueError, match="encoder size"):
        _run(data, tmp_path / "g", epochs=1, max_steps=1, pretrained_from=str(path), encoder="vitb")
