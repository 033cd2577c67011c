"""UniDepthV2 + DSFA: metric depth, camera and 3-D points from an image and its bokeh stack.

The layout of the authors' ``UDv2_dsfa_release.pth`` (DINOv2 ViT-L/14 under
``pixel_encoder.backbone``, one DSFA block per encoder stage under ``pixel_encoder.fusion_blocks``,
the UniDepthV2 decoder under ``pixel_decoder``) and the pre/post-processing of UniDepthV2's
``infer``. The reference frame and all stack frames go through the ViT as one batch; each stage's
last block output of the reference is refined by that stage's DSFA block and stands for the
whole stage; the decoder sees the reference only.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..camera import camera_rays, check_camera
from .dinov2 import DinoV2
from .dsfa import DSFABlock
from .inputs import network_stack, normalize_imagenet
from .memory import unidepth_activation_bytes
from .model import DepthModel
from .unidepth_config import RELEASE_CONFIG, config_from_state_dict, resolve_config
from .unidepth_decoder import UniDepthDecoder
from .unidepth_geometry import (camera_to_network, get_paddings, get_resize_factor, intrinsics_from_network,
                                pixel_bounds, unpad_resize)

log = logging.getLogger("BokehDepth")

__all__ = ["UniDepthV2DSFA", "build_unidepthv2_dsfa", "build_for_checkpoint", "RELEASE_CONFIG"]


class UniDepthEncoder(nn.Module):
    """DINOv2 backbone + DSFA fusion blocks (``pixel_encoder`` in the release)."""

    def __init__(self, cfg: dict):
        super().__init__()
        self.backbone = DinoV2(embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["vit_heads"],
                               patch_size=cfg["patch_size"], img_size=cfg["img_size"], register_param=True,
                               interpolate_offset=0.0, attn_scale="standard", norm_eps=1e-6, final_norm_eps=1e-5)
        self.output_idx = [int(i) for i in cfg["output_idx"]]
        self.use_norm = bool(cfg["use_norm"])
        self.fusion_layers = sorted({int(i) for i in cfg["fusion_layers"]})
        self.fusion_blocks = nn.ModuleDict({
            str(i): DSFABlock(cfg["embed_dim"], num_heads=cfg["fusion_num_heads"],
                              layerscale_init=cfg["fusion_layerscale"], alibi_scale=cfg["alibi_scale"],
                              film_sequential=False)
            for i in self.fusion_layers
        })

    def forward(self, x: torch.Tensor, focus_stack: Optional[torch.Tensor] = None,
                k_stack: Optional[torch.Tensor] = None):
        """x ``[B,3,H,W]`` (+ stack ``[B,N,3,H,W]``, K ``[B,N]``) -> per stage: patch features
        ``[B,h,w,D]`` and class tokens ``[B,1,D]`` of the reference frame."""
        b, _, H, W = x.shape
        h, w = H // self.backbone.patch_size, W // self.backbone.patch_size
        n = 0 if focus_stack is None else focus_stack.shape[1]
        use_stack = n > 0 and len(self.fusion_blocks) > 0
        frames = torch.cat([x.unsqueeze(1), focus_stack.to(x.dtype)], 1).flatten(0, 1) if use_stack else x
        outs = self.backbone.get_intermediate_layers(frames, [i - 1 for i in self.output_idx],
                                                     return_class_token=True, norm=self.use_norm)
        feats, cls = [], []
        for stage, (tokens, cls_tok) in enumerate(outs):
            if use_stack:
                tokens = tokens.unflatten(0, (b, n + 1))
                cls_tok = cls_tok.unflatten(0, (b, n + 1))[:, 0]
                ref = tokens[:, 0]
                if str(stage) in self.fusion_blocks:
                    ref = self.fusion_blocks[str(stage)](ref, tokens[:, 1:], k_stack)
                tokens = ref
            feats.append(tokens.reshape(b, h, w, -1))
            cls.append(cls_tok.unsqueeze(1))
        return feats, cls


class UniDepthV2DSFA(DepthModel):
    """UniDepthV2 with DSFA. ``forward(x, focus_stack, k_stack, rays)`` works on network tensors;
    :meth:`estimate` takes core-convention images and does UniDepthV2's pre/post-processing."""

    family = "unidepthv2"
    OPTIONS = ("camera", "resolution_level")
    SILENT_OPTIONS = ("input_size",)  # Depth Anything's knob; UniDepthV2 sizes by resolution_level
    SIZE_FIX = "lower resolution_level (0..9; the release's pixel budget stays within it)"

    def __init__(self, config: Optional[dict] = None):
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        self.pixel_encoder = UniDepthEncoder(cfg)
        self.pixel_decoder = UniDepthDecoder(
            [cfg["embed_dim"]] * len(cfg["output_idx"]), hidden_dim=cfg["hidden_dim"], num_heads=cfg["num_heads"],
            expansion=cfg["expansion"], depths=cfg["decoder_depths"], out_dim=cfg["out_dim"],
            kernel_size=cfg["kernel_size"], layer_scale=cfg["layer_scale"])

    @property
    def has_dsfa(self) -> bool:
        return len(self.pixel_encoder.fusion_blocks) > 0

    @property
    def patch_size(self) -> int:
        return int(self.config["patch_size"])

    @property
    def variant(self) -> str:
        dim, depth = self.config["embed_dim"], self.config["depth"]
        return "vitl14" if (dim, depth) == (1024, 24) else f"vit{dim}x{depth}"  # as detect_unidepth names files

    def describe(self) -> str:
        return f"UniDepthV2 + DSFA {self.variant} (metric depth, camera, points)"

    def forward(self, x: torch.Tensor, focus_stack: Optional[torch.Tensor] = None,
                k_stack: Optional[torch.Tensor] = None, rays: Optional[torch.Tensor] = None) -> dict:
        """x ``[B,3,H,W]`` ImageNet-normalised, H and W multiples of 14; focus_stack ``[B,N,3,H,W]``;
        k_stack ``[B,N]`` raw K; rays ``[B,3,H,W]`` unit rays of a known camera or None.
        Returns network-resolution ``depth``/``radius``/``confidence`` ``[B,1,H,W]``,
        ``points``/``rays`` ``[B,3,H,W]`` and predicted ``intrinsics`` ``[B,3,3]``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be [B,3,H,W], got {tuple(x.shape)}")
        b, _, H, W = x.shape
        p = self.pixel_encoder.backbone.patch_size
        if H % p or W % p:
            raise ValueError(f"x height and width must be multiples of {p}, got {H}x{W}")
        focus_stack, k_stack = network_stack(x, focus_stack, k_stack)
        if k_stack is not None:
            k_stack = k_stack.to(x.dtype)
        if rays is not None and tuple(rays.shape) != (b, 3, H, W):
            raise ValueError(f"rays must be [B,3,H,W] = [{b},3,{H},{W}], got {tuple(rays.shape)}")
        feats, cls = self.pixel_encoder(x, focus_stack, k_stack)
        return self.pixel_decoder(feats, cls, (H, W), rays)

    # ------------------------------------------------------------------ core-convention inference
    def network_geometry(self, height: int, width: int, resolution_level: Optional[int] = None):
        """(paddings l/r/t/b, padded (H, W), nominal resize factor, network (h, w)) for an image."""
        cfg = self.config
        pads, padded = get_paddings((height, width), cfg["ratio_bounds"])
        bounds = pixel_bounds(resolution_level, cfg["pixels_min"], cfg["pixels_max"])
        factor, size = get_resize_factor(padded, bounds, cfg["shape_mult"])
        return pads, padded, factor, size

    @staticmethod
    def _to_network(images: torch.Tensor, pads, size, device, dtype) -> torch.Tensor:
        """``[N,H,W,3]`` 0..1 -> normalise, zero-pad, bilinear resize (UniDepthV2's order) ``[N,3,h,w]``."""
        x = images.permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
        x = F.pad(normalize_imagenet(x), pads, value=0.0)
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return x.to(dtype)

    # ------------------------------------------------------------------ DepthModel steps
    def plan(self, batch: int, height: int, width: int, camera=None, resolution_level: Optional[int] = None) -> dict:
        """``camera``: None (predicted), a pinhole ``[3,3]``/``[B,3,3]`` in image pixels (its rays
        replace the predicted ones for depth and points), or ``"authors_guess"`` (fx = fy = 0.7 W).
        ``resolution_level`` 0..9 picks the network pixel budget (None: UniDepthV2's full range)."""
        cam = check_camera(camera, batch, width, height)
        pads, padded, factor, size = self.network_geometry(height, width, resolution_level)
        meta = {"relative": False, "network_size": tuple(size), "paddings": tuple(pads),
                "camera": camera if isinstance(camera, str) else ("predicted" if camera is None else "given")}
        return {"camera": cam, "pads": pads, "padded": padded, "factor": factor, "size": size, "meta": meta}

    def predict(self, plan: dict, index: int, image: torch.Tensor, stack: Optional[torch.Tensor],
                k: Optional[torch.Tensor], device: torch.device, dtype: torch.dtype) -> dict:
        """Depth ``[1,H,W]`` m, ``intrinsics`` ``[1,3,3]`` (the model's own prediction, in image
        pixels), ``points`` ``[1,H,W,3]`` m, ``confidence`` ``[1,H,W]`` and unit ``rays`` ``[1,H,W,3]``."""
        pads, padded, factor, size = plan["pads"], plan["padded"], plan["factor"], plan["size"]
        x = self._to_network(image, pads, size, device, dtype)
        s = kk = rays = None
        if stack is not None:
            s = self._to_network(stack[0], pads, size, device, dtype).unsqueeze(0)
            kk = k.to(device)
        if plan["camera"] is not None:
            cam = plan["camera"][index:index + 1]
            rays = camera_rays(camera_to_network(cam, pads, factor).to(device), *size)
        o = self(x, s, kk, rays)
        points = unpad_resize(o["points"].float(), padded, pads)
        rays_out = unpad_resize(o["rays"].float(), padded, pads)
        return {
            "depth": points[:, 2],
            "points": points.permute(0, 2, 3, 1),
            "confidence": unpad_resize(o["confidence"].float(), padded, pads)[:, 0],
            "intrinsics": intrinsics_from_network(o["intrinsics"].float(), pads, factor),
            "rays": (rays_out / rays_out.norm(dim=1, keepdim=True).clamp(min=1e-5)).permute(0, 2, 3, 1),
        }

    def progress_modules(self) -> list[nn.Module]:
        return [*self.pixel_encoder.backbone.blocks, self.pixel_decoder]

    def activation_bytes(self, plan: dict, frames: int, dtype: torch.dtype) -> int:
        return unidepth_activation_bytes(self.config, plan["size"], frames, dtype)

    # ------------------------------------------------------------------ checkpoint hooks
    def adapt_checkpoint(self, state_dict: dict, raw=None) -> dict:
        """Overlay the file's EMA weights when it carries them, as UniDepth's loader does:
        ``raw["ema"]["shadow_params"]`` is a list in state-dict order (or a name -> tensor dict)."""
        ema = None
        if isinstance(raw, dict):
            ema = raw.get("ema") or raw.get("ema_state_dict")
        if not isinstance(ema, dict):
            return state_dict
        params = ema.get("shadow_params") or ema.get("average_params")
        if isinstance(params, dict):
            over = {k[7:] if k.startswith("module.") else k: v for k, v in params.items()
                    if isinstance(v, torch.Tensor)}
        elif isinstance(params, (list, tuple)):
            # The authors' order is the model's state-dict order, which ours reproduces (tested).
            names = list(self.state_dict().keys())
            if len(params) != len(names):
                log.warning("EMA weights in the file have %d entries for %d model tensors: not used",
                            len(params), len(names))
                return state_dict
            over = {k: v for k, v in zip(names, params) if isinstance(v, torch.Tensor)}
        else:
            log.warning("EMA entry of the checkpoint not understood: not used")
            return state_dict
        bad = [k for k, v in over.items() if k in state_dict and tuple(v.shape) != tuple(state_dict[k].shape)]
        if bad:
            log.warning("EMA weights do not match the model (first: %s): not used", bad[0])
            return state_dict
        merged = dict(state_dict)
        merged.update({k: v for k, v in over.items() if k in merged})
        return merged


def build_for_checkpoint(sd: dict, config: Optional[dict] = None) -> UniDepthV2DSFA:
    """Model for a state dict (random weights): its shapes decide the sizes; ``config`` overrides
    what a file cannot say (head counts, output taps, pixel budget)."""
    cfg = config_from_state_dict(sd)
    cfg.update(config or {})
    return UniDepthV2DSFA(cfg)


def build_unidepthv2_dsfa(config: Optional[dict] = None) -> UniDepthV2DSFA:
    """UniDepthV2 + DSFA with the release config (random weights; load a file next). ``config``
    overrides keys of :data:`RELEASE_CONFIG` (e.g. a small ViT for tests), or is the authors'
    nested JSON config."""
    return UniDepthV2DSFA(config)

