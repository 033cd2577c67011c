"""Divided Space-Focus Attention (DSFA): refines reference-frame ViT tokens with a bokeh stack.

One block per fused feature level (paper Sec. 4). Frames are ordered [reference (K=0), stack
frames (raw K)]. Space step: each frame attends over its own patches plus a K token. Focus step:
each patch attends across frames, FiLM-modulated by K, with an ALiBi-like bias -s*|K_i - K_j|.

Parameter names follow the authors' release files so they load as-is. The attention scaling is
the one the release weights were trained with (GPU, fused SDPA): space logits q.k/head_dim
(q pre-scaled, then SDPA scales again), focus logits q.k/sqrt(head_dim) + bias. We reproduce
that on every device rather than the authors' CPU fallback, which scales once.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .dinov2 import Mlp
from .kernels import Linear, attention, linear, residual, residual_rows

__all__ = ["DSFABlock", "DSFAAttention"]


class DSFAAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and ``out_proj``.

    Without a bias: logits q.k/head_dim, as the release's SDPA path. With an additive
    ``attn_bias``: logits q.k/sqrt(head_dim) + bias, as its explicit path.
    """

    def __init__(self, embed_dim: int, num_heads: int = 8):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = Linear(embed_dim, embed_dim * 3)
        self.out_proj = Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None,
                num_queries: Optional[int] = None) -> torch.Tensor:
        """``num_queries``: only the first that many positions attend (their rows are exact)."""
        b, n, d = x.shape
        if num_queries is None:
            q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        else:
            # Project q for the attending rows only; k and v from the same fused weight's other rows.
            w, bias = self.qkv.weight, self.qkv.bias
            n = num_queries
            q = linear(x[:, :n], w[:d], bias[:d]).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            k, v = linear(x, w[d:], bias[d:]).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            if attn_bias is not None:
                attn_bias = attn_bias[..., :n, :]
        if attn_bias is None:
            # The release pre-scales q and SDPA scales again: one explicit 1/head_dim.
            out = attention(q, k, v, 1.0 / self.head_dim)
        else:
            scores = (q * self.scale) @ k.transpose(-2, -1)
            if attn_bias.dim() == 3:
                attn_bias = attn_bias.unsqueeze(1)
            out = (scores + attn_bias).softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.embed_dim))


class DSFABlock(nn.Module):
    """One DSFA block.

    ``film_sequential``: the Depth Anything V2 release stores the FiLM projection as
    ``focus_film.0`` (a one-layer Sequential); the UniDepthV2 release as a plain ``focus_film``.
    """

    def __init__(self, embed_dim: int, num_heads: int = 8, layerscale_init: float = 0.1,
                 alibi_scale: float = 1.0, film_sequential: bool = True):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.alibi_scale = float(alibi_scale)

        self.ln_space_attn = nn.LayerNorm(embed_dim, eps=1e-5)
        self.space_attn = DSFAAttention(embed_dim, num_heads)
        self.gamma_space_attn = nn.Parameter(layerscale_init * torch.ones(embed_dim))
        self.ln_space_ffn = nn.LayerNorm(embed_dim, eps=1e-5)
        self.space_ffn = Mlp(embed_dim, 4 * embed_dim)
        self.gamma_space_ffn = nn.Parameter(layerscale_init * torch.ones(embed_dim))

        self.ln_focus_attn = nn.LayerNorm(embed_dim, eps=1e-5)
        self.focus_attn = DSFAAttention(embed_dim, num_heads)
        self.gamma_focus_attn = nn.Parameter(layerscale_init * torch.ones(embed_dim))
        self.ln_focus_ffn = nn.LayerNorm(embed_dim, eps=1e-5)
        self.focus_ffn = Mlp(embed_dim, 4 * embed_dim)
        self.gamma_focus_ffn = nn.Parameter(layerscale_init * torch.ones(embed_dim))

        self.k_embed = nn.Sequential(nn.Linear(1, embed_dim // 4), nn.ReLU(), nn.Linear(embed_dim // 4, embed_dim))
        film = nn.Linear(embed_dim, embed_dim * 2)
        self.focus_film = nn.Sequential(film) if film_sequential else film

    def _space(self, x: torch.Tensor, k_tokens: torch.Tensor) -> torch.Tensor:
        b, f, l, d = x.shape
        seq = torch.cat([k_tokens.reshape(b * f, 1, d), x.reshape(b * f, l, d)], dim=1)
        seq = residual(seq, self.space_attn(self.ln_space_attn(seq)), self.gamma_space_attn)
        seq = residual_rows(seq, lambda rows: self.space_ffn(self.ln_space_ffn(rows)), self.gamma_space_ffn,
                            self.space_ffn.hidden)
        return seq[:, 1:].reshape(b, f, l, d)

    def _focus(self, x: torch.Tensor, k_values: torch.Tensor, scale: torch.Tensor,
               shift: torch.Tensor) -> torch.Tensor:
        """Focus step for the reference frame only: its row of the cross-frame attention and its FFN
        are exactly what the full step gives it, and the other frames' outputs are never used."""
        b, f, l, d = x.shape
        x = x * (1 + torch.tanh(scale).unsqueeze(2)) + shift.unsqueeze(2)
        k = k_values.reshape(b, f)
        bias = -self.alibi_scale * (k[:, :1, None] - k[:, None, :]).abs()  # [B, 1, F]
        bias = bias.to(x.dtype).unsqueeze(1).expand(b, l, 1, f).reshape(b * l, 1, f)
        seq = x.permute(0, 2, 1, 3).reshape(b * l, f, d)
        ref = residual(seq[:, :1], self.focus_attn(self.ln_focus_attn(seq), attn_bias=bias, num_queries=1),
                       self.gamma_focus_attn)
        ref = residual(ref, self.focus_ffn(self.ln_focus_ffn(ref)), self.gamma_focus_ffn)
        return ref.reshape(b, l, d)

    def forward(self, ref_patches: torch.Tensor, stack_patches: Optional[torch.Tensor] = None,
                k_stack: Optional[torch.Tensor] = None) -> torch.Tensor:
        """ref_patches ``[B,L,D]``, stack_patches ``[B,N,L,D]``, k_stack ``[B,N]`` or ``[B,N,1]``
        (raw K) -> refined reference patches ``[B,L,D]``. No stack returns ``ref_patches``."""
        if stack_patches is None or stack_patches.numel() == 0:
            return ref_patches
        b, n = stack_patches.shape[:2]
        if k_stack is None:
            k_stack = torch.zeros(b, n, device=ref_patches.device, dtype=torch.float32)
        k_stack = torch.as_tensor(k_stack, device=ref_patches.device).reshape(b, n, 1)
        if not k_stack.is_floating_point():
            k_stack = k_stack.float()
        k_values = torch.cat([k_stack.new_zeros(b, 1, 1), k_stack], dim=1)  # reference frame has K=0

        w = self.k_embed[0].weight
        k_tokens = self.k_embed(k_values.to(w.dtype))  # [B, F, D]
        scale, shift = self.focus_film(k_tokens).chunk(2, dim=-1)
        dt = ref_patches.dtype
        x = torch.cat([ref_patches.unsqueeze(1), stack_patches.to(dt)], dim=1)
        x = self._space(x, k_tokens.to(dt))
        return self._focus(x, k_values, scale.to(dt), shift.to(dt))
