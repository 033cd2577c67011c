"""UniDepthV2 decoder: camera head (pinhole from the ViT class tokens) and depth head (ray-
prompted features upsampled to log-radius and log-confidence).

Written from the UniDepthV2 paper and its reference implementation's architecture; module and
parameter names are the release's so its files load as-is (and in its registration order, which
an EMA list in a checkpoint relies on). Attention is textbook softmax(q.k/sqrt(d)).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..camera import pinhole_rays
from .dinov2 import LayerScale
from .kernels import Linear, attention, conv_act, conv_layout, linear, residual

__all__ = ["UniDepthDecoder", "fourier_features", "ray_angles"]


class MLP(nn.Module):
    """Pre-LN two-layer MLP (GELU) with its own LayerNorm, as in UniDepth."""

    def __init__(self, dim: int, expansion: int = 4, output_dim: Optional[int] = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj1 = Linear(dim, int(dim * expansion))
        self.proj2 = Linear(int(dim * expansion), output_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(linear(self.norm(x), self.proj1.weight, self.proj1.bias, gelu=True))


class AttentionBlock(nn.Module):
    """x <- x + ls1(MHA(LN(x) [+pos on q], LN(ctx))), x <- x + ls2(MLP(x)); ``layer_scale <= 0``
    drops the layer-scales. k and v come from one ``kv`` projection (k first)."""

    def __init__(self, dim: int, num_heads: int = 8, expansion: int = 4, layer_scale: float = 1.0,
                 context_dim: Optional[int] = None, use_bias: bool = True):
        super().__init__()
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.mlp = MLP(dim, expansion)
        self.kv = Linear(context_dim, dim * 2, bias=use_bias)
        self.q = Linear(dim, dim, bias=use_bias)
        self.norm_attnx = nn.LayerNorm(dim)
        self.norm_attnctx = nn.LayerNorm(context_dim)
        self.out = Linear(dim, dim, bias=use_bias)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale > 0 else nn.Identity()
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale > 0 else nn.Identity()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def attn(self, x: torch.Tensor, context: torch.Tensor, pos_embed: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, c = x.shape
        k, v = self.kv(self.norm_attnctx(context)).chunk(2, dim=-1)
        q = self._heads(self.q(self.norm_attnx(x)))
        if pos_embed is not None:
            q = q + self._heads(pos_embed)
        out = attention(q, self._heads(k), self._heads(v))
        return self.out(out.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                pos_embed: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        x = x + self.ls1(self.attn(x, context, pos_embed))
        return x + self.ls2(self.mlp(x))


class AttentionLayer(nn.Module):
    def __init__(self, num_blocks: int, dim: int, **kw):
        super().__init__()
        self.layers = nn.ModuleList(AttentionBlock(dim, **kw) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, context=context)
        return x


class ListAdapter(nn.Module):
    def __init__(self, input_dims: Sequence[int], hidden_dim: int):
        super().__init__()
        self.input_adapters = nn.ModuleList(Linear(d, hidden_dim) for d in input_dims)

    def forward(self, xs):
        return [adapter(x) for adapter, x in zip(self.input_adapters, xs)]


class CameraHead(nn.Module):
    """Four latent queries (fx, fy, cx, cy) attend over the projected class tokens; outputs are
    ``exp`` / ``sigmoid`` of the logits times 0.7 * diagonal (focals) or the image size (centre)."""

    def __init__(self, hidden_dim: int, num_heads: int = 8, expansion: int = 4, layer_scale: float = 1.0):
        super().__init__()
        kw = dict(num_heads=num_heads, expansion=expansion, layer_scale=layer_scale, use_bias=False)
        self.aggregate1 = AttentionBlock(hidden_dim, **kw)
        self.aggregate2 = AttentionBlock(hidden_dim, **kw)
        self.latents_pos = nn.Parameter(torch.randn(1, 4, hidden_dim))
        self.project = MLP(hidden_dim, expansion=1, output_dim=hidden_dim)
        self.out_pinhole = MLP(hidden_dim, expansion=1, output_dim=1)

    def forward(self, cls_tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """cls_tokens ``[B,4,C]`` -> (fx, fy, cx, cy) ``[B,4]`` in network-input pixels."""
        tokens = self.project(cls_tokens)
        pos = self.latents_pos.expand(cls_tokens.shape[0], -1, -1).to(tokens.dtype)
        tokens = self.aggregate1(tokens, pos_embed=pos)
        tokens = self.aggregate2(tokens, pos_embed=pos)
        x = self.out_pinhole(tokens).squeeze(-1).float()  # exp/sigmoid in fp32, as under UniDepth's autocast
        diag = (height ** 2 + width ** 2) ** 0.5
        scale = torch.tensor([0.7 * diag, 0.7 * diag, width, height], device=x.device, dtype=x.dtype)
        params = torch.stack([x[:, 0].exp(), x[:, 1].exp(), x[:, 2].sigmoid(), x[:, 3].sigmoid()], dim=1)
        return params * scale


class ResidualConvUnit(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 3, layer_scale: float = 1.0):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2)
        self.gamma = nn.Parameter(layer_scale * torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(conv_act(self.conv1, F.leaky_relu(x), "leaky_relu"))
        return residual(x, out, self.gamma)


class ResUpsampleBil(nn.Module):
    """Residual conv units, then 1x1 conv and 2x bilinear upsampling."""

    def __init__(self, dim: int, output_dim: int, num_layers: int = 2, kernel_size: int = 3,
                 layer_scale: float = 1.0):
        super().__init__()
        self.convs = nn.ModuleList(ResidualConvUnit(dim, kernel_size, layer_scale) for _ in range(num_layers))
        self.up = nn.Sequential(nn.Conv2d(dim, output_dim, kernel_size=1),
                                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.up(x)


def ray_angles(rays: torch.Tensor) -> torch.Tensor:
    """Unit rays ``[..., 3]`` -> (polar, azimuth) ``[..., 2]``; x is kept at least 1e-3 away from 0
    (sign preserved) so the azimuth is stable, as UniDepthV2."""
    x, y, z = rays.unbind(-1)
    polar = torch.acos(z.clamp(-1.0, 1.0))
    sign = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    azimuth = torch.atan2(y, x.abs().clamp(min=1e-3) * sign)
    return torch.stack([polar, azimuth], dim=-1)


def fourier_features(x: torch.Tensor, dim: int, max_freq: int) -> torch.Tensor:
    """``[..., c]`` -> ``[..., dim]``: sin(pi * x_i * f_j) for ``dim // c`` log-spaced frequencies
    f_j in [1, max_freq], grouped per input channel."""
    bands = dim // x.shape[-1]
    if max_freq < 1:
        raise ValueError(f"the network input is too small for the ray embedding (max_freq={max_freq})")
    freqs = 2.0 ** torch.linspace(0.0, math.log2(max_freq), bands, device=x.device, dtype=x.dtype)
    return torch.sin(x.unsqueeze(-1) * freqs * math.pi).flatten(-2)


class DepthHead(nn.Module):
    def __init__(self, hidden_dim: int, num_heads: int = 8, expansion: int = 4, depths: Sequence[int] = (2, 2, 2),
                 kernel_size: int = 3, layer_scale: float = 1.0, out_dim: int = 64, num_levels: int = 4):
        super().__init__()
        self.hidden_dim = hidden_dim
        # Registration order matters: it is the release's state-dict order.
        self.ups = nn.ModuleList()
        self.depth_mlp = nn.ModuleList()
        self.process_features = nn.ModuleList()
        self.prompt_camera = nn.ModuleList()
        self.to_latents = Linear(hidden_dim, hidden_dim)
        for _ in range(num_levels):
            self.prompt_camera.append(AttentionLayer(1, hidden_dim, num_heads=num_heads, expansion=expansion,
                                                     layer_scale=-1.0, context_dim=hidden_dim, use_bias=False))
        mult = 2
        for i, depth in enumerate(depths):
            current_dim = min(hidden_dim, mult * hidden_dim // 2 ** i)
            next_dim = mult * hidden_dim // 2 ** (i + 1)
            output_dim = max(next_dim, out_dim)
            stride = max(1, 2 * i)
            self.process_features.append(nn.ConvTranspose2d(hidden_dim, current_dim, stride, stride=stride))
            self.ups.append(ResUpsampleBil(current_dim, output_dim, depth, kernel_size, layer_scale))
            last = i == len(depths) - 1
            self.depth_mlp.append(nn.Sequential(nn.LayerNorm(next_dim), Linear(next_dim, output_dim))
                                  if last else nn.Identity())
        self.confidence_mlp = nn.Sequential(nn.LayerNorm(next_dim), Linear(next_dim, output_dim))

        def conv(cin, cout, k):
            return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="reflect" if k > 1 else "zeros")

        self.to_depth_lr = conv(output_dim, output_dim // 2, 3)
        self.to_confidence_lr = conv(output_dim, output_dim // 2, 3)
        self.to_depth_hr = nn.Sequential(conv(output_dim // 2, 32, 3), nn.LeakyReLU(), conv(32, 1, 1))
        self.to_confidence_hr = nn.Sequential(conv(output_dim // 2, 32, 3), nn.LeakyReLU(), conv(32, 1, 1))
        conv_layout(self, torch.device("cpu"))

    def embed_rays(self, rays: torch.Tensor, full: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
        """rays ``[B,H*W,3]`` at the input size -> Fourier embedding ``[B,h*w,C]`` on the patch grid."""
        if tuple(full) != tuple(grid):
            b = rays.shape[0]
            img = rays.reshape(b, full[0], full[1], 3).permute(0, 3, 1, 2)
            img = F.interpolate(img, size=grid, mode="bilinear", align_corners=False, antialias=True)
            rays = img.reshape(b, 3, -1).transpose(1, 2)
        rays = rays / rays.norm(dim=-1, keepdim=True).clamp(min=1e-4)
        return fourier_features(ray_angles(rays), self.hidden_dim, max(grid) // 2)

    def _head(self, feat: torch.Tensor, mlp: nn.Module, lr: nn.Module, hr: nn.Module, full) -> torch.Tensor:
        x = mlp(feat.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = F.interpolate(lr(x), size=tuple(full), mode="bilinear", align_corners=True)
        return hr(x)

    def forward(self, features, rays: torch.Tensor, full: tuple[int, int], grid: tuple[int, int]):
        """features: 4 x ``[B,h,w,C]``; rays ``[B,H*W,3]`` -> (log-radius, log-confidence) ``[B,1,H,W]``."""
        conv_layout(self, features[0].device)
        emb = self.embed_rays(rays.float(), full, grid).to(features[0].dtype)
        h, w = grid
        cond = []
        for prompter, feat in zip(self.prompt_camera, features):
            tokens = prompter(feat.reshape(feat.shape[0], h * w, -1), emb)
            cond.append(tokens)
        to_map = lambda t: t.transpose(1, 2).reshape(t.shape[0], -1, h, w)  # noqa: E731
        latents = to_map(self.to_latents(cond[0]))
        for i, up in enumerate(self.ups):
            latents = up(latents + self.process_features[i](to_map(cond[i + 1])))
        # Only the last level reaches the outputs (the other depth_mlp entries are identities).
        logdepth = self._head(latents, self.depth_mlp[-1], self.to_depth_lr, self.to_depth_hr, full)
        logconf = self._head(latents, self.confidence_mlp, self.to_confidence_lr, self.to_confidence_hr, full)
        return logdepth, logconf


class UniDepthDecoder(nn.Module):
    """Camera head + depth head. ``forward(features, cls_tokens, rays=None)`` with features
    4 x ``[B,h,w,D]`` and class tokens 4 x ``[B,1,D]``; a given ``rays`` ``[B,3,H,W]`` replaces the
    predicted camera's rays (the returned intrinsics stay the prediction)."""

    def __init__(self, input_dims: Sequence[int], hidden_dim: int = 512, num_heads: int = 8, expansion: int = 4,
                 depths: Sequence[int] = (2, 2, 2), out_dim: int = 64, kernel_size: int = 3,
                 layer_scale: float = 1.0):
        super().__init__()
        n = len(input_dims)
        self.input_adapter = ListAdapter(input_dims, hidden_dim)
        self.camera_token_adapter = ListAdapter(input_dims, hidden_dim)
        self.camera_layer = CameraHead(hidden_dim, num_heads, expansion, layer_scale)
        self.depth_layer = DepthHead(hidden_dim, num_heads, expansion, depths, kernel_size, layer_scale, out_dim, n)
        # Present in the release files; feeds nothing at inference (kept for strict loading).
        self.level_embeds = nn.Parameter(torch.zeros(1, 1, n, hidden_dim), requires_grad=False)

    def forward(self, features, cls_tokens, full: tuple[int, int], rays: Optional[torch.Tensor] = None) -> dict:
        b = features[0].shape[0]
        H, W = full
        grid = tuple(features[0].shape[1:3])
        feats = self.input_adapter(features)
        tokens = torch.cat(self.camera_token_adapter(cls_tokens), dim=1)
        fx, fy, cx, cy = self.camera_layer(tokens, H, W).unbind(-1)
        k = torch.zeros(b, 3, 3, device=fx.device, dtype=fx.dtype)
        k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = fx, fy, cx, cy, 1.0
        # Camera, rays and the final exp in fp32 even when the network runs in half precision.
        rays = pinhole_rays(fx, fy, cx, cy, H, W) if rays is None else rays.float()
        flat = rays.reshape(b, 3, -1).transpose(1, 2)  # the ray embedding is computed in fp32 too
        logdepth, logconf = self.depth_layer(feats, flat, (H, W), grid)
        radius = torch.exp(logdepth.float().clamp(-8.0, 8.0) + 2.0)
        points = rays * radius
        return {
            "radius": radius,
            "confidence": torch.exp(logconf.float().clamp(-8.0, 8.0)),
            "intrinsics": k,
            "rays": rays,
            "points": points,
            "depth": points[:, 2:3],
        }
