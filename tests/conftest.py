"""Test setup: the core on sys.path, and the extension loaded the way ComfyUI loads it."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXT_NAME = "custom_nodes_ComfyUI_BokehDepth_under_test"


def load_extension():
    """Import the repo as a package under a mangled name, with a foreign top-level ``nodes``
    (ComfyUI owns that name) so that any absolute ``import nodes`` of ours would break."""
    if EXT_NAME in sys.modules:
        return sys.modules[EXT_NAME]
    sys.modules.setdefault("nodes", types.ModuleType("nodes"))  # stands in for ComfyUI's nodes.py
    spec = importlib.util.spec_from_file_location(EXT_NAME, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[EXT_NAME] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ext():
    return load_extension()


@pytest.fixture(scope="session")
def node_classes(ext):
    return ext.NODE_CLASS_MAPPINGS
