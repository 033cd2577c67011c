"""Time per sampling step of ComfyUI's Flux with and without Apply Bokeh Adapter (CPU, random weights).

    COMFYUI_PATH=<ComfyUI tree> python tests/bench_native_stage1.py [--size 64] [--steps 10] [--repeat 5]

Per model, the fastest step over ``repeat`` interleaved runs of each (robust on a shared machine) and
the median ratio. Two models: "tiny" (the tests' 2 double + 2 single blocks, width 32, adapter rank 4) and "small"
(2 + 4 blocks, width 384, rank 16: the release's rank/width ratio 128/3072). Sampling is ComfyUI's
KSampler path (euler/simple, cfg 1, Kontext reference latent, ModelSamplingFlux). Memory: the bytes of
the adapter copies the patch keeps on the compute device, and the same figure for the release file's
geometry (19 + 38 layers, width 3072, rank 128) in bf16. Not collected by pytest; the core cannot host
it (it never imports ComfyUI).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
for path in (str(TESTS.parent), str(TESTS)):
    if path not in sys.path:
        sys.path.insert(0, path)

MODELS = {
    "tiny": dict(blocks=(2, 2), rank=4, overrides={}),
    "small": dict(blocks=(2, 4), rank=16, overrides=dict(attention_head_dim=64, num_attention_heads=6,
                                                         joint_attention_dim=64, pooled_projection_dim=64,
                                                         axes_dims_rope=(8, 28, 28))),
}


def build(name: str):
    import comfy_tiny
    from bokehdepth_core.stage1 import BokehAdapter
    from bokehdepth_core.testing import tiny_transformer

    spec = MODELS[name]
    transformer = tiny_transformer(0, in_channels=4 * comfy_tiny.LATENT_CHANNELS, num_layers=spec["blocks"][0],
                                   num_single_layers=spec["blocks"][1], **spec["overrides"])
    adapter = BokehAdapter.attach(transformer, rank=spec["rank"], alpha=spec["rank"])
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.02)
    adapter.detach()
    return transformer, comfy_tiny.comfy_model(transformer), adapter


def step_times(model, transformer, size: int, steps: int, seed: int = 0) -> list[float]:
    import comfy.sample
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux

    cfg = transformer.config
    h = w = size // 8
    m = ModelSamplingFlux().patch(model, 1.15, 0.5, size, size)[0]
    m.model_options["transformer_options"]["bokehdepth_k"] = [10.0]
    g = torch.Generator().manual_seed(seed)
    reference = torch.randn(1, 16, h, w, generator=g)
    positive = [[torch.randn(1, 64, cfg.joint_attention_dim, generator=g),
                 {"pooled_output": torch.randn(1, cfg.pooled_projection_dim, generator=g), "guidance": 7.0,
                  "reference_latents": [reference]}]]
    latent = torch.zeros(1, 16, h, w)
    stamps = [time.perf_counter()]
    comfy.sample.sample(m, comfy.sample.prepare_noise(latent, seed), steps, 1.0, "euler", "simple", positive, [],
                        latent, callback=lambda *a: stamps.append(time.perf_counter()), disable_pbar=True, seed=seed)
    return [b - a for a, b in zip(stamps[1:-1], stamps[2:])]  # step 1 also loads the model: skipped


def release_qk_bytes() -> int:
    layout = json.loads((TESTS / "data" / "bokeh_lora_layout.json").read_text())["tensors"]
    n = sum(torch.Size(shape).numel() for key, shape in layout.items() if "_adp." in key)
    return 2 * n  # bf16


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="image side in px (multiple of 16)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    from support import COMFYUI_HINT, comfyui_path, import_comfyui, load_extension

    if comfyui_path() is None:
        raise SystemExit(COMFYUI_HINT)
    import_comfyui(comfyui_path())
    ext = load_extension("bokehdepth_bench_in_comfyui")
    patch = importlib.import_module(ext.__name__ + ".nodes.bokeh_patch")
    torch.set_num_threads(args.threads)
    report = {"size": args.size, "steps": args.steps, "repeat": args.repeat, "threads": torch.get_num_threads()}
    for name in MODELS:
        transformer, model, adapter = build(name)
        patched = patch.apply_bokeh_adapter(model, adapter, 10.0)
        times = {"base": [], "patched": []}
        for _ in range(args.repeat):  # interleaved, so drift in machine load hits both alike
            for key, m in (("base", model), ("patched", patched)):
                times[key] += step_times(m, transformer, args.size, args.steps)
        # the fastest step of each: the least disturbed by other work on a shared machine
        base, with_adapter = min(times["base"]), min(times["patched"])
        runtime = patch.applied_adapter(patched)
        held = sum(t.numel() * t.element_size() for layer in runtime._maps.values() for maps in layer.values()
                   for m in maps if m is not None for t in m[:2])
        report[name] = {"sec_per_step_base": round(base, 5), "sec_per_step_adapter": round(with_adapter, 5),
                        "ratio": round(with_adapter / base, 3),
                        "median_ratio": round(statistics.median(times["patched"]) / statistics.median(times["base"]), 3),
                        "adapter_bytes_on_device": held,
                        "params": sum(p.numel() for p in transformer.parameters())}
    report["release_qk_maps_bf16_mb"] = round(release_qk_bytes() / 2 ** 20, 1)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
