"""Importing the extension: cheap, relative-only, and tolerant of a missing optional package."""

import importlib.util
import logging
import shutil
import sys

from support import ROOT


def _load_copy(root, name):
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _copy_with_broken_family(tmp_path, source: str):
    """A copy of the extension whose physics family's module is replaced by ``source``."""
    dst = tmp_path / "ComfyUI-BokehDepth"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".git", "tests", "__pycache__", "workflows"))
    (dst / "nodes" / "physics.py").write_text(source)
    return dst


def test_missing_package_disables_one_family_with_its_traceback(tmp_path, caplog):
    dst = _copy_with_broken_family(tmp_path, "import not_an_installed_package_bokehdepth\n")
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        mod = _load_copy(dst, "custom_nodes_copy_with_missing_dep")
    assert "BokehDepthKFromLens" in mod.NODE_CLASS_MAPPINGS  # the rest still loads
    assert "BokehDepthRenderBokeh" not in mod.NODE_CLASS_MAPPINGS
    assert "not_an_installed_package_bokehdepth" in mod.nodes.SKIPPED["physics"]
    recs = [r for r in caplog.records if "physics nodes disabled" in r.getMessage()]
    assert len(recs) == 1 and "requirements.txt" in recs[0].getMessage() and recs[0].exc_info is not None


def test_any_error_in_a_family_leaves_the_others_loaded(tmp_path, caplog):
    dst = _copy_with_broken_family(tmp_path, "raise RuntimeError('broken on purpose')\n")
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        mod = _load_copy(dst, "custom_nodes_copy_with_broken_family")
    assert "BokehDepthKFromLens" in mod.NODE_CLASS_MAPPINGS and "BokehDepthLoadDepthModel" in mod.NODE_CLASS_MAPPINGS
    assert mod.nodes.SKIPPED == {"physics": "RuntimeError: broken on purpose"}


def test_a_stray_module_is_not_a_family(tmp_path):
    dst = tmp_path / "ComfyUI-BokehDepth"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".git", "tests", "__pycache__", "workflows"))
    (dst / "nodes" / "zz_stray.py").write_text("raise RuntimeError('must not be imported')\n")
    mod = _load_copy(dst, "custom_nodes_copy_with_stray_file")
    assert not mod.nodes.SKIPPED and "BokehDepthKFromLens" in mod.NODE_CLASS_MAPPINGS


def test_no_absolute_imports_of_our_packages():
    for path in list((ROOT / "nodes").glob("*.py")) + [ROOT / "__init__.py"]:
        text = path.read_text()
        for bad in ("import nodes", "from nodes", "import bokehdepth_core", "from bokehdepth_core"):
            for line in text.splitlines():
                assert not line.strip().startswith(bad), f"{path.name}: absolute import {line.strip()!r}"
    for path in (ROOT / "bokehdepth_core").rglob("*.py"):
        text = path.read_text()
        assert "import comfy" not in text and "folder_paths" not in text, f"{path.name} talks to ComfyUI"
