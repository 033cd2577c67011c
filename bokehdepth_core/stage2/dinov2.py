"""DINOv2 ViT encoder with the parameter names of the Depth Anything V2 / DINOv2 releases.

Written against the published architecture (patch 14, class token, learned position embedding
bicubically resized to the input grid, pre-LN blocks with LayerScale, MLP or SwiGLU FFN).
Own module instead of a library ViT because checkpoint parity needs the exact key names, the
position-embedding resize of the DAv2 code, and a switchable attention-logit scale:

* ``"standard"``: softmax(q.k / sqrt(head_dim)) — plain Depth Anything V2 and UniDepthV2 weights.
* ``"release_sdpa"``: softmax(q.k / head_dim) — what the BokehDepth DAv2+DSFA release computes on
  GPU (q pre-scaled, then the fused SDPA kernel scales again); its weights were trained so.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import Linear, attention, linear, residual, residual_rows

__all__ = ["DinoV2", "build_dinov2", "Mlp", "LayerScale", "DINOV2_CONFIGS", "ATTN_SCALES"]

ATTN_SCALES = ("standard", "release_sdpa")

# name -> (embed_dim, depth, num_heads, ffn)
DINOV2_CONFIGS = {
    "vits": (384, 12, 6, "mlp"),
    "vitb": (768, 12, 12, "mlp"),
    "vitl": (1024, 24, 16, "mlp"),
    "vitg": (1536, 40, 24, "swiglu"),
}


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input size {h}x{w} must be a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.double_scale = False
        self.qkv = Linear(dim, dim * 3)
        self.proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        # double_scale: logits q.k/head_dim, as the release's SDPA computes them on a pre-scaled q
        out = attention(q, k, v, 1.0 / self.head_dim if self.double_scale else None)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1, exact GELU, fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.fc2 = Linear(hidden, dim)

    @property
    def hidden(self) -> int:
        return self.fc1.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear(x, self.fc1.weight, self.fc1.bias, gelu=True))


class SwiGLU(nn.Module):
    """Fused SwiGLU FFN of ViT-g (keys ``w12``/``w3``); hidden size as DINOv2 rounds it."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = Linear(dim, 2 * hidden)
        self.w3 = Linear(hidden, dim)

    @property
    def hidden(self) -> int:
        return self.w12.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, ffn: str, init_values: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = SwiGLU(dim, hidden) if ffn == "swiglu" else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = residual(x, self.attn(self.norm1(x)), self.ls1.gamma)
        return residual_rows(x, lambda rows: self.mlp(self.norm2(rows)), self.ls2.gamma, self.mlp.hidden)


class DinoV2(nn.Module):
    """DINOv2 ViT. ``register_param`` keeps a ``register_tokens`` parameter even with zero
    registers (UniDepth's files carry one); ``interpolate_offset`` 0.1 is the DAv2 behaviour,
    0.0 resizes the position grid to an explicit size (later DINOv2 / UniDepth)."""

    def __init__(self, embed_dim: int = 384, depth: int = 12, num_heads: int = 6, patch_size: int = 14,
                 img_size: int = 518, mlp_ratio: float = 4.0, ffn: str = "mlp", init_values: float = 1.0,
                 num_register_tokens: int = 0, register_param: bool = False,
                 interpolate_offset: float = 0.1, interpolate_antialias: bool = False,
                 attn_scale: str = "standard", norm_eps: float = 1e-6, final_norm_eps: Optional[float] = None):
        super().__init__()
        self.embed_dim = self.num_features = embed_dim
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.n_blocks = depth
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        grid = img_size // patch_size

        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        if num_register_tokens or register_param:
            self.register_tokens = nn.Parameter(torch.zeros(1, max(1, num_register_tokens), embed_dim))
        else:
            self.register_tokens = None
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, ffn, init_values, norm_eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps if final_norm_eps is None else final_norm_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.attn_scale = attn_scale
        if self.pos_embed.device.type != "meta":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)

    @property
    def attn_scale(self) -> str:
        return self._attn_scale

    @attn_scale.setter
    def attn_scale(self, mode: str) -> None:
        if mode not in ATTN_SCALES:
            raise ValueError(f"attn_scale must be one of {ATTN_SCALES}, got {mode!r}")
        self._attn_scale = mode
        for blk in self.blocks:
            blk.attn.double_scale = mode == "release_sdpa"

    def interpolate_pos_encoding(self, num_tokens: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        if num_tokens - 1 == n and height == width:
            return self.pos_embed.to(dtype)
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        m = int(math.sqrt(n))
        gh, gw = height // self.patch_size, width // self.patch_size
        grid = patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            # The offset scale factor (not the output size) drives the sampling grid in the
            # released models: keep it for parity.
            sf = ((gh + self.interpolate_offset) / m, (gw + self.interpolate_offset) / m)
            grid = F.interpolate(grid, scale_factor=sf, mode="bicubic", antialias=self.interpolate_antialias)
        else:
            grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", antialias=self.interpolate_antialias)
        if tuple(grid.shape[-2:]) != (gh, gw):
            raise RuntimeError(f"position grid resized to {tuple(grid.shape[-2:])}, expected {(gh, gw)}")
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat([cls_pos, patch_pos], dim=1).to(dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(tokens.shape[1], h, w, tokens.dtype)
        if self.num_register_tokens:
            reg = self.register_tokens.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
            tokens = torch.cat([tokens[:, :1], reg, tokens[:, 1:]], dim=1)
        return tokens

    def get_intermediate_layers(self, x: torch.Tensor, n: Union[int, Sequence[int]] = 1,
                                return_class_token: bool = False, norm: bool = True):
        """Outputs of the blocks ``n`` (indices, or the last ``n`` blocks): patch tokens ``[B,L,D]``
        (final-normed when ``norm``), and with ``return_class_token`` pairs (patch, class ``[B,D]``)."""
        take = list(range(len(self.blocks) - n, len(self.blocks))) if isinstance(n, int) else [int(i) for i in n]
        bad = [i for i in take if not 0 <= i < len(self.blocks)]
        if bad:
            raise ValueError(f"block indices {bad} out of range for a {len(self.blocks)}-block ViT")
        wanted, outputs = set(take), {}
        tokens = self.prepare_tokens(x)
        for i, blk in enumerate(self.blocks[: max(take) + 1]):
            tokens = blk(tokens)
            if i in wanted:
                outputs[i] = self.norm(tokens) if norm else tokens
        outs = [outputs[i] for i in take]
        patches = tuple(o[:, 1 + self.num_register_tokens:] for o in outs)
        if return_class_token:
            return tuple(zip(patches, (o[:, 0] for o in outs)))
        return patches


def build_dinov2(name: str, attn_scale: str = "standard", **kw) -> DinoV2:
    """The ViT of Depth Anything V2 for ``name`` in vits/vitb/vitl/vitg (patch 14, 518 grid)."""
    if name not in DINOV2_CONFIGS:
        raise ValueError(f"encoder must be one of {sorted(DINOV2_CONFIGS)}, got {name!r}")
    dim, depth, heads, ffn = DINOV2_CONFIGS[name]
    return DinoV2(embed_dim=dim, depth=depth, num_heads=heads, ffn=ffn, attn_scale=attn_scale, **kw)
