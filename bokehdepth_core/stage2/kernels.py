"""The arithmetic kernels of the Stage-2 networks: linear layers, attention and convolution
layouts, each routed to the fastest PyTorch kernel that computes the same math (results differ
from the plain ops by float32 round-off only).

* Linear layers run through oneDNN on x86 CPUs in float32 inference: PyTorch's default float32
  GEMM there (MKL) reaches about half of oneDNN's rate on CPUs it does not tune for (AMD), and
  the GELU of an MLP rides along as the GEMM's post-op. Autograd, other dtypes and other
  devices use ``F.linear``.
* Attention is PyTorch's fused SDPA with the logit scale passed explicitly, so the release's
  ``q.k/head_dim`` costs no extra pass over q.
* Residual branches are scaled and added in place outside autograd.
* Convolution heads run channels-last: oneDNN's NHWC convolutions are the fast ones on CPU and
  cuDNN's on tensor cores.
"""

from __future__ import annotations

import platform
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["linear", "Linear", "attention", "residual", "conv_layout", "onednn_linear_available"]

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


def onednn_linear_available() -> bool:
    """True where float32 CPU linear layers go through oneDNN."""
    return _X86 and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_ONEDNN = onednn_linear_available()


def _onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.compiler.is_compiling())  # the compiler fuses plain ops itself


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` (then exact GELU when ``gelu``) for ``x`` ``[..., in]``."""
    if _onednn(x, weight) and x.numel() >= 64 * x.shape[-1]:  # a few rows: not worth a oneDNN call
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "gelu" if gelu else "none", [],
                                                 "none" if gelu else "")
        return out.reshape(*x.shape[:-1], weight.shape[0])
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and keys) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


# Query rows per score block of the CPU attention: bounds its buffer to rows x keys floats.
_ATTN_ROWS = 512


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


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """softmax(q.k * scale) v for ``[B,H,L,D]`` heads; ``scale`` None is 1/sqrt(D).

    On x86 CPUs in float32 inference, per-head oneDNN products with an in-place softmax: about
    1.4x the rate of PyTorch's fused CPU kernel at ViT sizes (blocked online softmax there)."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if _onednn(q, k) and not v.requires_grad and q.shape[-2] >= 64:
        return _attention_onednn(q, k, v, scale)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def residual(x: torch.Tensor, branch: torch.Tensor, gamma: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x + branch * gamma`` (``x + branch`` without gamma). ``branch`` must be a fresh result
    nothing else holds: outside autograd it is updated in place (same arithmetic, no new buffers)."""
    if torch.is_grad_enabled() and (branch.requires_grad or (gamma is not None and gamma.requires_grad)):
        return x + (branch if gamma is None else branch * gamma)
    if gamma is not None:
        branch.mul_(gamma)
    return branch.add_(x)


def conv_layout(module: nn.Module, device: torch.device) -> nn.Module:
    """Keep the 4-D (convolution) weights of ``module`` in the layout that is fast on ``device``:
    channels-last on CPU and CUDA (convolutions given channels-last weights compute channels-last),
    the default elsewhere. Values are unchanged; a no-op when they already are."""
    fmt = torch.channels_last if torch.device(device).type in ("cpu", "cuda") else torch.contiguous_format
    for p in module.parameters():
        if p.dim() == 4 and not p.is_contiguous(memory_format=fmt):
            p.data = p.data.contiguous(memory_format=fmt)
    return module
