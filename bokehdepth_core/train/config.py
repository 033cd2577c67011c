"""Training options: recipe defaults, a YAML/JSON file over them, command-line flags over both.

Every option of a recipe is one key of its ``DEFAULTS`` dict and, with the same name in
kebab-case, one command-line flag (``grad_accum_steps`` -> ``--grad-accum-steps``). The file may be
flat (the keys below) or, for UniDepthV2, the authors' nested config as-is (``training``/``data``/
``model`` sections are flattened by the recipe).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Optional

# Options every recipe has (the loop reads them); recipes add their own.
COMMON = {
    "seed": 0,
    "save_path": "outputs/train",
    "resume_from": None,
    "manifest_path": None,
    "val_manifest_path": None,
    "epochs": 1,
    "max_steps": None,  # optimiser steps; stops early (tests, smoke runs)
    "batch_size": 2,
    "num_workers": 0,
    "grad_accum_steps": 1,
    "mixed_precision": "no",
    "max_grad_norm": 1.0,
    "save_every": 1,  # epochs
    "val_every": 1,  # epochs
    "log_every": 10,  # optimiser steps between progress-bar updates of the running loss
    "safetensors": False,  # also write the model weights as .safetensors
    "gradient_checkpointing": False,
    "progress": True,
}

# Options whose default is None need a type for their flag.
TYPES = {
    "resume_from": str, "manifest_path": str, "val_manifest_path": str, "max_steps": int,
    "pretrained_from": str, "stack_indices": int, "lora_rank": int, "lora_alpha": float,
    "pretrained_model": str, "adapter_from": str, "max_samples": int, "max_grad_norm": float,
}
CHOICES = {"mixed_precision": ("no", "fp16", "bf16")}


def read_config_file(path: Optional[str]) -> dict:
    """A YAML (.yaml/.yml) or JSON file as a dict; {} for None."""
    if not path:
        return {}
    if not os.path.isfile(path):
        raise ValueError(f"config file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ValueError("YAML configs need PyYAML: pip install 'bokehdepth[train]' (or give a .json file)") from None
        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of options, got {type(data).__name__}")
    return data


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def add_option_flags(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """One flag per option; every flag defaults to None so that only given flags override."""
    for key, value in defaults.items():
        kw: dict[str, Any] = {"dest": key, "default": None}
        if isinstance(value, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif isinstance(value, (list, tuple)):
            kw["nargs"] = "+"
            kw["type"] = type(value[0]) if value else TYPES.get(key, float)
        else:
            kw["type"] = TYPES.get(key, type(value) if value is not None else str)
        if key in CHOICES:
            kw["choices"] = CHOICES[key]
        kw["help"] = f"(default: {value!r})"
        parser.add_argument(flag_name(key), **kw)


def resolve(defaults: dict, file_options: dict, flags: Optional[dict] = None) -> dict:
    """Defaults < file < flags. Unknown keys in the file are an error naming them."""
    unknown = sorted(set(file_options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) in the config file: {', '.join(unknown)}. "
                         f"Known: {', '.join(sorted(defaults))}")
    cfg = dict(defaults)
    cfg.update(file_options)
    for k, v in (flags or {}).items():
        if k in defaults and v is not None:
            cfg[k] = v
    return cfg


def check_common(cfg: dict) -> None:
    if not cfg.get("manifest_path"):
        raise ValueError("manifest_path is required: a manifest (.json/.jsonl) or a folder written by "
                         "`python -m bokehdepth_core synth --train`")
    for key in ("epochs", "batch_size", "grad_accum_steps", "save_every", "val_every"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg.get("max_steps") is not None and int(cfg["max_steps"]) < 1:
        raise ValueError(f"max_steps must be >= 1, got {cfg['max_steps']}")
