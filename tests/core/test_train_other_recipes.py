"""Adapter and UniDepthV2 recipes: a short run each, files readable by the loaders, the release's
schedules and loss pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bokehdepth_core.train import recipe_config, run_training
from bokehdepth_core.train.synth_data import write_training_set
from bokehdepth_core.train.unidepth import UniDepthRecipe, cosine_schedule, tiny_model_config
from bokehdepth_core.train import unidepth_losses as L


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    write_training_set(str(out), 2, size=32, n_k=2, val_fraction=0.0)
    return str(out)


def test_adapter_run_writes_release_file_and_decays_to_k_dof(data, tmp_path):
    from bokehdepth_core.stage1 import BokehAdapter

    cfg = recipe_config("adapter", None, dict(manifest_path=data, save_path=str(tmp_path), pretrained_model="tiny",
                                              size=32, batch_size=2, epochs=1, max_steps=2, mixed_precision="no",
                                              lr_warmup_steps=0, lora_rank=4, lora_alpha=4.0, progress=False,
                                              learning_rate=1e-2, weight_decay=0.5))
    summary = run_training("adapter", cfg)
    assert summary["steps"] == 2 and np.isfinite(summary["last"]["train_loss"])
    a = BokehAdapter.from_file(str(tmp_path / "latest" / "bokeh_lora.bin"))  # the release layout
    assert a.rank == 4 and (tmp_path / "best" / "bokeh_lora.bin").is_file()
    # to_k_dof has a zero gradient (single-token attention) but, as in the release, decays
    torch.manual_seed(0)
    from bokehdepth_core.testing import tiny_transformer

    fresh = BokehAdapter.attach(tiny_transformer(), blocks="0-4", rank=4, alpha=4.0, dtype=torch.float32)
    w0 = fresh.adapter_modules[0].to_k_dof.down.weight
    w1 = a.adapter_modules[0].to_k_dof.down.weight
    ratio = (w1.abs().sum() / w0.abs().sum()).item()
    # cosine schedule over 2 steps: lr 1e-2 then 5e-3; decoupled decay lr * wd each step
    assert ratio == pytest.approx((1 - 1e-2 * 0.5) * (1 - 5e-3 * 0.5), rel=1e-5)
    state = torch.load(tmp_path / "latest" / "training_state.pt", weights_only=True)
    assert state["step"] == 2


def test_unidepth_release_config_flattens():
    release = {"generic": {"seed": 13}, "training": {"n_iters": 75000, "batch_size": 32, "nsteps_accumulation_gradient": 2,
                                                    "lr": 1e-4, "lr_final": 1e-6, "wd": 0.1, "wd_final": 0.1,
                                                    "warmup_iters": 18750, "ema": True, "f16": True, "clipping": 1.0},
               "data": {"defocus_stack_indices": [0, 1, 2], "num_copies": 2},
               "model": {"pixel_encoder": {"lr": 2e-6, "name": "dinov2_vitl14_DSFA"}}}
    flat = UniDepthRecipe.flatten_config(release)
    assert flat["batch_size"] == 16 and flat["grad_accum_steps"] == 2 and flat["mixed_precision"] == "fp16"
    assert flat["max_steps"] == 75000 and flat["encoder_lr"] == 2e-6 and flat["stack_indices"] == [0, 1, 2]


def test_cosine_schedule_is_the_release_one():
    s = cosine_schedule(0.95, 0.85, 0.95, 10, 100)
    assert len(s) == 101 and s[0] == pytest.approx(0.95) and s[9] == pytest.approx(0.85)
    assert s[-1] == pytest.approx(0.95) and s[10] == pytest.approx(0.85)


def test_unidepth_losses_behave():
    g = torch.Generator().manual_seed(0)
    gt = 1 + torch.rand(2, 1, 28, 28, generator=g)
    mask = torch.ones_like(gt, dtype=torch.bool)
    si = torch.zeros(2, dtype=torch.bool)
    assert float(L.silog(gt * 2, gt, mask, si, integrated=0.0).max()) == pytest.approx(0.01, abs=1e-4)  # scale-invariant
    assert float(L.silog(gt * 2, gt, mask, si).max()) > 0.2  # 0.15 of the log-scale error added back
    k = torch.tensor([[20.0, 0, 14], [0, 20.0, 14], [0, 0, 1]]).expand(2, 3, 3)
    assert float(L.self_distill(gt.expand(2, 1, 28, 28).contiguous()[:1].repeat(2, 1, 1, 1), k, mask,
                                torch.zeros(2, dtype=torch.bool)).max()) == pytest.approx((1e-5 + 1e-4) ** 0.5, rel=1e-4)
    img = torch.rand(2, 3, 28, 28, generator=g)
    v = L.edge_guided_ssi(gt * 3 + 1, gt, mask, img, mask.float(), training=False)
    assert v.shape == (2,) and torch.isfinite(v).all()


def test_unidepth_short_run(data, tmp_path):
    cfg = recipe_config("unidepth", None, dict(manifest_path=data, save_path=str(tmp_path), model_config=tiny_model_config(),
                                               img_size=28, batch_size=1, grad_accum_steps=1, epochs=1, max_steps=2,
                                               mixed_precision="no", warmup_iters=1, progress=False, stack_indices=[0, 1]))
    s = run_training("unidepth", cfg)
    assert s["steps"] == 2 and np.isfinite(s["last"]["train_loss"])
    raw = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert {"step", "model", "optimizer", "ema", "config"} <= set(raw)
    assert any(k.startswith("pixel_encoder.fusion_blocks.0.") for k in raw["model"])
    from bokehdepth_core.stage2 import build_unidepthv2_dsfa

    assert len(raw["ema"]["shadow_params"]) == len(list(build_unidepthv2_dsfa(tiny_model_config()).parameters()))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2
