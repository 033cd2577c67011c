"""The compute side of a benchmark: this machine's float32 matrix-multiply rate (the floor a
network's FLOPs are held against) and the FLOPs of a forward."""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from ..stage2.kernels import linear, onednn_linear_available
from . import sync

__all__ = ["matmul_rates", "count_flops", "FLOOR_SHAPE"]

# (M, K, N): a ViT-L MLP product over four frames of ~1600 tokens
FLOOR_SHAPE = (6440, 1024, 4096)


def _best_seconds(fn, device: torch.device, repeat: int) -> float:
    fn()
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rates(device: torch.device, repeat: int = 5) -> dict:
    """GFLOP/s of an ``M x K`` by ``K x N`` float32 product (:data:`FLOOR_SHAPE`), best of
    ``repeat``: ``torch.mm`` (PyTorch's default GEMM) and, on CPUs where the Stage-2 networks use
    it, the oneDNN linear kernel."""
    m, k, n = FLOOR_SHAPE
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    flops = 2.0 * m * k * n
    rates = {"torch.mm": flops / _best_seconds(lambda: torch.mm(a, b), device, repeat) / 1e9}
    if device.type == "cpu" and onednn_linear_available():
        w = b.t().contiguous()
        with torch.no_grad():
            rates["oneDNN"] = flops / _best_seconds(lambda: linear(a, w), device, repeat) / 1e9
    return rates


def _linear_pointwise_flops(x_shape, w_shape, *args, **kwargs) -> int:
    rows = 1
    for d in x_shape[:-1]:
        rows *= d
    return 2 * rows * x_shape[-1] * w_shape[0]


def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, lq, d = q_shape
    lk, dv = k_shape[-2], v_shape[-1]
    return 2 * b * h * lq * lk * d + 2 * b * h * lq * lk * dv


def _conv_pointwise_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape))


def _extra_formulas() -> dict:
    """FLOP formulas torch's counter lacks: the oneDNN linear and convolution kernels, SDPA on CPU."""
    extra = {}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        extra[torch.ops.mkldnn._linear_pointwise] = _linear_pointwise_flops  # keyed by op packet
    if hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        extra[torch.ops.mkldnn._convolution_pointwise] = _conv_pointwise_flops
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
    return extra


def count_flops(fn) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of the matrix products, attention and convolutions
    ``fn()`` runs; elementwise work is not counted."""
    with FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())
