"""``bench budget [--model vits|vitb|vitl] [--size S]``: one Stage-2 forward at the largest network
input the Stage-2 budget allows (a square image with ``input_size`` = ``S``, default the per-frame
token cap, and 3 stack frames: the per-forward cap), through ``estimate_depth`` as the nodes call it.
Random Depth Anything V2 + DSFA weights; prints wall and CPU time, peak memory and the model's own
working-memory estimate."""

from __future__ import annotations

import math
import time

import torch

from ..stage2 import build_dav2_dsfa, estimate_depth
from ..stage2.model import MAX_FORWARD_TOKENS, MAX_FRAME_TOKENS
from . import device_of, peak_memory_mb, sync

ENCODERS = ("vits", "vitb", "vitl")
FRAMES = 3  # the paper's stack


def run(args) -> dict:
    encoder = (getattr(args, "model", None) or "vits").lower()
    if encoder not in ENCODERS:
        raise ValueError(f"--model for 'budget' must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    size = int(getattr(args, "size", None) or 14 * math.isqrt(MAX_FRAME_TOKENS)) // 14 * 14
    device = device_of(args)
    torch.manual_seed(0)
    model = build_dav2_dsfa(encoder).to(device).eval()
    image = torch.rand(1, size, size, 3, device=device)
    stack = torch.rand(1, FRAMES, size, size, 3, device=device)
    ks = [5.0, 15.0, 30.0]
    tokens = (size // 14) ** 2
    estimate = model.memory_required(size, size, FRAMES, torch.float32, input_size=size) / 2 ** 20
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    kind, before = peak_memory_mb(device)
    blocks = []
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = estimate_depth(model, image, stack, ks, input_size=size, device=device,
                         callback=lambda done, total: blocks.append(done))
    sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_memory_mb(device)[1]
    row = {"target": "budget", "model": f"dav2 {encoder}", "size": size, "frames": 1 + FRAMES,
           "tokens_per_frame": tokens, "tokens_per_forward": (1 + FRAMES) * tokens, "seconds": wall,
           "cpu_seconds": cpu, "peak_memory": kind, "peak_memory_mb": peak, "peak_growth_mb": peak - before,
           "estimate_mb": estimate, "progress_calls": len(blocks), "finite": bool(torch.isfinite(out.depth).all()),
           "threads": torch.get_num_threads(), "device": str(device)}
    print(f"budget: dav2 {encoder} + DSFA, {size}x{size} image at input_size {size}, 1 + {FRAMES} frames x "
          f"{tokens:,} tokens = {row['tokens_per_forward']:,} (caps {MAX_FRAME_TOKENS:,} per frame, "
          f"{MAX_FORWARD_TOKENS:,} per forward)")
    print(f"  one forward: {wall:.1f} s wall, {cpu:.1f} s CPU ({row['threads']} threads, {device}); peak {kind} "
          f"{peak:.0f} MiB (+{peak - before:.0f} MiB over the model and inputs; estimate {estimate:.0f} MiB); "
          f"{len(blocks)} progress calls (Cancel points)")
    return row
