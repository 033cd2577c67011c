"""UniDepthV2 + DSFA configuration: the release values, the authors' nested JSON config, and the
configuration a weight file implies."""

from __future__ import annotations

import copy
from typing import Optional

__all__ = ["RELEASE_CONFIG", "resolve_config", "config_from_state_dict", "detect_unidepth"]

# The authors' config_v2_vitl14_DSFA_inference.json, flattened.
RELEASE_CONFIG = {
    "embed_dim": 1024, "depth": 24, "vit_heads": 16, "patch_size": 14, "img_size": 518,
    "output_idx": [6, 12, 18, 24], "use_norm": True,
    "fusion_layers": [0, 1, 2, 3], "fusion_num_heads": 8, "fusion_layerscale": 0.1, "alibi_scale": 1.0,
    "hidden_dim": 512, "num_heads": 8, "expansion": 4, "layer_scale": 1.0,
    "decoder_depths": [2, 2, 2], "out_dim": 64, "kernel_size": 3,
    "ratio_bounds": [0.5, 2.5], "pixels_min": 200000, "pixels_max": 600000, "shape_mult": 14,
}


def _flatten_authors_config(cfg: dict) -> dict:
    """Accept the authors' nested JSON config (``{"model": ..., "data": ...}``) too."""
    out = {}
    model = cfg.get("model", {})
    enc = model.get("pixel_encoder", {})
    dec = model.get("pixel_decoder", {})
    shape = cfg.get("data", {}).get("augmentations", {}).get("shape_constraints", {})
    name = enc.get("name", "dinov2_vitl14_DSFA")
    if name != "dinov2_vitl14_DSFA":
        raise ValueError(f"only the dinov2_vitl14_DSFA encoder is supported, the config names {name!r}")
    for src, dst in (("output_idx", "output_idx"), ("use_norm", "use_norm"), ("fusion_layers", "fusion_layers"),
                     ("fusion_num_heads", "fusion_num_heads"), ("fusion_layerscale", "fusion_layerscale"),
                     ("alibi_scale", "alibi_scale")):
        if src in enc:
            out[dst] = enc[src]
    for src, dst in (("hidden_dim", "hidden_dim"), ("depths", "decoder_depths"), ("out_dim", "out_dim"),
                     ("kernel_size", "kernel_size")):
        if src in dec:
            out[dst] = dec[src]
    for key in ("num_heads", "expansion", "layer_scale"):
        if key in model:
            out[key] = model[key]
    for key in ("ratio_bounds", "pixels_min", "pixels_max", "shape_mult"):
        if key in shape:
            out[key] = shape[key]
    return out


def resolve_config(config: Optional[dict]) -> dict:
    cfg = copy.deepcopy(RELEASE_CONFIG)
    if config:
        if "model" in config:
            config = _flatten_authors_config(config)
        unknown = sorted(set(config) - set(cfg))
        if unknown:
            raise ValueError(f"unknown UniDepthV2 config keys {unknown}; known: {sorted(cfg)}")
        cfg.update(copy.deepcopy(config))
    idx = list(cfg["output_idx"])
    if not idx or idx != sorted(idx) or idx[0] < 1 or idx[-1] > cfg["depth"]:
        raise ValueError(f"output_idx must be increasing block counts within 1..{cfg['depth']}, got {idx}")
    bad = [i for i in cfg["fusion_layers"] if not 0 <= int(i) < len(idx)]
    if bad:
        raise ValueError(f"fusion_layers {bad} out of range for {len(idx)} encoder stages")
    return cfg


def config_from_state_dict(sd: dict) -> dict:
    """Model config implied by a UniDepthV2 + DSFA state dict (release values where the file
    cannot say: output taps are spread evenly over the ViT blocks)."""
    w = sd["pixel_encoder.backbone.patch_embed.proj.weight"]
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("pixel_encoder.backbone.blocks."))
    grid = int(round((sd["pixel_encoder.backbone.pos_embed"].shape[1] - 1) ** 0.5))
    fusion = sorted({int(k.split(".")[2]) for k in sd if k.startswith("pixel_encoder.fusion_blocks.")})
    cfg = {"embed_dim": dim, "depth": depth, "vit_heads": max(1, dim // 64), "patch_size": patch,
           "img_size": grid * patch, "fusion_layers": fusion,
           "output_idx": [depth * (i + 1) // 4 for i in range(4)]}
    if depth == 24:
        cfg["output_idx"] = list(RELEASE_CONFIG["output_idx"])
    adapter = sd.get("pixel_decoder.input_adapter.input_adapters.0.weight")
    if adapter is not None:
        cfg["hidden_dim"] = hidden = int(adapter.shape[0])
        lr = sd.get("pixel_decoder.depth_layer.to_depth_lr.weight")
        if lr is not None:
            # out_dim only matters when it exceeds the last level's width (hidden / 4)
            lr_in = int(lr.shape[1])
            cfg["out_dim"] = lr_in if lr_in != hidden // 4 else min(RELEASE_CONFIG["out_dim"], lr_in)
        n_up = len({k.split(".")[3] for k in sd if k.startswith("pixel_decoder.depth_layer.ups.")})
        if n_up:
            cfg["decoder_depths"] = [
                len({k.split(".")[5] for k in sd if k.startswith(f"pixel_decoder.depth_layer.ups.{i}.convs.")})
                for i in range(n_up)]
    return cfg


def detect_unidepth(sd: dict) -> Optional[str]:
    """Variant name for a UniDepthV2 + DSFA state dict, else None."""
    w = sd.get("pixel_encoder.backbone.patch_embed.proj.weight")
    if w is None or not any(k.startswith("pixel_decoder.") for k in sd):
        return None
    depth = 1 + max((int(k.split(".")[3]) for k in sd if k.startswith("pixel_encoder.backbone.blocks.")), default=-1)
    return "vitl14" if (int(w.shape[0]), depth) == (1024, 24) else f"vit{int(w.shape[0])}x{depth}"
