"""Shared test helpers: the repository root, test data and the extension loaded as ComfyUI loads it."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
EXT_NAME = "custom_nodes_ComfyUI_BokehDepth_under_test"


def load_extension(name: str = EXT_NAME):
    """Import the repo as a package under a mangled name, as ComfyUI does.

    Without ComfyUI, a foreign top-level ``nodes`` stands in for ComfyUI's ``nodes.py`` so that any
    absolute ``import nodes`` of ours would break. Each ``name`` is a separate copy: the plain copy
    (loaded first, by conftest) never sees ComfyUI; :func:`import_comfyui` users load another name.
    """
    if name in sys.modules:
        return sys.modules[name]
    sys.modules.setdefault("nodes", types.ModuleType("nodes"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


COMFYUI_HINT = ("COMFYUI_PATH is not set (or not a folder): these checks run against a real ComfyUI tree. "
                "bash .ci/run sets it; by hand: eval \"$(bash <ComfyUI-env script> $(which python) | tail -1)\"; "
                "export COMFYUI_PATH")


def comfyui_path() -> str | None:
    """The ComfyUI tree named by ``COMFYUI_PATH`` (CI sets it), or None."""
    path = os.environ.get("COMFYUI_PATH")
    return path if path and os.path.isdir(path) else None


def import_comfyui(path: str):
    """Make the real ComfyUI at ``path`` importable in this process (CPU, no argument parsing of
    pytest's command line) and return its ``comfy`` package."""
    if getattr(sys.modules.get("nodes"), "NODE_CLASS_MAPPINGS", None) is None:
        sys.modules.pop("nodes", None)  # the stand-in: ComfyUI's own nodes.py must load now
    if path not in sys.path:
        sys.path.insert(0, path)
    argv = sys.argv
    sys.argv = [argv[0], "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
        import comfy.model_management  # noqa: F401
        import comfy.model_patcher  # noqa: F401
        import comfy.sd  # noqa: F401
        import folder_paths  # noqa: F401
        import nodes  # noqa: F401
    finally:
        sys.argv = argv
    return comfy


# a small UniDepthV2-DSFA configuration (ViT of 4 blocks, width 128) for fast exact checks
UNIDEPTH_SMALL = dict(embed_dim=128, depth=4, vit_heads=2, img_size=56, output_idx=[1, 2, 3, 4], hidden_dim=32, out_dim=8,
             pixels_min=3000, pixels_max=9000)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights with layer-scales large enough that every branch matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name:
                p.copy_(0.3 + 0.3 * torch.rand(p.shape, generator=g))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def widget_inputs(cls):
    """(name, type, options) of the inputs a UI-format workflow stores as widget values, in order."""
    spec = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, decl in spec.get(section, {}).items():
            typ, opts = decl[0], (decl[1] if len(decl) > 1 else {})
            if opts.get("forceInput"):
                continue
            if isinstance(typ, list) or typ in WIDGET_TYPES:
                out.append((name, typ, opts))
    return out


def depth_with_holes(h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Two random depth maps ``[2,H,W]`` (0.4..30 m) with a NaN, an inf, a 0 and a negative pixel."""
    g = torch.Generator().manual_seed(seed)
    d = 0.4 + 30.0 * torch.rand(2, h, w, generator=g) ** 2
    d[0, 0, 0] = float("nan")
    d[0, 1, 1] = float("inf")
    d[0, 2, 2] = 0.0
    d[1, 3, 3] = -2.0
    return d


def randomize_sharp(model: torch.nn.Module, seed: int = 0, qkv_gain: float = 6.0) -> torch.nn.Module:
    """Random weights where scaling choices show: layer scales and biases random, sharp attention
    (large qkv weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name:
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            if name.endswith("qkv.weight"):
                p.mul_(qkv_gain)
    return model


def dav2_vits():
    """Depth Anything V2 + DSFA vits (release layout) with sharp random weights, eval mode."""
    from bokehdepth_core.stage2 import build_dav2_dsfa

    torch.manual_seed(0)
    return randomize_sharp(build_dav2_dsfa("vits")).eval()


def refusal(fn, *words) -> str:
    """The message of the ValueError that ``fn()`` must raise; it must hold each of ``words``."""
    import pytest

    with pytest.raises(ValueError) as e:
        fn()
    msg = str(e.value)
    assert all(w in msg for w in words), msg
    return msg
