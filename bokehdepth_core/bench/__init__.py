"""Benchmarks: ``python -m bokehdepth_core bench {render,depth,stack,budget}``.

Every benchmark lives here and imports the engine it times; no engine imports this package.
"""

from __future__ import annotations

import importlib

import torch

# target -> module of this package whose ``run(args)`` times it
TARGETS = {"render": "render", "depth": "depth", "stack": "stack", "budget": "budget"}


def run(target: str, args):
    if target not in TARGETS:
        raise ValueError(f"bench target must be one of {', '.join(sorted(TARGETS))}, got {target!r}")
    return importlib.import_module(f".{TARGETS[target]}", __name__).run(args)


def device_of(args) -> torch.device:
    """The ``--device`` of a benchmark (default cpu), or a clear error for a name torch does not know."""
    name = getattr(args, "device", None) or "cpu"
    try:
        return torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device must be a torch device such as cpu, cuda or cuda:1, got {name!r}") from None


def rss_mb() -> float:
    """Resident memory of this process now (MiB); NaN where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_memory_mb(device: torch.device) -> tuple[str, float]:
    """(what was measured, MiB): the CUDA allocator's peak on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return "cuda_max_allocated", torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource

        return "process_max_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:  # pragma: no cover - non-POSIX
        return "process_max_rss", float("nan")


def peak_allocated_mb(fn, device: torch.device) -> tuple[str, float]:
    """(what was measured, MiB) while ``fn()`` runs: the CUDA allocator's peak on a GPU, else the
    peak of the tensors allocated and not yet freed during the call (torch's profiler)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return "cuda_max_allocated", torch.cuda.max_memory_allocated(device) / 2 ** 20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    current = top = 0
    for _, nbytes in events:
        current += nbytes
        top = max(top, current)
    return "tensors_allocated", top / 2 ** 20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
