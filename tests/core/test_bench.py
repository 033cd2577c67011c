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


@pytest.mark.slow
def test_benchmark_reports(capsys):
    report = bench.run("stack", argparse.Namespace(device="cpu", size=32, repeat=1, steps=2))
    assert report["frames"] == 4 and report["steps"] == 2 and 0 < report["sec_per_step"] < report["sec_per_stack"]
    assert "sec_per_step:" in capsys.readouterr().out


def test_unknown_target():
    with pytest.raises(ValueError, match="bench target"):
        bench.run("nope", argparse.Namespace())
