"""The benchmarks behind ``python -m bokehdepth_core bench``."""

from __future__ import annotations

import argparse

import pytest
import torch

from bokehdepth_core import bench, cli
from bokehdepth_core.stage2 import kernels


def test_bench_render_command(capsys):
    assert cli.main(["bench", "render", "--size", "96", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("render 96x96, radii up to 30 px") == 2 and "s wall" in out


def test_bench_depth_runs(capsys, monkeypatch):
    monkeypatch.setattr(kernels, "_picked", {})
    monkeypatch.setattr(kernels, "_ATTN_MIN_ROWS", 1)  # tiny inputs still make the choice
    args = argparse.Namespace(model="dav2", size=28, device="cpu", repeat=1, fast_paths="bfloat16,tokens")
    report = bench.run("depth", args)
    out = capsys.readouterr().out
    assert "N=0:" in out and "N=3:" in out and "N=3 / N=0:" in out and "GFLOP/s" in out
    entry = report["models"]["dav2"]
    assert entry["N=3"]["gflop"] > 3 * entry["N=0"]["gflop"] > 0  # the encoder sees four frames
    assert entry["N=0"]["seconds"] > 0 and entry["N=0"]["peak_mib"] > 0
    if kernels.onednn_linear_available():  # the attention kernel picked at each new shape is reported
        assert entry["attention_kernels"] and set(entry["attention_kernels"].values()) <= {"sdpa", "onednn"}
        assert "attention kernel, measured per q shape:" in out
    assert set(entry["fast_paths"]) == {"bfloat16", "input_size 14 (about half the tokens)"}
    bf16 = entry["fast_paths"]["bfloat16"]
    assert 0 < bf16["abs_rel"] < 0.2 and bf16["time_ratio"] > 0  # changed, but not a different answer
    for bad in ({"model": "nope"}, {"fast_paths": "fp4"}):
        with pytest.raises(ValueError, match="--model|--fast-paths"):
            bench.run("depth", argparse.Namespace(**{**vars(args), **bad}))


def test_bench_budget_runs_one_forward_through_the_checks(capsys):
    row = bench.run("budget", argparse.Namespace(model=None, size=56, device="cpu"))
    assert row["tokens_per_frame"] == 16 and row["tokens_per_forward"] == 64 and row["finite"]
    assert row["progress_calls"] == 14 and row["seconds"] > 0 and row["estimate_mb"] > 0
    assert "caps 16,384 per frame, 65,536 per forward" in capsys.readouterr().out
    with pytest.raises(ValueError, match="tokens per frame"):  # beyond the cap: refused, not run
        bench.run("budget", argparse.Namespace(model="vits", size=14 * 129, device="cpu"))
    with pytest.raises(ValueError, match="--model"):
        bench.run("budget", argparse.Namespace(model="dav2", size=56, device="cpu"))


def test_flops_of_the_stage2_kernels():
    from bokehdepth_core.bench.flops import count_flops
    from bokehdepth_core.stage2 import kernels

    x, w = torch.randn(300, 32), torch.randn(64, 32)
    q = torch.randn(2, 3, 100, 16)
    with torch.no_grad():
        assert count_flops(lambda: kernels.linear(x, w)) == 2 * 300 * 32 * 64
        kernels.attention(q, q, q, 0.25)  # a new shape is timed once with every kernel: not counted below
        assert count_flops(lambda: kernels.attention(q, q, q, 0.25)) == 4 * 2 * 3 * 100 * 100 * 16
        conv = torch.nn.Conv2d(8, 6, 3, padding=1)  # fused convolution + ReLU counts as the convolution
        img = torch.randn(1, 8, 10, 12)
        assert count_flops(lambda: kernels.conv_act(conv, img)) == count_flops(lambda: conv(img)) == 2 * 6 * 8 * 9 * 120


@pytest.mark.slow
def test_benchmark_reports(capsys):
    report = bench.run("stack", argparse.Namespace(device="cpu", size=32, repeat=1, steps=2))
    assert report["frames"] == 4 and report["steps"] == 2 and 0 < report["sec_per_step"] < report["sec_per_stack"]
    assert "sec_per_step:" in capsys.readouterr().out


def test_unknown_target():
    with pytest.raises(ValueError, match="bench target"):
        bench.run("nope", argparse.Namespace())
