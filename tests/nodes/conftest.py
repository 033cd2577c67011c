"""Fixtures for node tests: the extension with its folders pointed at a temporary tree."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest
from PIL import Image

from support import load_extension

PLAIN = load_extension()


def _folders(root):
    f = types.SimpleNamespace(**{k: root / k for k in ("input", "output", "models", "outside")})
    for p in vars(f).values():
        p.mkdir()
    np.save(f.input / "d.npy", np.full((6, 8), 2.0, np.float32))
    np.save(f.outside / "secret.npy", np.full((6, 8), 3.0, np.float32))
    Image.new("RGB", (16, 12)).save(f.outside / "secret.jpg")
    (f.outside / "secret.pth").write_bytes(b"weights")
    (f.models / "release.pth").write_bytes(b"weights")
    os.symlink(f.outside / "secret.npy", f.input / "link.npy")
    os.symlink(f.outside / "gone.npy", f.input / "dangling.npy")
    os.symlink(f.outside / "secret.pth", f.models / "link.pth")
    os.symlink(f.outside, f.output / "escape")
    return f


@pytest.fixture(params=["plain", "comfyui"])
def world(request, tmp_path, monkeypatch):
    """(extension, folders): the plain copy with its fallback folders, or the copy inside the real
    ComfyUI with folder_paths pointed at the same folders (restored afterwards)."""
    f = _folders(tmp_path)
    if request.param == "plain":
        monkeypatch.setenv("BOKEHDEPTH_INPUT_DIR", str(f.input))
        monkeypatch.setenv("BOKEHDEPTH_OUTPUT_DIR", str(f.output))
        monkeypatch.setenv("BOKEHDEPTH_MODELS_DIR", str(f.models))
        yield PLAIN, f
        return
    request.getfixturevalue("comfyui")
    ext = request.getfixturevalue("ext_in_comfyui")
    import folder_paths as fp

    saved = (fp.get_input_directory(), fp.get_output_directory(), fp.folder_names_and_paths.get("bokehdepth"))
    fp.set_input_directory(str(f.input))
    fp.set_output_directory(str(f.output))
    fp.folder_names_and_paths["bokehdepth"] = ([str(f.models)], set(ext.nodes.comfy_seam.MODEL_EXTENSIONS))
    try:
        yield ext, f
    finally:
        fp.set_input_directory(saved[0])
        fp.set_output_directory(saved[1])
        if saved[2] is None:
            fp.folder_names_and_paths.pop("bokehdepth", None)
        else:
            fp.folder_names_and_paths["bokehdepth"] = saved[2]
