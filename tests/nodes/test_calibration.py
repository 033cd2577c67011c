"""Calibration nodes run through the extension package, without ComfyUI."""

import pytest
import torch
from PIL import ExifTags, Image, TiffImagePlugin

from support import load_extension

EXT = load_extension()
N = EXT.NODE_CLASS_MAPPINGS
optics = EXT.bokehdepth_core.optics


def test_k_from_lens_outputs():
    k, k512, kcrop, summary = N["BokehDepthKFromLens"]().calibrate(1.8, 23.0, 35.0, 1.5, 2048, 1365)
    assert k == pytest.approx(optics.calc_dof_cond(1.8, 23.0, 35.0, 1.5, 2048, 1365))
    assert k512 == pytest.approx(k * 512 / 2048)
    assert kcrop == pytest.approx(k512 * 23 / 35)
    assert "K =" in summary and "f/1.8" in summary


def test_k_from_lens_takes_size_from_image():
    img = torch.zeros(2, 300, 400, 3)
    k, *_ = N["BokehDepthKFromLens"]().calibrate(2.0, 50.0, 50.0, 2.0, 1, 1, image=img)
    assert k == pytest.approx(optics.calc_dof_cond(2.0, 50.0, 50.0, 2.0, 400, 300))


def test_k_from_lens_bad_input_names_field():
    with pytest.raises(ValueError, match="focus_m"):
        N["BokehDepthKFromLens"]().calibrate(2.0, 50.0, 50.0, 0.01, 512, 512)


def test_k_from_exif_node(tmp_path, monkeypatch):
    monkeypatch.setenv("BOKEHDEPTH_INPUT_DIR", str(tmp_path))
    T = ExifTags.Base
    exif = Image.Exif()
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[T.FNumber] = TiffImagePlugin.IFDRational(28, 10)
    sub[T.FocalLength] = TiffImagePlugin.IFDRational(50, 1)
    sub[T.FocalLengthIn35mmFilm] = 75
    Image.new("RGB", (320, 240), (10, 200, 30)).save(tmp_path / "photo.jpg", exif=exif)
    np = pytest.importorskip("numpy")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "depth16.png")  # a depth map, not a photo
    node = N["BokehDepthKFromExif"]
    assert node.INPUT_TYPES()["required"]["image"][0] == ["photo.jpg"]
    assert "K_512" in node.DESCRIPTION and "K_crop" in node.DESCRIPTION
    assert node.VALIDATE_INPUTS("photo.jpg") is True
    assert node.VALIDATE_INPUTS("missing.jpg") != True  # noqa: E712 - ComfyUI wants True or a message
    assert node.IS_CHANGED("photo.jpg")
    with pytest.raises(ValueError, match="focus_m"):
        node().calibrate("photo.jpg", 0.0, 0.0, 0.0, 0.0, 0.0)
    k, k512, kcrop, summary, estimated, image = node().calibrate("photo.jpg", 0.0, 0.0, 0.0, 3.0, 0.0)
    assert k == pytest.approx(optics.calc_dof_cond(2.8, 50, 75, 3.0, 320, 240))
    assert "focus_m: given by the user" in estimated
    assert image.shape == (1, 240, 320, 3) and image.dtype == torch.float32
    assert image[0, 0, 0, 1].item() == pytest.approx(200 / 255, abs=0.02)
    # an override wins over EXIF
    k2, *_ = node().calibrate("photo.jpg", 5.6, 0.0, 0.0, 3.0, 0.0)
    assert k2 == pytest.approx(k * 2.8 / 5.6)


def test_k_list_node():
    node = N["BokehDepthKList"]
    assert list(node.INPUT_TYPES()["required"]) == ["k_list"] and "K" in node.INPUT_TYPES()["optional"]
    assert node().make("10, 20, 30")[0] == [10.0, 20.0, 30.0]
    values, text = node().make("0.5K, K, 2K, 50", K=20.0)  # calibration flows into the stack
    assert values == [10.0, 20.0, 40.0, 50.0] and text == "10, 20, 40, 50"
    with pytest.raises(ValueError, match="connect a K"):
        node().make("K, 2K")
    with pytest.raises(ValueError, match="k_list"):
        node().make("")
    with pytest.raises(ValueError, match="k_list"):
        node().make("ten")


def test_k_range_node():
    values, text = N["BokehDepthKRange"]().make(5.0, 15.0, 5.0)
    assert values == [5.0, 10.0, 15.0] and text == "5, 10, 15"
    with pytest.raises(ValueError, match="k_max"):
        N["BokehDepthKRange"]().make(5.0, 1.0, 1.0)
