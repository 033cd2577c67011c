"""EXIF reading: round trips through JPEG/TIFF files written with lens tags, and the fallbacks."""

import pytest
import torch
from PIL import ExifTags, Image, TiffImagePlugin

from bokehdepth_core import exif, optics

T = ExifTags.Base
R = TiffImagePlugin.IFDRational


def write_photo(path, size=(600, 400), fmt="JPEG", ifd0=None, exif_ifd=None):
    img = Image.new("RGB", size, (120, 90, 60))
    if fmt == "TIFF":  # Pillow's TIFF writer takes the Exif sub-IFD as a nested dict
        info = TiffImagePlugin.ImageFileDirectory_v2()
        for k, v in (ifd0 or {}).items():
            info[k] = v
        info[ExifTags.IFD.Exif] = dict(exif_ifd or {})
        img.save(path, format=fmt, tiffinfo=info)
        return path
    exif = Image.Exif()
    for k, v in (ifd0 or {}).items():
        exif[k] = v
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for k, v in (exif_ifd or {}).items():
        sub[k] = v
    img.save(path, format=fmt, exif=exif)
    return path


FULL = {
    T.FNumber: R(18, 10), T.FocalLength: R(85, 1), T.FocalLengthIn35mmFilm: 85,
    T.SubjectDistance: R(25, 10), T.FocalPlaneXResolution: R(600, 36), T.FocalPlaneYResolution: R(400, 24),
    T.FocalPlaneResolutionUnit: 4, T.ExifImageWidth: 600, T.ExifImageHeight: 400,
}


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("TIFF", "tif")])
def test_round_trip_all_tags(tmp_path, fmt, ext):
    path = write_photo(tmp_path / f"p.{ext}", fmt=fmt, ifd0={T.Make: "Canon", T.Model: "Canon EOS R5"}, exif_ifd=FULL)
    info = exif.read_lens_exif(str(path))
    assert (info.width, info.height) == (600, 400)
    assert info.f_number == pytest.approx(1.8)
    assert info.focal_mm == pytest.approx(85)
    assert info.focal_35mm == pytest.approx(85)
    assert info.focus_m == pytest.approx(2.5)
    assert info.focal_plane_resolution_unit == 4
    assert info.sensor_width_mm == pytest.approx(36.0)
    assert info.estimated["sensor_width_mm"] == "from focal-plane resolution"
    assert info.camera_model == "Canon EOS R5"
    assert {"f_number", "focal_mm", "focal_35mm", "focus_m"} <= set(info.read)
    assert info.missing == []
    cal = exif.calibrate_from_exif(info)
    assert cal.k == pytest.approx(optics.calc_dof_cond(1.8, 85, 85, 2.5, 600, 400))


def test_pil_image_source_and_inch_unit(tmp_path):
    tags = dict(FULL)
    tags[T.FocalPlaneResolutionUnit] = 2  # inch
    tags[T.FocalPlaneXResolution] = R(6000 * 254, 236)  # 23.6 mm wide sensor, 6000 px
    tags[T.ExifImageWidth] = 6000
    path = write_photo(tmp_path / "p.jpg", exif_ifd=tags)
    with Image.open(path) as img:
        info = exif.read_lens_exif(img)
    assert info.sensor_width_mm == pytest.approx(23.6, rel=1e-6)


def test_sensor_from_focal_lengths(tmp_path):
    path = write_photo(tmp_path / "p.jpg", exif_ifd={T.FNumber: R(28, 10), T.FocalLength: R(23, 1),
                                                     T.FocalLengthIn35mmFilm: 35})
    info = exif.read_lens_exif(path)
    assert info.sensor_width_mm == pytest.approx(optics.sensor_width(600, 400, 23, 35))
    assert "focal_mm / focal_35mm" in info.estimated["sensor_width_mm"]
    assert info.missing == ["focus_m"]
    with pytest.raises(ValueError, match="focus_m"):
        exif.calibrate_from_exif(info)
    cal = exif.calibrate_from_exif(info, focus_m=1.5)
    assert cal.k == pytest.approx(optics.calc_dof_cond(2.8, 23, 35, 1.5, 600, 400))
    assert cal.estimated["focus_m"] == "given by the user"


def test_sensor_from_body_table_and_35mm_estimate(tmp_path):
    path = write_photo(tmp_path / "p.jpg", ifd0={T.Make: "SONY", T.Model: "ILCE-7M3"},
                       exif_ifd={T.FNumber: R(14, 10), T.FocalLength: R(50, 1)})
    info = exif.read_lens_exif(path)
    assert info.sensor_width_mm == pytest.approx(35.9)
    assert "sensor table" in info.estimated["sensor_width_mm"]
    assert "focal_35mm" in info.estimated
    # a 35.9 mm wide 3:2 sensor is (almost) full frame
    assert info.focal_35mm == pytest.approx(50 * 36.0 / 35.9, rel=0.01)


def test_aperture_value_fallback(tmp_path):
    path = write_photo(tmp_path / "p.jpg", exif_ifd={T.ApertureValue: R(2, 1), T.FocalLength: R(50, 1)})
    info = exif.read_lens_exif(path)
    assert info.f_number == pytest.approx(2.0)
    assert "ApertureValue" in info.estimated["f_number"]


def test_no_exif_reports_missing_and_errors_name_fields(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (64, 48)).save(path)
    info = exif.read_lens_exif(path)
    assert set(info.missing) == {"f_number", "focal_mm", "focal_35mm", "focus_m", "sensor_width_mm"}
    with pytest.raises(ValueError, match="f_number"):
        exif.calibrate_from_exif(info)
    cal = exif.calibrate_from_exif(info, f_number=2, focal_mm=50, focal_35mm=50, focus_m=2)
    assert cal.k == pytest.approx(optics.calc_dof_cond(2, 50, 50, 2, 64, 48))
    with pytest.raises(ValueError, match="not found"):
        exif.read_lens_exif(tmp_path / "nope.jpg")


def test_orientation_swaps_size(tmp_path):
    path = write_photo(tmp_path / "p.jpg", ifd0={T.Orientation: 6}, exif_ifd={T.FNumber: R(2, 1)})
    info = exif.read_lens_exif(path)
    assert (info.width, info.height) == (400, 600)


def test_read_photo_gives_lens_data_and_upright_pixels(tmp_path):
    img = Image.new("RGB", (6, 4), (0, 0, 0))
    img.putpixel((5, 0), (255, 0, 0))  # top-right red pixel
    exif_data = Image.Exif()
    exif_data[T.Orientation] = 6  # shown rotated 90 degrees clockwise
    exif_data.get_ifd(ExifTags.IFD.Exif)[T.FNumber] = R(4, 1)
    img.save(tmp_path / "r.png", exif=exif_data)  # lossless: the single pixel stays red
    info, pixels = exif.read_photo(tmp_path / "r.png")
    assert info.f_number == pytest.approx(4.0) and (info.width, info.height) == (4, 6)
    assert pixels.shape == (1, 6, 4, 3) and pixels.dtype == torch.float32
    # upright: the red pixel moves from the top-right corner to the bottom-right
    assert pixels[0, -1, -1].tolist() == [1.0, 0.0, 0.0] and pixels[0, 0, -1].tolist() == [0.0, 0.0, 0.0]


def test_unreadable_photo_is_a_clear_error(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not a picture")
    with pytest.raises(ValueError, match="junk.jpg.*not a readable image"):
        exif.read_photo(tmp_path / "junk.jpg")


def test_implausible_tags_count_as_missing(tmp_path):
    path = write_photo(tmp_path / "p.jpg", exif_ifd={T.FNumber: R(0, 1), T.FocalLength: R(0, 1),
                                                     T.SubjectDistance: R(0xFFFFFFFF, 1)})
    info = exif.read_lens_exif(path)
    assert {"f_number", "focal_mm", "focus_m"} <= set(info.missing)
