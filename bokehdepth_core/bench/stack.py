"""``bench stack``: Stage-1 stacks on the tiny random FLUX.1-Kontext pipeline, with and without
the adapter (its overhead and the sampling loop, not FLUX itself)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..stage1 import BokehAdapter, sample_bokeh_stack
from ..testing import tiny_image, tiny_kontext_pipeline
from . import device_of, peak_memory_mb, sync


def run(args) -> dict:
    device = device_of(args)
    size = int(getattr(args, "size", None) or 64)
    repeat = max(1, int(getattr(args, "repeat", 3) or 3))
    ks = [5.0, 10.0, 20.0, 30.0]
    steps = int(getattr(args, "steps", None) or 10)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()  # the tiny CLIP tokenizer truncates the template: expected, not news
    pipe = tiny_kontext_pipeline(dtype=dtype).to(device)
    adapter = BokehAdapter.attach(pipe.transformer, rank=8)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.02)
    image = tiny_image(size, size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sample_bokeh_stack(pipe, adapter, image, ks, num_inference_steps=1)  # warm-up

    def timed(attached: bool):
        stamps: list[float] = []
        per_stack = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            marks = [t0]

            def tick(d, n):
                sync(device)
                marks.append(time.perf_counter())

            # without the adapter: the same call on the bare transformer (the adapter's overhead)
            sample_bokeh_stack(pipe, adapter if attached else None, image, ks, num_inference_steps=steps,
                               callback=tick)
            sync(device)
            per_stack.append(time.perf_counter() - t0)
            stamps += [b - a for a, b in zip(marks[1:-1], marks[2:])]
        return (float(np.median(stamps)) if stamps else None), float(np.median(per_stack))

    step_s, stack_s = timed(True)
    adapter.detach()
    base_step_s, base_stack_s = timed(False)
    kind, peak = peak_memory_mb(device)
    report = {
        "target": "stack", "model": "tiny random FLUX.1-Kontext (2 double + 3 single blocks)",
        "device": str(device), "dtype": str(dtype).replace("torch.", ""), "image": f"{size}x{size}",
        "frames": len(ks), "steps": steps, "repeat": repeat,
        "sec_per_step": step_s and round(step_s, 5), "sec_per_stack": round(stack_s, 4),
        "sec_per_step_without_adapter": base_step_s and round(base_step_s, 5),
        "sec_per_stack_without_adapter": round(base_stack_s, 4),
        f"peak_memory_mb ({kind})": round(peak, 1),
    }
    for k, v in report.items():
        print(f"{k}: {v}")
    return report
