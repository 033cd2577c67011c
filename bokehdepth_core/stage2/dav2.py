"""Depth Anything V2 with DSFA stack fusion (BokehDepth Stage-2, paper Sec. 4).

The reference image and every stack frame go through the same DINOv2 encoder as one batch; DSFA
refines the reference frame's patch tokens at the taps in ``fusion_layers``; the unchanged DPT
head decodes metric depth (sigmoid x max_depth). Without a stack (or without DSFA weights) this
is plain Depth Anything V2.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dinov2 import build_dinov2
from .dpt import DPTHead
from .dsfa import DSFABlock
from .inputs import network_stack, normalize_imagenet
from .memory import dav2_activation_bytes
from .model import DepthModel

__all__ = ["DepthAnythingV2DSFA", "build_dav2_dsfa", "config_from_state_dict", "build_for_checkpoint",
           "lower_bound_size", "to_network", "MODEL_CONFIGS", "TAPS"]

# encoder -> DPT head widths
MODEL_CONFIGS = {
    "vits": {"features": 64, "out_channels": [48, 96, 192, 384]},
    "vitb": {"features": 128, "out_channels": [96, 192, 384, 768]},
    "vitl": {"features": 256, "out_channels": [256, 512, 1024, 1024]},
    "vitg": {"features": 384, "out_channels": [1536, 1536, 1536, 1536]},
}
# ViT blocks whose (final-normed) outputs feed the DPT head
TAPS = {"vits": [2, 5, 8, 11], "vitb": [2, 5, 8, 11], "vitl": [4, 11, 17, 23], "vitg": [9, 19, 29, 39]}
_ENCODER_BY_DIM = {384: "vits", 768: "vitb", 1024: "vitl", 1536: "vitg"}


def _multiple(x: float, m: int, min_val: int) -> int:
    y = int(round(x / m) * m)  # round-half-even, as numpy in the reference transform
    if y < min_val:
        y = int(math.ceil(x / m) * m)
    return y


def lower_bound_size(h: int, w: int, input_size: int = 518, multiple: int = 14) -> tuple[int, int]:
    """Keep-aspect size whose short side is at least ``input_size``, sides multiples of 14
    (Depth Anything V2's 'lower_bound' resize)."""
    if input_size < multiple:
        raise ValueError(f"input_size must be at least {multiple}, got {input_size}")
    scale = max(input_size / h, input_size / w)
    return _multiple(scale * h, multiple, input_size), _multiple(scale * w, multiple, input_size)


def to_network(images: torch.Tensor, size: tuple[int, int], device=None, dtype=None) -> torch.Tensor:
    """``[..., H, W, 3]`` 0..1 -> bicubic-resized, ImageNet-normalised ``[..., 3, h, w]``."""
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)
    return normalize_imagenet(x).to(dtype or torch.float32).reshape(*lead, 3, *size)


class _FusionLayer(nn.Module):
    # keeps the release's ``encoder_fusion.layers.{i}.block.*`` key path
    def __init__(self, block: DSFABlock):
        super().__init__()
        self.block = block


class EncoderFusion(nn.Module):
    def __init__(self, embed_dim: int, fusion_layers: Sequence[int], num_heads: int,
                 layerscale_init: float, alibi_scale: float):
        super().__init__()
        self.fusion_layers = [int(i) for i in fusion_layers]
        self.layers = nn.ModuleDict({
            str(i): _FusionLayer(DSFABlock(embed_dim, num_heads, layerscale_init, alibi_scale, film_sequential=True))
            for i in self.fusion_layers
        })


class DepthAnythingV2DSFA(DepthModel):
    """``model(x, focus_stack, k_stack)`` -> metric depth ``[B,H,W]``.

    x ``[B,3,H,W]`` ImageNet-normalised (H, W multiples of 14), focus_stack ``[B,N,3,H,W]``,
    k_stack ``[B,N]`` or ``[B,N,1]`` raw K. ``metric=False`` is the relative (disparity)
    Depth Anything V2 head, for plain relative checkpoints.
    """

    family = "dav2"
    OPTIONS = ("input_size",)
    SIZE_FIX = "lower input_size (518 is what the models were trained at)"

    def __init__(self, encoder: str = "vitl", features: Optional[int] = None, out_channels=None,
                 use_bn: bool = False, use_clstoken: bool = False, max_depth: float = 80.0,
                 fusion_layers: Sequence[int] = (2, 3), num_heads: int = 8, layerscale_init: float = 0.1,
                 alibi_scale: float = 1.0, metric: bool = True, attn_scale: Optional[str] = None):
        super().__init__()
        if encoder not in MODEL_CONFIGS:
            raise ValueError(f"encoder must be one of {sorted(MODEL_CONFIGS)}, got {encoder!r}")
        cfg = MODEL_CONFIGS[encoder]
        features = cfg["features"] if features is None else features
        out_channels = cfg["out_channels"] if out_channels is None else list(out_channels)
        fusion_layers = [int(i) for i in (fusion_layers or ())]
        bad = [i for i in fusion_layers if not 0 <= i < 4]
        if bad:
            raise ValueError(f"fusion_layers index the 4 DPT taps (0..3), got {bad}")
        self.encoder = encoder
        self.max_depth = float(max_depth)
        self.metric = metric
        self.fusion_layers = fusion_layers
        self.intermediate_layer_idx = list(TAPS[encoder])
        self.config = {"encoder": encoder, "features": features, "out_channels": out_channels,
                       "use_bn": use_bn, "use_clstoken": use_clstoken, "max_depth": self.max_depth,
                       "fusion_layers": fusion_layers, "num_heads": num_heads,
                       "layerscale_init": layerscale_init, "alibi_scale": alibi_scale, "metric": metric}
        # The DSFA release was trained with double-scaled backbone attention; plain DAv2 was not.
        attn_scale = attn_scale or ("release_sdpa" if fusion_layers else "standard")
        self.pretrained = build_dinov2(encoder, attn_scale=attn_scale)
        if fusion_layers:
            self.encoder_fusion = EncoderFusion(self.pretrained.embed_dim, fusion_layers, num_heads,
                                                layerscale_init, alibi_scale)
        else:
            self.encoder_fusion = None
        self.depth_head = DPTHead(self.pretrained.embed_dim, features, use_bn, out_channels, use_clstoken, metric)

    # ------------------------------------------------------------------ properties
    @property
    def has_dsfa(self) -> bool:
        return self.encoder_fusion is not None

    @property
    def variant(self) -> str:
        return self.encoder

    @property
    def attn_scale(self) -> str:
        return self.pretrained.attn_scale

    @attn_scale.setter
    def attn_scale(self, mode: str) -> None:
        self.pretrained.attn_scale = mode

    def describe(self) -> str:
        kind = "Depth Anything V2 + DSFA" if self.has_dsfa else "Depth Anything V2"
        head = f"metric, max {self.max_depth:g} m" if self.metric else "relative"
        return f"{kind} {self.encoder} ({head}, attention {self.attn_scale})"

    # ------------------------------------------------------------------ forward
    def encode(self, x: torch.Tensor):
        return self.pretrained.get_intermediate_layers(x, self.intermediate_layer_idx, return_class_token=True)

    def forward(self, x: torch.Tensor, focus_stack: Optional[torch.Tensor] = None,
                k_stack: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be [B,3,H,W], got {tuple(x.shape)}")
        b, _, h, w = x.shape
        ph, pw = h // 14, w // 14
        focus_stack, k_stack = network_stack(x, focus_stack, k_stack)
        if focus_stack is not None and self.has_dsfa:
            n = focus_stack.shape[1]
            frames = torch.cat([x.unsqueeze(1), focus_stack.to(x.dtype)], dim=1).flatten(0, 1)
            feats = []
            for i, (tokens, cls) in enumerate(self.encode(frames)):  # one encoder pass for all N+1 frames
                tokens = tokens.unflatten(0, (b, n + 1))
                cls = cls.unflatten(0, (b, n + 1))[:, 0]
                ref = tokens[:, 0]
                if i in self.fusion_layers:
                    ref = self.encoder_fusion.layers[str(i)].block(ref, tokens[:, 1:], k_stack)
                feats.append((ref, cls))
        else:
            feats = self.encode(x)
        out = self.depth_head(feats, ph, pw)
        if self.metric:
            out = out * self.max_depth
        return out.squeeze(1)

    # ------------------------------------------------------------------ DepthModel steps
    def plan(self, batch: int, height: int, width: int, input_size: int = 518) -> dict:
        size = lower_bound_size(height, width, 518 if input_size is None else int(input_size))
        meta = {"network_size": size, "relative": not self.metric}
        if not self.metric:
            meta["units"] = "relative (median 1), not metres"
        return {"size": size, "meta": meta}

    def predict(self, plan: dict, index: int, image: torch.Tensor, stack: Optional[torch.Tensor],
                k: Optional[torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
        size, (h, w) = plan["size"], image.shape[1:3]
        x = to_network(image, size, device, dtype)
        if stack is not None:
            d = self(x, to_network(stack, size, device, dtype), k.to(device))
        else:
            d = self(x)
        d = F.interpolate(d[:, None].float(), (h, w), mode="bilinear", align_corners=True)[:, 0]
        if self.metric:
            return {"depth": d}
        # Relative DAv2 predicts affine-invariant disparity; give a unitless depth-like map
        # (median 1) so downstream nodes see "far = larger", and keep the raw output.
        med = d.flatten(1).median(dim=1).values.clamp_min(1e-6).view(-1, 1, 1)
        return {"depth": med / d.clamp_min(med * 1e-3), "disparity": d}

    def progress_modules(self) -> list[nn.Module]:
        return [*self.pretrained.blocks, self.depth_head]

    def activation_bytes(self, plan: dict, frames: int, dtype: torch.dtype) -> int:
        return dav2_activation_bytes(self.config, plan["size"], frames, dtype, width=self.pretrained.embed_dim,
                                     taps=len(self.intermediate_layer_idx))

    def after_load(self, state_dict: dict) -> None:
        # The DSFA release was trained with double-scaled backbone attention; plain DAv2 was not.
        self.attn_scale = "release_sdpa" if any(k.startswith("encoder_fusion.") for k in state_dict) else "standard"


def build_dav2_dsfa(encoder: str = "vitl", max_depth: float = 80.0, fusion_layers: Sequence[int] = (2, 3),
                    num_heads: int = 8, layerscale_init: float = 0.1, alibi_scale: float = 1.0,
                    **kw) -> DepthAnythingV2DSFA:
    """Depth Anything V2 + DSFA in the release layout (random weights; load a file next).
    ``fusion_layers=()`` gives plain Depth Anything V2. Extra keywords: ``metric``, ``use_bn``,
    ``use_clstoken``, ``features``, ``out_channels``, ``attn_scale``."""
    return DepthAnythingV2DSFA(encoder=encoder, max_depth=max_depth, fusion_layers=fusion_layers,
                               num_heads=num_heads, layerscale_init=layerscale_init,
                               alibi_scale=alibi_scale, **kw)


# --------------------------------------------------------------------------- weight files

def config_from_state_dict(sd: dict) -> Optional[dict]:
    """Model keywords implied by a Depth Anything V2 state dict (with or without DSFA), else None."""
    w = sd.get("pretrained.patch_embed.proj.weight")
    if w is None or not any(k.startswith("depth_head.") for k in sd):
        return None
    encoder = _ENCODER_BY_DIM.get(int(w.shape[0]))
    if encoder is None:
        return None
    out_channels = [int(sd[f"depth_head.projects.{i}.weight"].shape[0]) for i in range(4)
                    if f"depth_head.projects.{i}.weight" in sd]
    feat = sd.get("depth_head.scratch.layer1_rn.weight")
    return {
        "encoder": encoder,
        "fusion_layers": sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder_fusion.layers.")}),
        "features": int(feat.shape[0]) if feat is not None else None,
        "out_channels": out_channels if len(out_channels) == 4 else None,
        "use_clstoken": any(k.startswith("depth_head.readout_projects.") for k in sd),
        "use_bn": any(".bn1." in k for k in sd if k.startswith("depth_head.")),
    }


def _plain_head_from_name(path: str) -> tuple[bool, Optional[float]]:
    """Plain DAv2 files do not say whether the head is metric: the distributed names do."""
    name = os.path.basename(path).lower()
    if "metric" in name or "hypersim" in name or "vkitti" in name:
        return True, (20.0 if "hypersim" in name else 80.0 if "vkitti" in name else None)
    return False, None


def build_for_checkpoint(sd: dict, path: str = "", plain_head: str = "auto",
                         plain_max_depth: Optional[float] = None, **kw) -> DepthAnythingV2DSFA:
    """The model for a state dict (see :func:`config_from_state_dict`); random weights."""
    cfg = config_from_state_dict(sd)
    if not cfg["fusion_layers"]:
        if plain_head not in ("auto", "metric", "relative"):
            raise ValueError(f"plain_head must be auto, metric or relative, got {plain_head!r}")
        name_metric, name_depth = _plain_head_from_name(path)
        kw.setdefault("metric", name_metric if plain_head == "auto" else plain_head == "metric")
        kw.setdefault("max_depth", plain_max_depth or name_depth or 20.0)
    return DepthAnythingV2DSFA(**cfg, **kw)
