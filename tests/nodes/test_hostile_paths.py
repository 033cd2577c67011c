"""Hostile file names from widgets and workflows, with ComfyUI's own path handling and without it:
no file outside its folder is read or written, and refusals say nothing about other paths."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

from support import refusal


def _hostile_names(f, stem="secret", ext=".npy"):
    """Pairs (name of an existing file outside the folder, the same name of a missing one)."""
    return [
        (f"../outside/{stem}{ext}", f"../outside/missing{ext}"),
        (str(f.outside / f"{stem}{ext}"), str(f.outside / f"missing{ext}")),
        (f"sub/../../outside/{stem}{ext}", f"sub/../../outside/missing{ext}"),
        (f"../outside/{stem}{ext} [input]", f"../outside/missing{ext} [input]"),
        (f"../outside/{stem}{ext} [output]", f"../outside/missing{ext} [output]"),
    ]


def _samerefusal(fn, existing, missing, f):
    a, b = refusal(lambda: fn(existing)), refusal(lambda: fn(missing))
    assert a.replace(existing, "NAME") == b.replace(missing, "NAME"), (a, b)
    assert str(f.outside) not in a.replace(existing, "")
    return a


def _load_depth(ext, name):
    return ext.NODE_CLASS_MAPPINGS["BokehDepthLoadDepth"]().load(name, 1.0, "auto")


def test_load_depth_reads_only_the_input_folder(world):
    ext, f = world
    node = ext.NODE_CLASS_MAPPINGS["BokehDepthLoadDepth"]
    dm, _, info = _load_depth(ext, "d.npy")
    assert float(dm.depth.mean()) == 2.0 and "d.npy" in info
    for existing, missing in _hostile_names(f) + [("link.npy", "dangling.npy")]:
        msg = _samerefusal(lambda n: _load_depth(ext, n), existing, missing, f)
        assert "input folder" in msg or "output folder" in msg
        assert node.VALIDATE_INPUTS(existing).replace(existing, "N") == node.VALIDATE_INPUTS(missing).replace(missing, "N")
        assert node.VALIDATE_INPUTS(existing) is not True
        # the change key never looks at files outside the folder
        assert node.IS_CHANGED(existing) == existing and node.IS_CHANGED(missing) == missing
    for odd in ("", ".", "..", "a\x00b.npy", "input/../../x"):
        assert node.VALIDATE_INPUTS(odd) is not True
        with pytest.raises((ValueError, FileNotFoundError)):
            _load_depth(ext, odd)
    with pytest.raises(FileNotFoundError, match="input folder"):
        _load_depth(ext, "nothing_here.npy")


def test_photo_names_stay_in_the_input_folder(world):
    ext, f = world
    exif_node = ext.NODE_CLASS_MAPPINGS["BokehDepthKFromExif"]
    camera_node = ext.NODE_CLASS_MAPPINGS["BokehDepthCameraFromPhoto"]
    Image.new("RGB", (16, 12)).save(f.input / "photo.jpg")
    camera = lambda name: camera_node().make(name)  # noqa: E731
    exif = lambda name: exif_node().calibrate(name, 2.0, 50.0, 50.0, 2.0, 0.0)  # noqa: E731
    assert exif("photo.jpg")[0] > 0
    for existing, missing in _hostile_names(f, ext=".jpg"):
        _samerefusal(exif, existing, missing, f)
        _samerefusal(camera, existing, missing, f)
        assert exif_node.VALIDATE_INPUTS(existing) is not True and camera_node.VALIDATE_INPUTS(existing) is not True
        assert camera_node.IS_CHANGED(existing) == existing


def test_model_names_stay_in_the_model_folders(world):
    ext, f = world
    seam = ext.nodes.comfy_seam
    assert seam.model_path("release.pth") == str(f.models / "release.pth")
    for existing, missing in _hostile_names(f, ext=".pth")[:3]:
        _samerefusal(seam.model_path, existing, missing, f)
        assert seam.model_change_key(existing) == existing
        _samerefusal(lambda n: ext.NODE_CLASS_MAPPINGS["BokehDepthLoadDepthModel"]().load(n, "auto", "auto", 0.0),
                      existing, missing, f)
    # a link placed in a model folder is followed (ComfyUI's loaders do; users share model files so)
    assert seam.model_path("link.pth") == str(f.models / "link.pth")
    with pytest.raises(FileNotFoundError) as e:
        seam.model_path("absent.pth")
    assert "extra_model_paths.yaml" in str(e.value) and str(f.outside) not in str(e.value)


def _save_depth(ext, prefix, b=1):
    dm = ext.bokehdepth_core.types.DepthMap(depth=torch.full((b, 4, 5), 2.0))
    return ext.NODE_CLASS_MAPPINGS["BokehDepthSaveDepth"]().save(dm, prefix, "npy", False, False)


def _save_cloud(ext, prefix):
    dm = ext.bokehdepth_core.types.DepthMap(depth=torch.full((1, 4, 5), 2.0), intrinsics=torch.tensor([[[4.0, 0, 2], [0, 4, 2], [0, 0, 1]]]))
    return ext.NODE_CLASS_MAPPINGS["BokehDepthSavePointCloud"]().save(dm, torch.rand(1, 4, 5, 3), prefix, "ply", 1,
                                                                        0.0, 0.0, "opencv")


@pytest.mark.parametrize("save", [_save_depth, _save_cloud])
def test_saves_stay_in_the_output_folder(world, save):
    ext, f = world
    before = sorted(os.listdir(f.outside))
    for prefix in ("../../x", "../outside/x", str(f.outside / "x"), "sub/../../outside/x", "escape/x",
                   "escape/deeper/x", "", ".", "a\x00b"):
        msg = refusal(lambda: save(ext, prefix))
        assert "output folder" in msg and str(f.outside) not in msg.replace(prefix, "")
    assert sorted(os.listdir(f.outside)) == before
    save(ext, "ok/x")
    assert os.listdir(f.output / "ok")


def test_save_counter_never_reuses_a_number(world):
    ext, f = world
    _save_depth(ext, "run/d", b=3)  # d_00001_ .. d_00003_
    os.remove(f.output / "run" / "d_00001_.npy")
    _save_depth(ext, "run/d")
    names = sorted(os.listdir(f.output / "run"))
    assert names == ["d_00002_.npy", "d_00003_.npy", "d_00004_.npy"]
    (f.output / "run" / "d_00041_.npy").write_bytes(b"")
    (f.output / "run" / "dd_00099_.npy").write_bytes(b"")  # another prefix does not count
    _save_depth(ext, "run/d")
    assert (f.output / "run" / "d_00042_.npy").is_file()
