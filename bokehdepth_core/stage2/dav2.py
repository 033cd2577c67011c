"""Depth Anything V2 with DSFA stack fusion (BokehDepth Stage-2, paper Sec. 4).

The reference image and every stack frame go through the same DINOv2 encoder as one batch; DSFA
refines the reference frame's patch tokens at the taps in ``fusion_layers``; the unchanged DPT
head decodes metric depth (sigmoid x max_depth). Without a stack (or without DSFA weights) this
is plain Depth Anything V2.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dinov2 import build_dinov2
from .dpt import DPTHead
from .dsfa import DSFABlock
from .inputs import lower_bound_size, model_inputs, network_stack, place_model, to_network

log = logging.getLogger("BokehDepth")

__all__ = ["DepthAnythingV2DSFA", "build_dav2_dsfa", "MODEL_CONFIGS", "TAPS"]

# encoder -> DPT head widths
MODEL_CONFIGS = {
    "vits": {"features": 64, "out_channels": [48, 96, 192, 384]},
    "vitb": {"features": 128, "out_channels": [96, 192, 384, 768]},
    "vitl": {"features": 256, "out_channels": [256, 512, 1024, 1024]},
    "vitg": {"features": 384, "out_channels": [1536, 1536, 1536, 1536]},
}
# ViT blocks whose (final-normed) outputs feed the DPT head
TAPS = {"vits": [2, 5, 8, 11], "vitb": [2, 5, 8, 11], "vitl": [4, 11, 17, 23], "vitg": [9, 19, 29, 39]}


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


class DepthAnythingV2DSFA(nn.Module):
    """``model(x, focus_stack, k_stack)`` -> metric depth ``[B,H,W]``.

    x ``[B,3,H,W]`` ImageNet-normalised (H, W multiples of 14), focus_stack ``[B,N,3,H,W]``,
    k_stack ``[B,N]`` or ``[B,N,1]`` raw K. ``metric=False`` is the relative (disparity)
    Depth Anything V2 head, for plain relative checkpoints.
    """

    family = "dav2"

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

    # ------------------------------------------------------------------ core-convention inference
    @torch.no_grad()
    def estimate(self, image: torch.Tensor, stack=None, k_values=None, input_size: int = 518,
                 device=None, dtype=None, callback: Optional[Callable[[int, int], None]] = None, **kw) -> dict:
        """image ``[B,H,W,3]`` 0..1 (+ stack ``[B,N,H,W,3]``/BokehStack and K) -> dict with
        ``depth`` ``[B,H,W]`` float32 (metres for metric heads) on the image's device."""
        for name in ("camera", "resolution_level"):
            if kw.get(name) is not None:
                log.warning("%s is not used by Depth Anything V2: ignored", name)
        image, stack, k = model_inputs(self, image, stack, k_values)
        device, dtype = place_model(self, device, dtype)
        b, h, w, _ = image.shape
        size = lower_bound_size(h, w, input_size)
        out = []
        for i in range(b):
            x = to_network(image[i:i + 1], size, device, dtype)
            if stack is not None:
                s = to_network(stack[i:i + 1], size, device, dtype)
                d = self(x, s, k[i:i + 1].to(device))
            else:
                d = self(x)
            d = F.interpolate(d[:, None].float(), (h, w), mode="bilinear", align_corners=True)[:, 0]
            out.append(d.to(image.device))
            if callback is not None:
                callback(i + 1, b)
        raw = torch.cat(out, 0)
        result = {"depth": raw, "confidence": None, "intrinsics": None, "points": None,
                  "relative": not self.metric, "network_size": size,
                  "used_stack": stack is not None, "model": self.describe()}
        if not self.metric:
            # Relative DAv2 predicts affine-invariant disparity; give a unitless depth-like map
            # (median 1) so downstream nodes see "far = larger", and keep the raw output.
            med = raw.flatten(1).median(dim=1).values.clamp_min(1e-6).view(-1, 1, 1)
            result["disparity"] = raw
            result["depth"] = med / raw.clamp_min(med * 1e-3)
        return result


def build_dav2_dsfa(encoder: str = "vitl", max_depth: float = 80.0, fusion_layers: Sequence[int] = (2, 3),
                    num_heads: int = 8, layerscale_init: float = 0.1, alibi_scale: float = 1.0,
                    **kw) -> DepthAnythingV2DSFA:
    """Depth Anything V2 + DSFA in the release layout (random weights; load a file next).
    ``fusion_layers=()`` gives plain Depth Anything V2. Extra keywords: ``metric``, ``use_bn``,
    ``use_clstoken``, ``features``, ``out_channels``, ``attn_scale``."""
    return DepthAnythingV2DSFA(encoder=encoder, max_depth=max_depth, fusion_layers=fusion_layers,
                               num_heads=num_heads, layerscale_init=layerscale_init,
                               alibi_scale=alibi_scale, **kw)
