"""Stage-2 weight files: the authors' releases as-is, and plain Depth Anything V2 files.

* ``read_checkpoint(path)`` -> flat state dict (pickles with ``weights_only=True``, never code;
  ``{"model": ...}`` / ``{"state_dict": ...}`` / bare; DDP ``module.`` prefix stripped;
  ``.safetensors``); damaged files raise CheckpointError naming the file.
* ``detect_model(state_dict)`` -> ``(family, variant)``: ``("dav2", "vits")`` for DAv2+DSFA,
  ``("dav2_plain", ...)`` for plain Depth Anything V2, ``("unidepthv2", "vitl14")`` for UniDepthV2+DSFA.
* ``load_dsfa_checkpoint(model, path)``: strict load with one readable error; the model's
  ``adapt_checkpoint`` (e.g. UniDepth's EMA overlay) and ``after_load`` hooks run around it; weights
  holding NaN or inf are refused.
* ``build_from_checkpoint(path)``: the right model for a file, weights loaded.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch
import torch.nn as nn

from ..weight_files import check_finite, read_weights
from . import dav2, unidepth
from .model import DepthModel
from .unidepth_config import detect_unidepth

__all__ = ["read_checkpoint", "read_raw", "extract_state_dict", "detect_model", "load_dsfa_checkpoint",
           "build_from_checkpoint", "CheckpointError", "WHERE_TO_GET"]

WHERE_TO_GET = ("the BokehDepth release (github.com/fogradio/BokehDepth: DAV2_dsfa_release.pth, "
                "UDv2_dsfa_release.pth) or Depth Anything V2 (huggingface.co/depth-anything)")


class CheckpointError(ValueError):
    """A weight file that does not fit the requested model (message says why and what to do)."""


# --------------------------------------------------------------------------- reading

def read_raw(path: str) -> Any:
    """The file's top-level object: a dict of tensors (safetensors) or the unpickled object."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' not found. Get the weights from {WHERE_TO_GET}.")
    return read_weights(path, "depth model file", f"get it from {WHERE_TO_GET}", CheckpointError)


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

def detect_model(state_dict: dict) -> tuple[str, str]:
    """``(family, variant)`` of a state dict; CheckpointError when nothing matches."""
    variant = detect_unidepth(state_dict)
    if variant:
        return "unidepthv2", variant
    info = dav2.config_from_state_dict(state_dict)
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
        info = dav2.config_from_state_dict(sd)
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


def load_dsfa_checkpoint(model: nn.Module, path, state_dict: Optional[dict] = None,
                         raw: Any = None, assign: bool = False) -> nn.Module:
    """Load a release file (or plain DAv2 file) into ``model`` strictly; returns the model.
    ``path`` may also be a state dict. ``assign=True`` adopts the file's tensors (meta models)."""
    if isinstance(path, dict):
        state_dict, path = extract_state_dict(path), "<state dict>"
    if state_dict is None:
        raw = read_raw(str(path)) if raw is None else raw
        state_dict = extract_state_dict(raw)
    if isinstance(model, DepthModel):
        state_dict = model.adapt_checkpoint(state_dict, raw)
    _check_keys(model, state_dict, path)
    check_finite(state_dict, str(path), "depth model file", CheckpointError)
    model.load_state_dict(state_dict, strict=True, assign=assign)
    if isinstance(model, DepthModel):
        model.after_load(state_dict)
    return model


def build_from_checkpoint(path: str, device=None, dtype: Optional[torch.dtype] = None,
                          plain_head: str = "auto", plain_max_depth: Optional[float] = None, **kw) -> DepthModel:
    """Build the model a file is for and load it (strict); eval mode on ``device``/``dtype``.

    DSFA release files give the release configuration (metric, max depth 80 m). Plain Depth
    Anything V2 files give the model without DSFA; their head is not recorded in the file, so
    ``plain_head="auto"`` follows the distributed names ("metric_hypersim" 20 m, "metric_vkitti"
    80 m, else relative); ``plain_max_depth`` overrides the metric range. Extra keywords go to
    the model builder (Depth Anything V2: model keywords; UniDepthV2: ``config``)."""
    raw = read_raw(str(path))
    sd = extract_state_dict(raw)
    family, variant = detect_model(sd)
    # Built on the meta device and filled with the file's tensors: no throw-away random init.
    with torch.device("meta"):
        if family == "unidepthv2":
            model = unidepth.build_for_checkpoint(sd, **kw)
        else:
            model = dav2.build_for_checkpoint(sd, path=str(path), plain_head=plain_head,
                                              plain_max_depth=plain_max_depth, **kw)
    load_dsfa_checkpoint(model, path, state_dict=sd, raw=raw, assign=True)
    model = model.to(device=device or "cpu", dtype=dtype or torch.float32)
    model.checkpoint_path = str(path)
    return model.eval()
