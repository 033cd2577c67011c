"""The benchmarks behind ``python -m bokehdepth_core bench``."""

from __future__ import annotations

import argparse

import pytest

from bokehdepth_core import bench, cli


def test_bench_render_command(capsys):
    assert cli.main(["bench", "render", "--size", "96", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("render 96x96, radii up to 30 px") == 2 and "s wall" in out


def test_bench_depth_runs(capsys):
    class Args:
        model, size, device, repeat = "dav2", 28, "cpu", 1

    bench.run("depth", Args())
    out = capsys.readouterr().out
    assert "N=0" in out and "N=3" in out and "ratio N=3/N=0" in out
    Args.model = "nope"
    with pytest.raises(ValueError, match="--model"):
        bench.run("depth", Args())


def test_bench_budget_runs_one_forward_through_the_checks(capsys):
    row = bench.run("budget", argparse.Namespace(model=None, size=56, device="cpu"))
    assert row["tokens_per_frame"] == 16 and row["tokens_per_forward"] == 64 and row["finite"]
    assert row["progress_calls"] == 14 and row["seconds"] > 0 and row["estimate_mb"] > 0
    assert "caps 16,384 per frame, 65,536 per forward" in capsys.readouterr().out
    with pytest.raises(ValueError, match="tokens per frame"):  # beyond the cap: refused, not run
        bench.run("budget", argparse.Namespace(model="vits", size=14 * 129, device="cpu"))
    with pytest.raises(ValueError, match="--model"):
        bench.run("budget", argparse.Namespace(model="dav2", size=56, device="cpu"))


@pytest.mark.slow
def test_benchmark_reports(capsys):
    report = bench.run("stack", argparse.Namespace(device="cpu", size=32, repeat=1, steps=2))
    assert report["frames"] == 4 and report["steps"] == 2 and 0 < report["sec_per_step"] < report["sec_per_stack"]
    assert "sec_per_step:" in capsys.readouterr().out


def test_unknown_target():
    with pytest.raises(ValueError, match="bench target"):
        bench.run("nope", argparse.Namespace())
