"""Node families, one module each, mirroring the core (calibration, stage1, stage2, geometry,
depth_files, physics, interop).

Each family exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS. A family that fails to import
(e.g. a missing package) is logged with its traceback and skipped; the others still load, so one
broken family never hides the whole extension from ComfyUI.
"""

import importlib
import logging

from . import comfy_seam

FAMILIES = ("calibration", "stage1", "stage2", "geometry", "depth_files", "physics", "interop")

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
SKIPPED = {}  # family -> why it did not load

comfy_seam.register_model_folder()


def _load(family: str) -> None:
    try:
        mod = importlib.import_module(f".{family}", __name__)
    except Exception as exc:  # noqa: BLE001 - any failure must leave the other families loadable
        SKIPPED[family] = f"{type(exc).__name__}: {exc}"
        hint = (" Install the extension's requirements: pip install -r requirements.txt"
                if isinstance(exc, ImportError) else "")
        logging.getLogger("BokehDepth").error("BokehDepth: %s nodes disabled (%s).%s", family, SKIPPED[family], hint,
                                              exc_info=True)
        return
    NODE_CLASS_MAPPINGS.update(mod.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(mod.NODE_DISPLAY_NAME_MAPPINGS)


for _family in FAMILIES:
    _load(_family)
