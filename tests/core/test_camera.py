"""Pinhole cameras from lens values, EXIF or by hand, and their descriptions (bokehdepth_core.camera)."""

import math

import pytest
import torch
from PIL import Image

from bokehdepth_core import camera as cam


def test_focal_px():
    assert cam.focal_px(100, focal_35mm=18.0) == pytest.approx(50.0)
    assert cam.focal_px(100, focal_mm=8.0, sensor_width_mm=16.0) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="focal"):
        cam.focal_px(100)
    with pytest.raises(ValueError, match="width"):
        cam.focal_px(0, focal_35mm=18.0)


@pytest.mark.parametrize("source, kwargs, fx, cx", [
    ("f35", {"focal_35mm": 24.0}, 24.0 / 36.0 * 90, 45.0),
    ("sensor", {"focal_mm": 6.0, "sensor_width_mm": 9.0}, 60.0, 45.0),
    ("manual", {"fx": 70.0, "fy": 71.0, "cx": 40.0}, 70.0, 40.0),
    ("manual", {"fx": 70.0, "fy": 71.0, "cx": -1.0}, 70.0, 45.0),
    ("guess", {}, 0.7 * 90, 45.0),
])
def test_intrinsics_for_each_source(source, kwargs, fx, cx):
    k, note = cam.intrinsics_for(source, 90, 60, batch=2, **kwargs)
    assert k.shape == (2, 3, 3) and float(k[1, 0, 0]) == pytest.approx(fx) and float(k[0, 0, 2]) == pytest.approx(cx)
    assert float(k[0, 1, 2]) == pytest.approx(30.0) and note


def test_intrinsics_for_exif_and_bad_sources(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 24  # FocalLengthIn35mmFilm
    Image.new("RGB", (90, 60)).save(tmp_path / "p.jpg", exif=exif)
    k, note = cam.intrinsics_for("exif", 180, 120, photo=str(tmp_path / "p.jpg"))
    assert float(k[0, 0, 0]) == pytest.approx(24 / 36 * 180) and "p.jpg" in note
    with pytest.raises(ValueError, match="photo"):
        cam.intrinsics_for("exif", 90, 60)
    with pytest.raises(ValueError, match="source"):
        cam.intrinsics_for("fisheye", 90, 60)
    with pytest.raises(ValueError, match="focal lengths"):
        cam.intrinsics_for("manual", 90, 60, fx=0.0, fy=10.0)


def test_describe_intrinsics_gives_the_field_of_view():
    k = cam.intrinsics_matrix([50.0, 100.0], [50.0, 100.0], 50.0, 25.0)
    text = cam.describe_intrinsics(k, 100, 50)
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith("#0: fx=50.00 fy=50.00 cx=50.00 cy=25.00 px for 100x50")
    assert "FoV 90.0 x 53.1 deg" in lines[0]
    assert f"FoV {math.degrees(2 * math.atan(0.5)):.1f}" in lines[1]


def test_check_camera_names_the_argument():
    with pytest.raises(ValueError, match="intrinsics must be a 3x3"):
        cam.check_camera(torch.eye(2), 1, name="intrinsics")
    assert torch.equal(cam.check_camera(torch.eye(3), 2), torch.eye(3).expand(2, 3, 3))
