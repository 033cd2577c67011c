"""The README's main job: `python -m bokehdepth_core demo` offline, fast, with its PNGs and report."""

import json
import os

from bokehdepth_core import cli


def test_demo_writes_report_and_pngs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--size", "128", "--seed", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["calibration"]) == 2 and report["calibration"][0]["k"] > 0
    phys = report["physics"]
    for f in ("all_in_focus.png", "depth_ground_truth.png", "depth_from_bokeh.png", "confidence.png"):
        assert f in phys["files"] and os.path.getsize(out / f) > 0
    assert sum(f.startswith("bokeh_") for f in phys["files"]) == len(phys["stack"]["k_values"]) == 4
    dfb = phys["depth_from_bokeh"]
    assert dfb["confident_fraction"] > 0.3
    assert dfb["delta_median_rel_error_confident_2_20px"] is not None
    assert dfb["delta_median_rel_error_confident_2_20px"] <= 0.10
    assert dfb["depth_metrics_confident"]["abs_rel"] < 0.15
    # frames get blurrier with K
    psnrs = [m["psnr"] for m in phys["stack"]["frames_vs_all_in_focus"]]
    assert psnrs == sorted(psnrs, reverse=True)
    assert "demo results written" in capsys.readouterr().out
