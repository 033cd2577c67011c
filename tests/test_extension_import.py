"""Importing the extension: cheap, relative-only, and tolerant of a missing optional package."""

import importlib.util
import logging
import shutil
import sys

from conftest import ROOT


def _load_copy(root, name):
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_missing_optional_dependency_logs_one_line(tmp_path, caplog):
    dst = tmp_path / "ComfyUI-BokehDepth"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".git", "tests", "__pycache__", "workflows"))
    (dst / "nodes" / "zz_needs_missing.py").write_text(
        "import not_an_installed_package_bokehdepth\nNODE_CLASS_MAPPINGS = {}\nNODE_DISPLAY_NAME_MAPPINGS = {}\n")
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        mod = _load_copy(dst, "custom_nodes_copy_with_missing_dep")
    assert "BokehDepthKFromLens" in mod.NODE_CLASS_MAPPINGS  # the rest still loads
    assert "zz_needs_missing" in mod.nodes.SKIPPED
    lines = [r.getMessage() for r in caplog.records if "zz_needs_missing" in r.getMessage()]
    assert len(lines) == 1 and "not_an_installed_package_bokehdepth" in lines[0] and "requirements.txt" in lines[0]


def test_no_absolute_imports_of_our_packages():
    for path in list((ROOT / "nodes").glob("*.py")) + [ROOT / "__init__.py"]:
        text = path.read_text()
        for bad in ("import nodes", "from nodes", "import bokehdepth_core", "from bokehdepth_core"):
            for line in text.splitlines():
                assert not line.strip().startswith(bad), f"{path.name}: absolute import {line.strip()!r}"
    for path in (ROOT / "bokehdepth_core").rglob("*.py"):
        text = path.read_text()
        assert "import comfy" not in text and "folder_paths" not in text, f"{path.name} talks to ComfyUI"
