"""The arithmetic kernels of the Stage-2 networks: linear layers, attention and convolution
layouts, each routed to the fastest PyTorch kernel that computes the same math (results differ
from the plain ops by float32 round-off only).

* Linear layers run through oneDNN on x86 CPUs in float32 inference: PyTorch's default float32
  GEMM there (MKL) reaches about half of oneDNN's rate on CPUs it does not tune for (AMD). An
  MLP's exact GELU runs in place on the fresh product (cheaper than oneDNN's erf post-op on AVX2).
  Autograd, other dtypes and other devices use ``F.linear``.
* Attention on x86 CPUs in float32 inference is whichever of two exact kernels is faster here,
  measured once per shape: PyTorch's fused SDPA (blocked online softmax) or per-head oneDNN
  products with an in-place softmax. Neither wins everywhere: per-head oneDNN ran 1.4x SDPA on one
  AVX-512 server, SDPA 1.4x per-head oneDNN on an AVX2 one and 1.2x on another AVX-512 one.
  Elsewhere, SDPA. The logit scale is always passed explicitly, so the release's ``q.k/head_dim``
  costs no extra pass over q.
* Residual branches are scaled and added in place outside autograd; row-wise ones (norm + MLP)
  run in row blocks whose hidden activations the allocator can reuse.
* Convolution heads run channels-last: oneDNN's NHWC convolutions are the fast ones on CPU and
  cuDNN's on tensor cores. A ReLU that follows a convolution runs inside it on CPU.
"""

from __future__ import annotations

import platform
import threading
import time
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["linear", "Linear", "attention", "attention_kernels", "residual", "residual_rows", "conv_layout",
           "conv_act", "onednn_linear_available"]

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def onednn_linear_available() -> bool:
    """True where float32 CPU linear layers go through oneDNN."""
    return _X86 and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_ONEDNN = onednn_linear_available()


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.compiler.is_compiling())  # the compiler fuses plain ops itself


def _activate(out: torch.Tensor, act: str, slope: float = 0.01) -> torch.Tensor:
    """``act`` ("none", "gelu", "relu", "leaky_relu") of a fresh product nothing else holds: in
    place (no second buffer) unless autograd needs the input."""
    if act == "none":
        return out
    if out.requires_grad and torch.is_grad_enabled():
        return F.gelu(out) if act == "gelu" else F.relu(out) if act == "relu" else F.leaky_relu(out, slope)
    if act == "gelu":
        return torch.ops.aten.gelu_(out)
    return out.relu_() if act == "relu" else F.leaky_relu_(out, slope)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` (then exact GELU when ``gelu``) for ``x`` ``[..., in]``."""
    if _onednn(x, weight) and x.numel() >= 64 * x.shape[-1]:  # a few rows: not worth a oneDNN call
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "none", [], "")
        out = out.reshape(*x.shape[:-1], weight.shape[0])
    else:
        out = F.linear(x, weight, bias)
    return _activate(out, "gelu" if gelu else "none")


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and keys) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


# Query rows per score block of the CPU attention: bounds its buffer to rows x keys floats.
_ATTN_ROWS = 512
# Below this many query rows the fused kernel's single call is cheapest: no choice to make.
_ATTN_MIN_ROWS = 64


def _attention_onednn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    b, h, n, d = q.shape
    # Output laid out [B,L,H,D] so the callers' transpose(1, 2).reshape is free.
    out = torch.empty(b, n, h, v.shape[-1], dtype=q.dtype)
    # One pass each into contiguous heads: oneDNN would otherwise copy every strided slice.
    q = torch.mul(q, scale, out=torch.empty(q.shape, dtype=q.dtype))
    k = k.contiguous()
    vt = v.transpose(-2, -1).contiguous()
    mm = torch.ops.mkldnn._linear_pointwise
    step = -(-n // -(-n // _ATTN_ROWS))  # equal blocks of at most _ATTN_ROWS rows
    for i in range(b):
        for j in range(h):
            for r in range(0, n, step):
                s = mm(q[i, j, r:r + step], k[i, j], None, "none", [], "")
                torch.softmax(s, -1, out=s)
                out[i, r:r + step, j] = mm(s, vt[i, j], None, "none", [], "")
    return out.transpose(1, 2)


def _attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


_ATTENTION = {"sdpa": _attention_sdpa, "onednn": _attention_onednn}
_picked: dict[tuple, str] = {}
_picking = threading.Lock()


def _fastest(candidates: dict[str, Callable[[], torch.Tensor]], rounds: int = 2) -> tuple[str, torch.Tensor]:
    """The candidate with the shortest best-of-``rounds`` time (rounds interleaved, so a busy
    moment on a shared machine hits both), and its last result."""
    best: dict[str, float] = {}
    out: dict[str, torch.Tensor] = {}
    failed: dict[str, RuntimeError] = {}
    for _ in range(rounds):
        for name, run in candidates.items():
            if name in failed:
                continue
            start = time.perf_counter()
            try:
                out[name] = run()
            except RuntimeError as exc:  # a kernel that cannot take this shape drops out
                failed[name] = exc
                continue
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    if not best:
        raise next(iter(failed.values()))
    name = min(best, key=best.get)
    return name, out[name]


def attention_kernels() -> dict[tuple, str]:
    """The CPU attention kernel picked so far per (q shape, k shape, value width, threads)."""
    return dict(_picked)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """softmax(q.k * scale) v for ``[B,H,L,D]`` heads; ``scale`` None is 1/sqrt(D).

    On x86 CPUs in float32 inference, the first call at a shape times both exact kernels (two
    rounds, about three extra attention calls once per process) and keeps the faster."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if not (_onednn(q, k) and not v.requires_grad and q.shape[-2] >= _ATTN_MIN_ROWS):
        return _attention_sdpa(q, k, v, scale)
    key = (tuple(q.shape), tuple(k.shape), v.shape[-1], torch.get_num_threads())
    name = _picked.get(key)
    if name is not None:
        return _ATTENTION[name](q, k, v, scale)
    with _picking:
        if key in _picked:  # picked by another thread meanwhile
            return _ATTENTION[_picked[key]](q, k, v, scale)
        name, out = _fastest({n: (lambda f=f: f(q, k, v, scale)) for n, f in _ATTENTION.items()})
        _picked[key] = name
    return out


def residual(x: torch.Tensor, branch: torch.Tensor, gamma: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x + branch * gamma`` (``x + branch`` without gamma). ``branch`` must be a fresh result
    nothing else holds: outside autograd it is updated in place (same arithmetic, no new buffers)."""
    if torch.is_grad_enabled() and (branch.requires_grad or (gamma is not None and gamma.requires_grad)):
        return x + (branch if gamma is None else branch * gamma)
    if gamma is not None:
        branch.mul_(gamma)
    return branch.add_(x)


# Row blocks of a row-wise branch keep its hidden activations under this size: glibc serves such
# buffers from its heap (reused), larger ones (over 32 MiB) with fresh pages on every call.
_ROW_BLOCK_BYTES = 16 << 20


def residual_rows(x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor], gamma: torch.Tensor,
                  hidden: int) -> torch.Tensor:
    """``x + branch(x) * gamma`` for a ``branch`` that treats rows independently (a norm and an MLP
    of ``hidden`` units). On CPU outside autograd it runs in row blocks and updates ``x`` in place,
    so ``x`` must be a fresh result nothing else holds; the arithmetic is that of :func:`residual`."""
    rows = max(64, _ROW_BLOCK_BYTES // (hidden * x.element_size()))
    if (torch.is_grad_enabled() or x.device.type != "cpu" or not x.is_contiguous()
            or x.numel() <= rows * x.shape[-1]):
        return residual(x, branch(x), gamma)
    flat = x.view(-1, x.shape[-1])
    for r in range(0, flat.shape[0], rows):
        part = flat[r:r + rows]
        part.add_(branch(part).mul_(gamma))
    return x


def conv_act(conv: nn.Conv2d, x: torch.Tensor, act: str = "relu", slope: float = 0.01) -> torch.Tensor:
    """``act(conv(x))`` with ``act`` "relu" or "leaky_relu" (negative ``slope``). On x86 CPUs in
    float32 inference the activation runs inside oneDNN's convolution as it writes each output
    tile, instead of as a second pass over the whole map (about a tenth of a 3x3 convolution)."""
    if act not in ("relu", "leaky_relu"):
        raise ValueError(f"act must be 'relu' or 'leaky_relu', got {act!r}")
    if (_onednn(x, conv.weight) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and x.dim() == 4):
        scalars = [slope] if act == "leaky_relu" else []
        return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, list(conv.padding),
                                                       list(conv.stride), list(conv.dilation), conv.groups,
                                                       act, scalars, "")
    return _activate(conv(x), act, slope)


def conv_layout(module: nn.Module, device: torch.device) -> nn.Module:
    """Keep the 4-D (convolution) weights of ``module`` in the layout that is fast on ``device``:
    channels-last on CPU and CUDA (convolutions given channels-last weights compute channels-last),
    the default elsewhere. Values are unchanged; a no-op when they already are."""
    fmt = torch.channels_last if torch.device(device).type in ("cpu", "cuda") else torch.contiguous_format
    for p in module.parameters():
        if p.dim() == 4 and not p.is_contiguous(memory_format=fmt):
            p.data = p.data.contiguous(memory_format=fmt)
    return module
