"""``bench depth [--model dav2|unidepthv2]``: Stage-2 forwards with N=0 and N=3 stack frames."""

from __future__ import annotations

import os
import time

import torch

from ..stage2 import build_dav2_dsfa, build_unidepthv2_dsfa
from . import device_of, peak_memory_mb, rss_mb, sync

MODELS = ("dav2", "unidepthv2")


def run(args) -> None:
    name = (getattr(args, "model", None) or "dav2").lower()
    if name not in MODELS:
        raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {name!r}")
    (dav2 if name == "dav2" else unidepth)(args)


def dav2(args) -> None:
    """ms per forward of vits at 518x518 (default) with N=0 and N=3, peak memory, ratio.
    N=0 and N=3 runs alternate so that both see the same machine load."""
    size = max(14, (args.size or 518) // 14 * 14)
    device = device_of(args)
    torch.manual_seed(0)
    model = build_dav2_dsfa("vits").to(device).eval()
    x = torch.randn(1, 3, size, size, device=device)
    cases = {0: (None, None),
             3: (torch.randn(1, 3, 3, size, size, device=device), torch.tensor([[5.0, 15.0, 40.0]], device=device))}
    times = {n: [] for n in cases}
    cpu = {n: [] for n in cases}  # process CPU time: less sensitive than wall time to other jobs
    peak = {}
    with torch.inference_mode():
        for n, (stack, k) in cases.items():  # warm-up, and the peak memory of each case
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            model(x, stack, k)
            sync(device)
            peak[n] = peak_memory_mb(device)[1]
        for _ in range(max(1, args.repeat)):
            for n, (stack, k) in cases.items():
                t0, c0 = time.perf_counter(), time.process_time()
                model(x, stack, k)
                sync(device)
                times[n].append((time.perf_counter() - t0) * 1000)
                cpu[n].append((time.process_time() - c0) * 1000)
    med = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    cmed = {n: sorted(t)[len(t) // 2] for n, t in cpu.items()}
    what = "GPU allocated" if device.type == "cuda" else "process RSS"
    for n in cases:
        print(f"dav2 vits {size}x{size} N={n}: median {med[n]:.0f} ms, best {min(times[n]):.0f} ms "
              f"over {len(times[n])} runs, CPU time {cmed[n]:.0f} ms, peak {what} {peak[n]:.0f} MiB")
    ratios = sorted(b / a for a, b in zip(times[0], times[3]))
    print(f"ratio N=3/N=0: median of paired runs {ratios[len(ratios) // 2]:.2f} "
          f"(ideal ~4: the encoder sees 4 frames, the DPT head one); by CPU time {cmed[3] / cmed[0]:.2f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}")


def unidepth(args) -> None:
    """ms per forward of the release-size model at 480x640 with N=0 and N=3 stack frames, and
    peak memory."""
    device = device_of(args)
    torch.manual_seed(0)
    model = build_unidepthv2_dsfa().to(device).eval()
    h, w = (480, 640) if not args.size else (args.size * 3 // 4, args.size)
    pads, padded, factor, size = model.network_geometry(h, w)
    x = torch.randn(1, 3, *size, device=device)
    print(f"unidepthv2 vitl14 input {w}x{h} -> network {size[1]}x{size[0]} "
          f"({size[0] // 14 * size[1] // 14} tokens per frame)")
    results = {}
    for n in (0, 3):
        stack = torch.randn(1, n, 3, *size, device=device) if n else None
        k = torch.linspace(10, 30, n, device=device).view(1, n) if n else None
        with torch.inference_mode():
            model(x, stack, k)  # warm-up
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                model(x, stack, k)
                sync(device)
                times.append((time.perf_counter() - t0) * 1000)
        kind, peak = peak_memory_mb(device)
        results[n] = min(times)
        print(f"unidepthv2 N={n}: best {min(times):.0f} ms, median {sorted(times)[len(times) // 2]:.0f} ms, "
              f"peak {kind} {peak:.0f} MiB (RSS now {rss_mb():.0f})")
    print(f"ratio N=3/N=0 (best): {results[3] / results[0]:.2f}")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
