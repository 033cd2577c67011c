"""Damaged, truncated and oversized files in Load Depth and the EXIF nodes, with ComfyUI's path
handling and without it: each is refused before anything large is allocated, with a message that
names the file and the fix and no numpy/PIL internals."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from bokehdepth_core.testing import tiny_transformer
from support import UNIDEPTH_SMALL, refusal

INTERNALS = ("reshape", "buffer", "struct", "zlib", "PIL", "numpy", "tensor", "Traceback", "cannot identify",
             "truncated image", "Errno")


def _load(ext, name, channel="auto"):
    return ext.NODE_CLASS_MAPPINGS["BokehDepthLoadDepth"]().load(name, 1.0, channel)


def _refused(ext, name, *words, **kw):
    """Load Depth refuses ``name`` with a clear message holding ``words``; peak Python-traced memory stays small."""
    tracemalloc.start()
    try:
        msg = refusal(lambda: _load(ext, name, **kw), name, *words)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not [w for w in INTERNALS if w in msg], msg
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB traced before refusing {name}"
    return msg


def _npy_header(shape, descr="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _png(width, height, extra=b""):
    """A 16-bit grey PNG that declares ``width x height`` but carries almost no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_truncated_and_garbage_numpy_files(world):
    ext, f = world
    good = io.BytesIO()
    np.save(good, np.random.rand(60, 80).astype(np.float32))
    (f.input / "cut.npy").write_bytes(good.getvalue()[:3000])
    (f.input / "junk.npy").write_bytes(b"not an array at all" * 10)
    (f.input / "empty.npy").write_bytes(b"")
    (f.input / "header_only.npy").write_bytes(good.getvalue()[:40])
    (f.input / "zero.npy").write_bytes(_npy_header((0, 5)))
    (f.input / "objects.npy").write_bytes(_npy_header((2,), "|O") + b"\0" * 16)
    (f.input / "text.npy").write_bytes(_npy_header((4, 4), "<U3") + b"\0" * 192)
    _refused(ext, "cut.npy", "truncated")
    for name in ("junk.npy", "empty.npy", "header_only.npy", "zero.npy", "objects.npy", "text.npy"):
        _refused(ext, name)


def test_declared_sizes_are_checked_before_allocating(world):
    ext, f = world
    # 16384 x 32768 float32 = 2 GiB declared by a tiny file
    (f.input / "huge.npy").write_bytes(_npy_header((16384, 32768)) + b"\0" * 1024)
    _refused(ext, "huge.npy", "16384", "too large")
    with zipfile.ZipFile(f.input / "huge.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("depth.npy", _npy_header((16384, 32768)) + b"\0" * 4096)
    _refused(ext, "huge.npz", "too large")
    # a member whose unpacked size disagrees with its header (the shape of a zip bomb)
    with zipfile.ZipFile(f.input / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("depth.npy", _npy_header((4, 4)) + b"\0" * 2_000_000)
    _refused(ext, "bomb.npz")
    (f.input / "cut.npz").write_bytes((f.input / "huge.npz").read_bytes()[:100])
    _refused(ext, "cut.npz")
    (f.input / "big.png").write_bytes(_png(10000, 10000))  # 100 M pixels: over Pillow's limit
    _refused(ext, "big.png", "pixels")
    (f.input / "bomb.png").write_bytes(_png(100000, 100000))  # Pillow's own decompression-bomb error
    _refused(ext, "bomb.png", "pixels")


def test_damaged_images_and_metadata(world):
    ext, f = world
    dm = ext.bokehdepth_core.types.DepthMap(depth=torch.linspace(1, 5, 48 * 64).reshape(1, 48, 64))
    dio = ext.bokehdepth_core.depth_io
    for fmt in ("png16", "tiff"):
        path = dio.save_depth(str(f.input / f"ok.{fmt}{dio.extension_for(fmt)}"), dm, fmt, sidecar=False)[0]
        data = Path(path).read_bytes()
        cut = f.input / f"cut_{fmt}{dio.extension_for(fmt)}"
        cut.write_bytes(data[: len(data) // 2])
        _refused(ext, cut.name)
    (f.input / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x07" * 200)
    _refused(ext, "noise.png")
    # our PNG header with a broken range
    md = ext.bokehdepth_core.depth_io.metadata
    info = PngInfo()
    info.add_text(md.EMBED_KEY, json.dumps({"format": md.FORMAT_ID, "storage": "png16", "near": -1.0, "far": "x"}))
    Image.fromarray(np.full((8, 8), 100, np.uint16)).save(f.input / "range.png", pnginfo=info)
    _refused(ext, "range.png", "near")


def test_sidecars(world):
    ext, f = world
    np.save(f.input / "a.npy", np.full((6, 8), 2.5, np.float32))
    (f.input / "a.json").write_text("{ not json")  # not ours: ignored
    assert float(_load(ext, "a.npy")[0].depth.mean()) == 2.5
    (f.input / "a.json").write_text(" " * (3 * 2**20))  # far larger than any sidecar we write: ignored
    assert float(_load(ext, "a.npy")[0].depth.mean()) == 2.5
    fid = ext.bokehdepth_core.depth_io.metadata.FORMAT_ID
    (f.input / "a.json").write_text(json.dumps({"format": fid, "intrinsics": [[1, "x"], [2]]}))
    msg = _refused(ext, "a.npy", "intrinsics")
    assert "a.json" in msg


def test_rgb_arrays_are_one_map_not_a_batch(world):
    ext, f = world
    grey = np.random.rand(40, 30, 1).astype(np.float32) * 5 + 1
    np.save(f.input / "grey3.npy", np.repeat(grey, 3, axis=2))
    dm = _load(ext, "grey3.npy")[0]
    assert tuple(dm.depth.shape) == (1, 40, 30)
    colour = np.random.rand(40, 30, 3).astype(np.float32) + 1
    np.save(f.input / "rgb.npy", colour)
    _refused(ext, "rgb.npy", "channel")
    dm = _load(ext, "rgb.npy", channel="g")[0]
    assert tuple(dm.depth.shape) == (1, 40, 30)
    assert torch.allclose(dm.depth[0], torch.from_numpy(colour[..., 1]))
    np.save(f.input / "batch_rgb.npy", np.stack([colour, colour]))
    assert tuple(_load(ext, "batch_rgb.npy", channel="r")[0].depth.shape) == (2, 40, 30)


def test_bilevel_and_luminance_images(world):
    ext, f = world
    load_depth = ext.bokehdepth_core.depth_io.load_depth
    Image.fromarray(np.eye(8, dtype=bool)).save(f.input / "bits.png")
    assert set(_load(ext, "bits.png")[0].depth.unique().tolist()) == {0.0, 255.0}  # metric: stored units x scale
    dm = load_depth(str(f.input / "bits.png"), "disparity", near=0.5, far=20.0)
    assert set(dm.depth.unique().tolist()) == {0.5, 20.0}
    # 8-bit RGB: the luminance channel is scaled to 0..1 before mapping (not one depth for every pixel)
    ramp = np.repeat(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], 3, axis=2).repeat(4, 0)
    ramp[..., 0] = 0
    Image.fromarray(ramp).save(f.input / "ramp.png")
    d = load_depth(str(f.input / "ramp.png"), "depth", near=0.5, far=20.0, channel="luminance").depth[0, 0]
    assert torch.all(d[1:] > d[:-1]) and 0.5 <= float(d.min()) and float(d.max()) < 20.0


def test_damaged_photos_in_the_exif_nodes(world):
    ext, f = world
    good = io.BytesIO()
    Image.new("RGB", (64, 48), (40, 90, 10)).save(good, "JPEG")
    (f.input / "cut.jpg").write_bytes(good.getvalue()[:200])
    (f.input / "fake.jpg").write_bytes(b"GIF89a" + b"\0" * 50)
    (f.input / "big.png").write_bytes(_png(10000, 10000))
    exif = ext.NODE_CLASS_MAPPINGS["BokehDepthKFromExif"]()
    camera = ext.NODE_CLASS_MAPPINGS["BokehDepthCameraFromPhoto"]()
    for name in ("cut.jpg", "fake.jpg", "big.png"):
        for fn in (lambda n: exif.calibrate(n, 2.0, 50.0, 50.0, 2.0, 0.0), camera.make):
            with pytest.raises(ValueError) as e:
                fn(name)
            assert name in str(e.value) and not [w for w in INTERNALS if w in str(e.value)], str(e.value)


def test_exr_declared_size_and_damage(world):
    ext, f = world
    dio = ext.bokehdepth_core.depth_io
    dm = ext.bokehdepth_core.types.DepthMap(depth=torch.rand(1, 6, 8) + 1)
    data = bytearray(Path(dio.save_depth(str(f.input / "ok.exr"), dm, "exr", sidecar=False)[0]).read_bytes())
    at = data.find(b"dataWindow\x00box2i\x00") + len(b"dataWindow\x00box2i\x00") + 4
    huge = data[:at] + struct.pack("<4i", 0, 0, 99999, 99999) + data[at + 16:]
    (f.input / "huge.exr").write_bytes(bytes(huge))
    _refused(ext, "huge.exr", "too large")
    (f.input / "cut.exr").write_bytes(bytes(data[:300]))
    _refused(ext, "cut.exr")


def test_listing_survives_hostile_files(world):
    """Load Depth's picker reads every file's header: oversized or damaged files are left out, not fatal."""
    ext, f = world
    (f.input / "bomb.png").write_bytes(_png(100000, 100000))
    (f.input / "junk.npy").write_bytes(b"\x93NUMPY junk")
    (f.input / "junk.npz").write_bytes(b"PK\x03\x04 junk")
    (f.input / "junk.exr").write_bytes(b"v/1\x01 junk")
    listed = ext.NODE_CLASS_MAPPINGS["BokehDepthLoadDepth"].INPUT_TYPES()["required"]["depth_file"][0]
    assert "d.npy" in listed and not {"bomb.png", "junk.npy", "junk.npz", "junk.exr"} & set(listed)
    photos = ext.NODE_CLASS_MAPPINGS["BokehDepthKFromExif"].INPUT_TYPES()["required"]["image"][0]
    assert "bomb.png" not in photos


def test_damaged_and_non_finite_weight_files_in_the_loaders(world):
    """Load Bokeh Adapter and Load Depth Model name the damaged file and the fix; files whose weights
    hold NaN or inf are refused at load, not turned into NaN depth or flat frames later."""
    ext, f = world
    core = ext.bokehdepth_core
    adapter = core.stage1.BokehAdapter.attach(tiny_transformer(), rank=2, alpha=2)
    adapter.detach()
    adapter.save(str(f.models / "adapter.safetensors"))
    adapter.save(str(f.models / "adapter.bin"))
    torch.manual_seed(0)
    depth = core.stage2.build_unidepthv2_dsfa(UNIDEPTH_SMALL).state_dict()
    torch.save({"model": depth}, f.models / "depth.pth")
    for stem in ("adapter.safetensors", "adapter.bin", "depth.pth"):
        data = (f.models / stem).read_bytes()
        (f.models / f"cut_{stem}").write_bytes(data[: len(data) // 2])
    (f.models / "junk.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    nan = {k: v.clone() for k, v in depth.items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    torch.save(nan, f.models / "nan_depth.pth")
    load_adapter = ext.NODE_CLASS_MAPPINGS["BokehDepthLoadBokehAdapter"]().load
    load_depth = ext.NODE_CLASS_MAPPINGS["BokehDepthLoadDepthModel"]().load
    cases = [(load_adapter, "cut_adapter.safetensors"), (load_adapter, "cut_adapter.bin"),
             (load_adapter, "junk.safetensors"), (load_depth, "cut_depth.pth"), (load_depth, "junk.safetensors"),
             (load_depth, "release.pth"), (load_depth, "nan_depth.pth")]
    for load, name in cases:
        args = (name,) if load is load_adapter else (name, "fp32", "auto", 0.0)
        msg = refusal(lambda: load(*args), name)
        assert not [w for w in ("SafetensorError", "header too large", "Unpickl", "PytorchStreamReader", "Errno",
                                "Traceback", "zip", "KeyError") if w in msg], msg
        assert str(f.models) not in msg, "no folder paths in the message"
    assert "NaN" in refusal(lambda: load_depth("nan_depth.pth", "fp32", "auto", 0.0))
    assert load_adapter("adapter.bin")[0].source == "adapter.bin"
