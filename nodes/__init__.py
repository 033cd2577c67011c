"""Node families, one module each (calibration, physics, stage1, stage2, io ...).

Each family exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS. A family whose optional
dependency is missing is skipped with one log line instead of breaking ComfyUI's start.
"""

import importlib
import logging
import os

from . import comfy_seam

_NOT_FAMILIES = {"__init__", "comfy_seam", "common"}

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
SKIPPED = {}

comfy_seam.register_model_folder()

FAMILIES = sorted(
    f[:-3] for f in os.listdir(os.path.dirname(__file__))
    if f.endswith(".py") and f[:-3] not in _NOT_FAMILIES
)

for _family in FAMILIES:
    try:
        _mod = importlib.import_module(f".{_family}", __name__)
    except ImportError as exc:
        SKIPPED[_family] = str(exc)
        logging.getLogger("BokehDepth").warning(
            "BokehDepth: %s nodes disabled (%s); install the extension's requirements: pip install -r requirements.txt",
            _family, exc)
        continue
    NODE_CLASS_MAPPINGS.update(_mod.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_mod.NODE_DISPLAY_NAME_MAPPINGS)
