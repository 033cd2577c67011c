"""``eval``: known answers on a small folder, the metrics module's numbers, crops, resume, stacks."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from bokehdepth_core.cli import main
from bokehdepth_core.evaluate import eval_mask, evaluate, image_row, PROTOCOLS
from bokehdepth_core.metrics import depth_metrics
from bokehdepth_core.images import save_rgb


def _folder(tmp_path, n=3, h=24, w=32):
    """A manifest of n images with known depth and predictions pred = 1.5 x gt (image 0) or gt."""
    data, preds = tmp_path / "data", tmp_path / "preds"
    for d in (data, preds):
        d.mkdir()
    g = torch.Generator().manual_seed(0)
    lines = []
    for i in range(n):
        gt = 1.0 + 4.0 * torch.rand(h, w, generator=g)
        np.save(data / f"d{i}.npy", gt.numpy())
        save_rgb(str(data / f"i{i}.png"), torch.rand(h, w, 3, generator=g))
        np.save(preds / f"s{i}.npy", (gt * (1.5 if i == 0 else 1.0)).numpy())
        lines.append(json.dumps({"id": f"s{i}", "image": f"i{i}.png", "depth": f"d{i}.npy"}))
    (data / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return str(data), str(preds)


def test_known_answers_and_summary(tmp_path):
    data, preds = _folder(tmp_path)
    out = tmp_path / "out"
    summary = evaluate(preds, data, str(out), stack="none")
    s = summary["none"]
    assert s["images"] == 3
    assert s["abs_rel"] == pytest.approx(0.5 / 3, abs=1e-6)  # 0.5 on one image, 0 on two
    assert s["delta1"] == pytest.approx(2 / 3, abs=1e-6)  # ratio 1.5 is not < 1.25
    assert s["delta2"] == pytest.approx(1.0)  # 1.5 < 1.25^2
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["id"] for r in rows] == ["s0", "s1", "s2"]
    assert float(rows[0]["rmse_log"]) == pytest.approx(float(np.log(1.5)), abs=1e-6)
    assert json.loads((out / "summary.json").read_text())["results"]["none"]["images"] == 3
    assert "| none |" in (out / "comparison.md").read_text()


def test_rows_are_the_metrics_module_numbers(tmp_path):
    g = torch.Generator().manual_seed(1)
    gt = 0.5 + 12 * torch.rand(480, 640, generator=g)
    pred = gt * (0.8 + 0.4 * torch.rand(480, 640, generator=g))
    row = image_row(pred, gt, PROTOCOLS["nyu"], align="median")
    mask = torch.zeros(480, 640, dtype=torch.bool)
    mask[45:471, 41:601] = True
    ref = depth_metrics(pred, gt, mask, align="median", min_depth=1e-3, max_depth=10.0)
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "valid_pixels"):
        assert row[k] == ref[k]
    k = eval_mask(375, 1242, "garg")
    assert int(k.sum()) == (int(0.99189189 * 375) - int(0.40810811 * 375)) * (int(0.96405229 * 1242) - int(0.03594771 * 1242))


def test_resume_skips_done_rows(tmp_path):
    data, preds = _folder(tmp_path)
    out = tmp_path / "out"
    evaluate(preds, data, str(out), stack="none")
    os.remove(os.path.join(preds, "s1.npy"))  # would fail if image s1 were predicted again
    summary = evaluate(preds, data, str(out), stack="none")
    assert summary["none"]["images"] == 3
    assert len(list(csv.DictReader(open(out / "per_image.csv")))) == 3


def test_model_with_and_without_bokeh_in_one_run(tmp_path):
    from bokehdepth_core.stage2 import build_dav2_dsfa

    assert main(["synth", "--train", "--out", str(tmp_path / "d"), "-n", "2", "--size", "28", "--num-k", "2"]) == 0
    torch.manual_seed(0)
    model = build_dav2_dsfa("vits", max_depth=10.0)
    path = tmp_path / "m.pth"
    torch.save({"model": model.state_dict()}, path)
    for stack in ("generated", "render"):
        out = tmp_path / f"out_{stack}"
        assert main(["eval", "--model", str(path), "--data", str(tmp_path / "d"), "--stack", stack,
                     "--input-size", "28", "--out", str(out)]) == 0
        s = json.loads((out / "summary.json").read_text())["results"]
        assert set(s) == {stack, "none"} and s[stack]["images"] == s["none"]["images"] == 2
        assert s[stack]["abs_rel"] != s["none"]["abs_rel"]  # the stack changes the prediction
    with pytest.raises(ValueError, match="--stack"):
        evaluate(str(path), str(tmp_path / "d"), str(tmp_path / "x"), stack="nonsense")
