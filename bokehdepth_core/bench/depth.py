"""``bench depth [--model dav2|unidepthv2|FILE]``: Stage-2 speed, memory and fast paths.

For each family (both by default; ``--model FILE`` times a weight file): seconds and peak memory
per forward with N=0 and N=3 stack frames on the exact path, the FLOPs of each forward and the
achieved GFLOP/s against this machine's float32 matrix-multiply rate, then the opt-in fast paths
(bfloat16, a smaller token budget, ``torch.compile``) on demo scenes: their speed against the exact
path and their change of the depth (AbsRel against the exact path's depth).

Random weights unless a file is given: the times and FLOPs are those of the release networks;
the AbsRel of a fast path on random weights shows its numerical effect, not its effect on
trained predictions (give the release file for that).
"""

from __future__ import annotations

import copy
import os
import time
from typing import Callable

import torch

from ..metrics import depth_metrics
from ..render import render_bokeh
from ..stage2 import build_dav2_dsfa, build_from_checkpoint, build_unidepthv2_dsfa
from ..stage2.kernels import attention_kernels
from ..synthetic import make_scene
from . import device_of, peak_allocated_mb, sync
from .flops import FLOOR_SHAPE, count_flops, matmul_rates

MODELS = ("dav2", "unidepthv2")
STACK_K = (10.0, 20.0, 30.0)
SCENES = (0, 1)


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def alternate(fns: dict[str, Callable[[], object]], repeat: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each callable over ``repeat`` rounds, run in turn so that all see the same load."""
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of time / reference time (adjacent runs: machine load cancels)."""
    return _median([a / b for a, b in zip(times, reference)])


# --------------------------------------------------------------------------- the models

def build(name: str, device: torch.device):
    """(model, description) for a family name or a weight file, random weights for a family."""
    torch.manual_seed(0)
    if name in MODELS:
        model = build_dav2_dsfa("vits") if name == "dav2" else build_unidepthv2_dsfa()
        return model.to(device).eval(), "random weights"
    if os.path.isfile(name):
        return build_from_checkpoint(name).to(device).eval(), os.path.basename(name)
    raise ValueError(f"--model must be one of {', '.join(MODELS)} or a Stage-2 weight file, got {name!r}")


def network_inputs(model, size, device: torch.device, frames: int):
    """Random network tensors (x, stack or None, K or None) and a label, for the family's default
    input: Depth Anything V2 at ``size`` square (518), UniDepthV2 at a 4:3 image ``size`` wide (640)."""
    gen = torch.Generator().manual_seed(1)
    if model.family == "dav2":
        side = max(14, (size or 518) // 14 * 14)
        shape, label = (side, side), f"{side}x{side}"
    else:
        w = size or 640
        shape = tuple(model.network_geometry(w * 3 // 4, w)[3])
        label = f"image {w}x{w * 3 // 4} -> network {shape[1]}x{shape[0]}"
    x = torch.randn(1, 3, *shape, generator=gen).to(device)
    if not frames:
        return (x, None, None), label
    stack = torch.randn(1, frames, 3, *shape, generator=gen).to(device)
    return (x, stack, torch.tensor([STACK_K[:frames]], device=device)), label


def demo_inputs(size: int, device: torch.device):
    """Demo scenes (image ``[1,S,S,3]``, stack ``[1,3,S,S,3]`` rendered at :data:`STACK_K`, K ``[1,3]``)."""
    out = []
    for seed in SCENES:
        scene = make_scene(seed, size, n_k=len(STACK_K))
        frames = [render_bokeh(scene.image, scene.disparity, k, scene.focus_disparity) for k in STACK_K]
        stack = torch.stack(frames, 1)
        out.append((scene.image.to(device), stack.to(device), torch.tensor([STACK_K], device=device)))
    return out


# --------------------------------------------------------------------------- exact path

def bench_exact(model, args, device: torch.device, repeat: int, rates: dict) -> dict:
    """Time, peak memory and FLOPs of forwards with N=0 and N=3 (alternating)."""
    cases, label = {}, ""
    for n in (0, 3):
        inputs, label = network_inputs(model, args.size, device, n)
        cases[f"N={n}"] = inputs
    result = {"input": label}
    known = attention_kernels()
    with torch.inference_mode():
        for i in cases.values():  # warm-up; new shapes pick their attention kernel here, not in the counts
            model(*i)
        flops = {case: count_flops(lambda i=i: model(*i)) for case, i in cases.items()}
        peaks = {case: peak_allocated_mb(lambda i=i: model(*i), device) for case, i in cases.items()}
        times = alternate({case: (lambda i=i: model(*i)) for case, i in cases.items()}, repeat, device)
    floor = max(rates.values())
    for case in cases:
        sec = _median(times[case])
        gflops = flops[case] / 1e9
        kind, peak = peaks[case]
        rate = gflops / sec
        shares = ", ".join(f"{100 * rate / r:.0f} % of {name}" for name, r in rates.items())
        print(f"  {case}: {sec:.3f} s per forward (median of {len(times[case])}, best {min(times[case]):.3f}), "
              f"{gflops:.0f} GFLOP -> {rate:.0f} GFLOP/s ({shares}); floor at the matmul rate "
              f"{gflops / floor:.3f} s; peak memory {peak:.0f} MiB ({kind})")
        result[case] = {"seconds": sec, "best_seconds": min(times[case]), "gflop": gflops, "gflops_per_s": rate,
                        "floor_seconds": gflops / floor, "peak_mib": peak, "peak_kind": kind}
    ratio = paired_ratio(times["N=3"], times["N=0"])
    print(f"  N=3 / N=0: {ratio:.2f} (the encoder sees 4 frames, the head one)")
    result["n3_over_n0"] = ratio
    picked = {"x".join(map(str, key[0])): name for key, name in attention_kernels().items() if key not in known}
    if picked:
        print("  attention kernel, measured per q shape: " + ", ".join(f"{k} {v}" for k, v in picked.items()))
    result["attention_kernels"] = picked
    return result


# --------------------------------------------------------------------------- fast paths

FAST_PATHS = ("bfloat16", "tokens", "compile")


def fast_paths(model, device: torch.device, names=FAST_PATHS, size: int = 518) -> dict[str, tuple]:
    """name -> (model to run, estimate options): the opt-in ways to trade exactness for speed
    (``size``: the Depth Anything V2 input size of the exact path)."""
    paths = {}
    # Own copies where a path changes the weights (their dtype) or wraps the forward.
    if "bfloat16" in names:
        paths["bfloat16"] = (copy.deepcopy(model), {"dtype": torch.bfloat16})
    if "tokens" in names:
        if model.family == "dav2":
            fewer = max(14, round(size * 0.7 / 14) * 14)
            paths[f"input_size {fewer} (about half the tokens)"] = (model, {"input_size": fewer})
        else:
            paths["resolution_level 0 (fewest pixels)"] = (model, {"resolution_level": 0})
    if "compile" in names:
        compiled = copy.deepcopy(model)
        compiled.forward = torch.compile(compiled.forward, dynamic=False)
        paths["torch.compile"] = (compiled, {})
    return paths


def bench_fast_paths(model, args, device: torch.device, repeat: int, names=FAST_PATHS) -> dict:
    """Each fast path in ``names`` against the exact path on demo scenes (N=3): speed ratio and AbsRel."""
    if not names:
        return {}
    # UniDepthV2 at 560² (about a 640x480 photo's pixels): resolution_level 0 then lowers its budget
    size = args.size or (518 if model.family == "dav2" else 560)
    scenes = demo_inputs(size, device)

    base = {"input_size": size} if model.family == "dav2" else {}

    def estimate(m, opts, scene):
        image, stack, k = scene
        opts = {**base, **opts}
        return m.estimate(image, stack, k, device=device, **opts).depth

    exact = [estimate(model, {}, s) for s in scenes]
    results = {}
    for name, (m, opts) in fast_paths(model, device, names, size).items():
        try:
            t0 = time.perf_counter()
            fast = [estimate(m, opts, s) for s in scenes]  # warm-up (and compilation)
            first = time.perf_counter() - t0
            times = alternate({"exact": lambda: [estimate(model, {}, s) for s in scenes],
                               "fast": lambda: [estimate(m, opts, s) for s in scenes]}, repeat, device)
        except Exception as exc:  # an unavailable backend (e.g. no C++ compiler): say so, go on
            print(f"  {name}: not available here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            results[name] = {"error": str(exc).splitlines()[0]}
            continue
        ratio = paired_ratio(times["fast"], times["exact"])
        absrel = sum(depth_metrics(f, e)["abs_rel"] for f, e in zip(fast, exact)) / len(scenes)
        print(f"  {name}: {1 / ratio:.2f}x the exact speed (time ratio {ratio:.2f}), AbsRel against the exact "
              f"depth {absrel:.2e} ({len(scenes)} demo scenes {size}x{size}, N=3; first call {first:.1f} s)")
        results[name] = {"time_ratio": ratio, "speedup": 1 / ratio, "abs_rel": absrel, "first_call_seconds": first}
    return results


def fast_path_names(text) -> tuple:
    """``--fast-paths``: comma-separated names from :data:`FAST_PATHS`, ``all`` or ``none``."""
    if text is None or str(text).strip().lower() == "all":
        return FAST_PATHS
    names = tuple(n.strip().lower() for n in str(text).split(",") if n.strip())
    if names == ("none",):
        return ()
    bad = [n for n in names if n not in FAST_PATHS]
    if bad:
        raise ValueError(f"--fast-paths: unknown {', '.join(bad)}; use all, none or some of {', '.join(FAST_PATHS)}")
    return names


# --------------------------------------------------------------------------- command

def run(args) -> dict:
    device = device_of(args)
    repeat = max(1, int(getattr(args, "repeat", None) or 3))
    name = (getattr(args, "model", None) or "all")
    names = MODELS if name.lower() == "all" else (name.lower() if name.lower() in MODELS else name,)
    paths = fast_path_names(getattr(args, "fast_paths", None))  # bad options fail before any timing
    models = [build(n, device) for n in names]
    rates = matmul_rates(device)
    m, k, n = FLOOR_SHAPE
    print(f"float32 matmul {m}x{k} by {k}x{n} on {device}: "
          + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items()))
    report = {"matmul_gflops_per_s": rates, "models": {}}
    for model, source in models:
        print(f"{model.describe()}, {source}:")
        entry = bench_exact(model, args, device, repeat, rates)
        entry["fast_paths"] = bench_fast_paths(model, args, device, repeat, paths)
        report["models"][model.family] = entry
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}")
    return report
