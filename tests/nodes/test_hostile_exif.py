"""Implausible and malformed EXIF in the calibration and camera nodes (with ComfyUI's path handling
and without it): broken tags are ignored with a warning that names them, values the user typed
win, and nothing crashes with a library's internals."""

from __future__ import annotations

import io
import math
import random

import pytest
from PIL import ExifTags, Image, TiffImagePlugin

T = ExifTags.Base
R = TiffImagePlugin.IFDRational


def _photo(path, size=(300, 200), **tags):
    exif = Image.Exif()
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for name, value in tags.items():
        (exif if name in ("Make", "Model", "Orientation") else sub)[getattr(T, name)] = value
    Image.new("RGB", size, (90, 120, 30)).save(path, exif=exif)


def _k_from_exif(ext, name, f=0.0, focal=0.0, f35=0.0, focus=0.0, sensor=0.0):
    return ext.NODE_CLASS_MAPPINGS["BokehDepthKFromExif"]().calibrate(name, f, focal, f35, focus, sensor)


def test_implausible_tags_warn_and_typed_values_win(world, caplog):
    ext, f = world
    optics = ext.bokehdepth_core.optics
    _photo(f.input / "absurd.jpg", FNumber=R(1, 1000000), FocalLength=R(50, 1), FocalLengthIn35mmFilm=50,
           FocalPlaneXResolution=R(3, 10000000), FocalPlaneResolutionUnit=4, SubjectDistance=R(3, 1))
    # f/1e-6 and a 1e8 mm sensor are ignored (and said so); the focal lengths give the sensor instead
    with pytest.raises(ValueError) as e:
        _k_from_exif(ext, "absurd.jpg")
    assert "f_number" in str(e.value) and "FNumber" in str(e.value) and "implausible" in str(e.value)
    with caplog.at_level("WARNING"):
        k, *_, summary, estimated, _img = _k_from_exif(ext, "absurd.jpg", f=2.8)
    assert k == pytest.approx(optics.calc_dof_cond(2.8, 50, 50, 3.0, 300, 200))
    assert "given by the user" in estimated and "FNumber" in estimated
    assert "FocalPlaneXResolution" in estimated and "focal_mm / focal_35mm" in estimated
    assert "implausible" in caplog.text and "absurd.jpg" in caplog.text
    # a typed sensor width wins over a broken focal-plane resolution, with no 35 mm tag at all
    _photo(f.input / "sensor.jpg", FNumber=R(2, 1), FocalLength=R(50, 1), FocalPlaneXResolution=R(1, 10 ** 9),
           FocalPlaneResolutionUnit=4)
    k, *_ = _k_from_exif(ext, "sensor.jpg", focus=2.0, sensor=36.0)
    assert k == pytest.approx(optics.calc_dof_cond(2.0, 50, 50 * 43.27 / 36.0 / math.hypot(1, 2 / 3), 2.0, 300, 200))


@pytest.mark.parametrize("tags", [
    dict(FocalLength=R(0, 1), FNumber=R(0, 1)),  # 0 = unknown in EXIF
    dict(FocalLengthIn35mmFilm=65535, FocalLength=R(50, 1)),
    dict(ApertureValue=R(100000, 1)),  # APEX: f/2^50000 would overflow
    dict(SubjectDistance=R(4294967295, 1)),  # infinity
    dict(FNumber=R(-28, 10), FocalLength=R(-50, 1)),
    dict(FocalPlaneXResolution=R(1, 0), FocalPlaneResolutionUnit=99),
    dict(FocalPlaneXResolution=R(3000, 1), FocalPlaneResolutionUnit=2, ExifImageWidth=-5),
    dict(Orientation=77, Make="\x00\x00", Model="x" * 300),
])
def test_broken_tags_never_crash_when_the_user_typed_every_value(world, tags):
    ext, f = world
    _photo(f.input / "broken.jpg", **tags)
    k, k512, kcrop, summary, estimated, image = _k_from_exif(ext, "broken.jpg", 2.0, 50.0, 50.0, 2.0)
    assert all(math.isfinite(v) and v > 0 for v in (k, k512, kcrop)) and image.shape[-1] == 3
    camera = ext.NODE_CLASS_MAPPINGS["BokehDepthCameraFromPhoto"]()
    try:
        cam, _ = camera.make("broken.jpg")
        assert bool(cam.isfinite().all())
    except ValueError as exc:  # no usable focal length in the tags: a clear message
        assert "focal" in str(exc)


def test_garbage_exif_blocks_are_ignored(world):
    """Random bytes in the EXIF segment: the photo loads with whatever tags are readable (a damaged
    block is noted), and typed values calibrate it."""
    ext, f = world
    rnd = random.Random(7)
    for i in range(12):
        buf = io.BytesIO()
        raw = b"Exif\x00\x00" + (b"II*\x00" if i % 2 else b"MM\x00*") + bytes(rnd.randrange(256) for _ in range(90))
        Image.new("RGB", (40, 30)).save(buf, "JPEG", exif=raw)
        (f.input / f"g{i}.jpg").write_bytes(buf.getvalue())
        k, *_ = _k_from_exif(ext, f"g{i}.jpg", 2.0, 50.0, 50.0, 2.0)
        assert math.isfinite(k) and k > 0
