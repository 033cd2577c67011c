"""A few hundred CPU steps of the DAv2 + DSFA recipe on `synth --train` data lower validation AbsRel."""

from __future__ import annotations

import time

import pytest
import torch

from bokehdepth_core.train import recipe_config, run_training
from bokehdepth_core.train.synth_data import write_training_set

STEPS = 300


@pytest.mark.slow
def test_dav2_recipe_reduces_validation_abs_rel(tmp_path):
    t0 = time.perf_counter()
    data = tmp_path / "data"
    write_training_set(str(data), 40, size=48, seed=0, n_k=2, val_fraction=0.2)  # 32 train, 8 val
    base = dict(manifest_path=str(data), val_manifest_path=str(data), encoder="vits", img_size=42, max_depth=4.0,
                batch_size=3, num_workers=0, mixed_precision="no", progress=False, seed=0, save_every=100000,
                backbone_attention="standard")
    # lr 0: the weights stay as initialised (same seed, same initial weights as the run below)
    before = run_training("dav2", recipe_config("dav2", None, dict(base, save_path=str(tmp_path / "r0"), epochs=1,
                                                                       max_steps=1, lr=0.0)))
    after = run_training("dav2", recipe_config("dav2", None, dict(base, save_path=str(tmp_path / "r1"), epochs=1000,
                                                                      max_steps=STEPS, lr=3e-4, val_every=100000)))
    a0, a1 = before["last"]["val_abs_rel"], after["last"]["val_abs_rel"]
    print(f"val AbsRel {a0:.4f} -> {a1:.4f} after {after['steps']} steps, {time.perf_counter() - t0:.0f} s")
    assert after["steps"] == STEPS
    assert a1 < 0.5 * a0, (a0, a1)  # seen: 0.72 -> 0.23
    assert torch.isfinite(torch.tensor(a1))
