"""Test setup: the core and the test helpers on sys.path, the extension as a fixture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
for _p in (str(_TESTS.parent), str(_TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from support import COMFYUI_HINT, comfyui_path, import_comfyui, load_extension  # noqa: E402

# the plain copy of the extension loads before anything can import ComfyUI, so it never sees it
_PLAIN_EXTENSION = load_extension()


@pytest.fixture(scope="session")
def ext():
    return _PLAIN_EXTENSION


@pytest.fixture(scope="session")
def comfyui():
    """The real ComfyUI named by COMFYUI_PATH (its ``comfy`` package); skips, naming the variable,
    where it is unset."""
    path = comfyui_path()
    if path is None:
        pytest.skip(COMFYUI_HINT)
    return import_comfyui(path)


@pytest.fixture(scope="session")
def ext_in_comfyui(comfyui):
    """A second copy of the extension, imported with the real ComfyUI present (its seam uses
    ComfyUI's model management, progress bar and folders)."""
    return load_extension("custom_nodes_ComfyUI_BokehDepth_in_comfyui")


@pytest.fixture(scope="session")
def node_classes(ext):
    return ext.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-tensor tests (threads only add start-up cost there)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
