"""Reading Stage-2 weight files: the authors' releases as-is, and plain Depth Anything V2 files.

* ``read_checkpoint(path)`` -> flat state dict (pickles with ``weights_only=True``, never code;
  ``{"model": ...}`` / ``{"state_dict": ...}`` / bare; DDP ``module.`` prefix stripped;
  ``.safetensors``).
* ``detect_model(state_dict)`` -> ``(family, variant)``: ``("dav2", "vits")`` for DAv2+DSFA,
  ``("dav2_plain", ...)`` for plain Depth Anything V2, other families through ``register_family``.
* ``load_dsfa_checkpoint(model, path)``: strict load with one readable error.
* ``build_from_checkpoint(path)``: the right model for a file, weights loaded.

Other model families (UniDepthV2) plug in with ``register_family(family, detect, build)``:
``detect(state_dict) -> variant or None`` and ``build(state_dict, variant, **kw) -> nn.Module``
(on any device; weights are loaded afterwards). A model may define
``adapt_checkpoint(state_dict, raw) -> state_dict`` (e.g. an EMA overlay from the raw file
object) and ``after_load(state_dict)``; both are called by ``load_dsfa_checkpoint``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

log = logging.getLogger("BokehDepth")

__all__ = ["read_checkpoint", "read_raw", "extract_state_dict", "detect_model", "load_dsfa_checkpoint",
           "build_from_checkpoint", "register_family", "CheckpointError", "WHERE_TO_GET"]

WHERE_TO_GET = ("the BokehDepth release (github.com/fogradio/BokehDepth: DAV2_dsfa_release.pth, "
                "UDv2_dsfa_release.pth) or Depth Anything V2 (huggingface.co/depth-anything)")

_ENCODER_BY_DIM = {384: "vits", 768: "vitb", 1024: "vitl", 1536: "vitg"}

# family -> (detect, build); filled by register_family (see module doc)
_FAMILIES: dict[str, tuple[Callable, Callable]] = {}


class CheckpointError(ValueError):
    """A weight file that does not fit the requested model (message says why and what to do)."""


def register_family(family: str, detect: Callable[[dict], Optional[str]], build: Callable[..., nn.Module]) -> None:
    _FAMILIES[family] = (detect, build)


# --------------------------------------------------------------------------- reading

def read_raw(path: str) -> Any:
    """The file's top-level object: a dict of tensors (safetensors) or the unpickled object."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' not found. Get the weights from {WHERE_TO_GET}.")
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        # Not mmap'd: the model adopts these tensors, and a file rewritten under a live mapping
        # would crash the process.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for files that need code execution
        raise CheckpointError(
            f"cannot read '{path}' as a weights-only torch file ({type(exc).__name__}: {exc}). "
            "Files that need arbitrary code to load are refused; re-save it as a plain state dict "
            "or .safetensors.") from exc


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    sd = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            sd[k[len("module."):] if k.startswith("module.") else k] = v
    if not sd:
        raise CheckpointError("checkpoint holds no tensors")
    return sd


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """Flat state dict of a weight file (see module doc for the accepted forms)."""
    return extract_state_dict(read_raw(path))


# --------------------------------------------------------------------------- detection

def _dav2_info(sd: dict) -> Optional[dict]:
    w = sd.get("pretrained.patch_embed.proj.weight")
    if w is None or not any(k.startswith("depth_head.") for k in sd):
        return None
    encoder = _ENCODER_BY_DIM.get(int(w.shape[0]))
    if encoder is None:
        return None
    fusion = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder_fusion.layers.")})
    out_channels = [int(sd[f"depth_head.projects.{i}.weight"].shape[0]) for i in range(4)
                    if f"depth_head.projects.{i}.weight" in sd]
    feat = sd.get("depth_head.scratch.layer1_rn.weight")
    return {
        "encoder": encoder,
        "fusion_layers": fusion,
        "features": int(feat.shape[0]) if feat is not None else None,
        "out_channels": out_channels if len(out_channels) == 4 else None,
        "use_clstoken": any(k.startswith("depth_head.readout_projects.") for k in sd),
        "use_bn": any(".bn1." in k for k in sd if k.startswith("depth_head.")),
    }


def detect_model(state_dict: dict) -> tuple[str, str]:
    """``(family, variant)`` of a state dict; CheckpointError when nothing matches."""
    for family, (detect, _build) in _FAMILIES.items():
        variant = detect(state_dict)
        if variant:
            return family, variant
    info = _dav2_info(state_dict)
    if info is not None:
        return ("dav2" if info["fusion_layers"] else "dav2_plain"), info["encoder"]
    if any(k.startswith("pixel_encoder.") for k in state_dict):
        raise CheckpointError("this looks like a UniDepth file (pixel_encoder.*) but not the BokehDepth "
                              "UniDepthV2 + DSFA layout (pixel_encoder.backbone.*, pixel_decoder.*): original "
                              "UniDepth checkpoints are not supported; use UDv2_dsfa_release.pth")
    sample = ", ".join(list(state_dict)[:4])
    raise CheckpointError(
        f"unknown weight file layout (first keys: {sample}). Expected a BokehDepth release "
        f"(DAV2_dsfa_release.pth, UDv2_dsfa_release.pth) or an original Depth Anything V2 file "
        f"(keys pretrained.* and depth_head.*; Hugging Face transformers-format folders are not supported).")


def _plain_head_from_name(path: str) -> tuple[bool, Optional[float]]:
    """Plain DAv2 files do not say whether the head is metric: the distributed names do."""
    name = os.path.basename(path).lower()
    if "metric" in name or "hypersim" in name or "vkitti" in name:
        return True, (20.0 if "hypersim" in name else 80.0 if "vkitti" in name else None)
    return False, None


# --------------------------------------------------------------------------- loading

def _likely_cause(model: nn.Module, sd: dict, missing: list, unexpected: list) -> str:
    try:
        family, variant = detect_model(sd)
    except CheckpointError as exc:
        return str(exc).rstrip(".")
    m_family = getattr(model, "family", None)
    m_variant = getattr(model, "variant", None)
    has_dsfa = getattr(model, "has_dsfa", None)
    if family == "dav2_plain" and has_dsfa:
        return ("this is a plain Depth Anything V2 file (no DSFA weights) loaded into a DSFA model: "
                "use build_from_checkpoint(path), or build_dav2_dsfa(..., fusion_layers=())")
    if family == "dav2" and has_dsfa is False:
        return "this file has DSFA weights but the model was built without DSFA (fusion_layers=())"
    if m_family and family.split("_")[0] != str(m_family).split("_")[0]:
        return f"this is a {family} file but the model is {m_family}: use build_from_checkpoint(path)"
    if m_variant and variant != m_variant:
        return f"wrong encoder size: the file is {variant}, the model is {m_variant}"
    if family == "dav2" and has_dsfa:
        info = _dav2_info(sd)
        if info and info["fusion_layers"] != list(getattr(model, "fusion_layers", [])):
            return (f"fusion_layers differ: file {info['fusion_layers']}, model "
                    f"{list(getattr(model, 'fusion_layers', []))}")
    return "the file and the model configuration differ"


def _check_keys(model: nn.Module, sd: dict, path: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = [f"'{os.path.basename(str(path))}' does not fit this {type(model).__name__}: "
             f"{_likely_cause(model, sd, missing, unexpected)}."]
    if missing:
        parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:4])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:3])})")
    raise CheckpointError(" ".join(parts))


def _set_backbone_scale(model: nn.Module, sd: dict) -> None:
    # DAv2 backbones: the DSFA release was trained with double-scaled attention, plain DAv2 not.
    if getattr(model, "family", None) == "dav2":
        has = any(k.startswith("encoder_fusion.") for k in sd)
        model.attn_scale = "release_sdpa" if has else "standard"


def load_dsfa_checkpoint(model: nn.Module, path, state_dict: Optional[dict] = None,
                         raw: Any = None, assign: bool = False) -> nn.Module:
    """Load a release file (or plain DAv2 file) into ``model`` strictly; returns the model.
    ``path`` may also be a state dict. ``assign=True`` adopts the file's tensors (meta models)."""
    if isinstance(path, dict):
        state_dict, path = extract_state_dict(path), "<state dict>"
    if state_dict is None:
        raw = read_raw(str(path)) if raw is None else raw
        state_dict = extract_state_dict(raw)
    if hasattr(model, "adapt_checkpoint"):
        state_dict = model.adapt_checkpoint(state_dict, raw)
    _check_keys(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True, assign=assign)
    _set_backbone_scale(model, state_dict)
    if hasattr(model, "after_load"):
        model.after_load(state_dict)
    return model


def _build_dav2(sd: dict, variant: str, path: str = "", plain_head: str = "auto",
                plain_max_depth: Optional[float] = None, **kw) -> nn.Module:
    from .dav2 import DepthAnythingV2DSFA

    info = _dav2_info(sd)
    if not info["fusion_layers"]:
        name_metric, name_depth = _plain_head_from_name(path)
        if plain_head not in ("auto", "metric", "relative"):
            raise ValueError(f"plain_head must be auto, metric or relative, got {plain_head!r}")
        kw.setdefault("metric", name_metric if plain_head == "auto" else plain_head == "metric")
        kw.setdefault("max_depth", plain_max_depth or name_depth or 20.0)
    return DepthAnythingV2DSFA(encoder=variant, features=info["features"], out_channels=info["out_channels"],
                               use_bn=info["use_bn"], use_clstoken=info["use_clstoken"],
                               fusion_layers=info["fusion_layers"], **kw)


def build_from_checkpoint(path: str, device=None, dtype: Optional[torch.dtype] = None,
                          plain_head: str = "auto", plain_max_depth: Optional[float] = None, **kw) -> nn.Module:
    """Build the model a file is for and load it (strict); eval mode on ``device``/``dtype``.

    DSFA release files give the release configuration (metric, max depth 80 m). Plain Depth
    Anything V2 files give the model without DSFA; their head is not recorded in the file, so
    ``plain_head="auto"`` follows the distributed names ("metric_hypersim" 20 m, "metric_vkitti"
    80 m, else relative); ``plain_max_depth`` overrides the metric range. Extra keywords go to
    the model class."""
    raw = read_raw(str(path))
    sd = extract_state_dict(raw)
    family, variant = detect_model(sd)
    # Built on the meta device and filled with the file's tensors: no throw-away random init.
    with torch.device("meta"):
        if family in ("dav2", "dav2_plain"):
            model = _build_dav2(sd, variant, path=str(path), plain_head=plain_head,
                                plain_max_depth=plain_max_depth, **kw)
        else:
            model = _FAMILIES[family][1](sd, variant, **kw)
    load_dsfa_checkpoint(model, path, state_dict=sd, raw=raw, assign=True)
    model = model.to(device=device or "cpu", dtype=dtype or torch.float32)
    model.checkpoint_path = str(path)
    return model.eval()
