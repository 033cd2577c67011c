"""Thin-lens calibration: hand-worked values, physical sanity, the authors' formula on a grid."""

import itertools
import math

import pytest
import torch

from bokehdepth_core import optics


def authors_formula(n, fmm, f35, s1, w, h):
    f = fmm * 1e-3
    k = abs(f * f * s1 / (2 * n * (s1 - f))) * 1000
    sw = (fmm / f35 * 43.27) / math.sqrt(1 + 1 / (w / h) ** 2)
    return k * w / sw


def test_hand_worked_value():
    # 50 mm f/2 full-frame-equivalent, focus 2 m, 1024x1024:
    # f^2 S1 / (2N(S1-f)) = 0.0025*2/(4*1.95) = 6.41026e-4 m -> 0.641026 mm-ish units;
    # sensor width = 43.27/sqrt(2) = 30.5964 mm; K = 0.641026 * 1024 / 30.5964 = 21.4538
    k = optics.calc_dof_cond(2.0, 50.0, 50.0, 2.0, 1024, 1024)
    assert k == pytest.approx(0.6410256410 * 1024 / (43.27 / math.sqrt(2)), rel=1e-9)
    assert k == pytest.approx(21.4538, abs=1e-3)


def test_matches_formula_on_grid():
    lenses = [(6.9, 24.0), (23.0, 35.0), (50.0, 50.0), (85.0, 85.0), (200.0, 320.0)]
    apertures = [1.2, 2.8, 8.0, 22.0]
    focus = [0.5, 1.0, 3.0, 50.0]
    sizes = [(512, 512), (1024, 768), (768, 1024), (4000, 3000)]
    for (fmm, f35), n, s1, (w, h) in itertools.product(lenses, apertures, focus, sizes):
        got = optics.calc_dof_cond(n, fmm, f35, s1, w, h)
        assert got == pytest.approx(authors_formula(n, fmm, f35, s1, w, h), rel=1e-9)


def test_k_scales_with_f_squared_over_n():
    base = optics.calc_dof_cond(4.0, 50.0, 50.0, 1000.0, 1000, 1000)
    # Far focus: S1/(S1-f) ~ 1, so K ~ f^2/N (with the sensor width fixed by the crop factor).
    assert optics.calc_dof_cond(2.0, 50.0, 50.0, 1000.0, 1000, 1000) == pytest.approx(2 * base, rel=1e-9)
    doubled_f = optics.calc_dof_cond(4.0, 100.0, 100.0, 1000.0, 1000, 1000)
    assert doubled_f == pytest.approx(4 * base, rel=1e-3)


def test_reference_width_and_crop():
    k = optics.calc_dof_cond(1.8, 23.0, 35.0, 1.5, 2048, 1365)
    k512 = optics.dof_cond_at_reference(k, 2048)
    assert k512 == pytest.approx(k * 512 / 2048)
    assert optics.dof_cond_crop(k, 2048, 23.0, 35.0) == pytest.approx(k512 / (35.0 / 23.0))
    assert optics.crop_factor(23.0, 35.0) == pytest.approx(35 / 23)
    # K is proportional to the image width: the same lens at half the width halves K.
    assert optics.calc_dof_cond(1.8, 23.0, 35.0, 1.5, 1024, 682.5) == pytest.approx(k / 2, rel=1e-9)


def test_sensor_width_inverse():
    sw = optics.sensor_width(6000, 4000, 23.0, 34.5)
    assert optics.focal_35mm_from_sensor(23.0, sw, 6000, 4000) == pytest.approx(34.5)
    # full frame 3:2 gives ~36 mm with the authors' 43.27 mm diagonal
    assert optics.sensor_width(6000, 4000, 50, 50) == pytest.approx(36.0, abs=0.01)


def test_normalize_and_f_number_mapping():
    assert optics.normalize_k(0.2) == pytest.approx(1 / 30)
    assert optics.normalize_k(15) == pytest.approx(0.5)
    assert optics.normalize_k(100) == pytest.approx(1.0)
    t = optics.normalize_k(torch.tensor([0.0, 10.0, 45.0]))
    assert torch.allclose(t, torch.tensor([1 / 30, 1 / 3, 1.0]))
    assert optics.f_number_from_k(10) == pytest.approx(3.0)
    assert optics.f_number_from_k(60) == pytest.approx(1.0)
    for k in (1.5, 7.0, 29.0):
        assert optics.k_from_f_number(optics.f_number_from_k(k)) == pytest.approx(k)


def test_coc_zero_at_focus_and_eq14():
    assert optics.coc_diameter_mm(2.0, 50.0, 2.0, 2.0) == 0.0
    d = optics.coc_diameter_mm(2.0, 50.0, 2.0, 4.0)
    f = 0.05
    assert d == pytest.approx(f * f / (2 * (2 - f)) * (2 / 4) * 1000)
    depth = torch.tensor([[1.0, 2.0, 4.0]])
    r = optics.blur_radius_px(20.0, 2.0, depth)
    assert torch.allclose(r, torch.tensor([[10.0, 0.0, 5.0]]))
    assert optics.blur_radius_px(20.0, 2.0, 2.0) == 0.0


def test_radius_equals_k_times_disparity_offset_consistent_with_coc():
    # r (px) = 0.5 * d (mm) * W / sensor_width: the K definition and Eq. 14 agree.
    n, fmm, f35, s1, s2, w, h = 2.8, 35.0, 52.5, 1.2, 3.5, 1600, 1200
    k = optics.calc_dof_cond(n, fmm, f35, s1, w, h)
    r = optics.blur_radius_px(k, s1, s2)
    d = optics.coc_diameter_mm(n, fmm, s1, s2)
    assert r == pytest.approx(0.5 * d * w / optics.sensor_width(w, h, fmm, f35), rel=1e-9)


def test_dof_limits_bracket_focus():
    for s1 in (0.5, 2.0, 10.0):
        near, far = optics.dof_limits(2.8, 50.0, s1, 0.03)
        assert near < s1 < far
        # at the limits the CoC equals the acceptable one
        assert optics.coc_diameter_mm(2.8, 50.0, s1, near) == pytest.approx(0.03, rel=1e-9)
        if math.isfinite(far):
            assert optics.coc_diameter_mm(2.8, 50.0, s1, far) == pytest.approx(0.03, rel=1e-9)
    near_wide, _ = optics.dof_limits(1.4, 50.0, 2.0, 0.03)
    near_narrow, _ = optics.dof_limits(16.0, 50.0, 2.0, 0.03)
    assert near_narrow < near_wide  # stopping down widens the depth of field
    assert optics.dof_limits(16.0, 24.0, 20.0, 0.03)[1] == math.inf  # past hyperfocal


def test_foreground_in_focus():
    coc = optics.default_coc_mm(36.0)
    assert coc == pytest.approx(0.03, abs=1e-3)
    assert optics.foreground_in_focus(8.0, 50.0, 2.0, 1.9, coc)
    assert not optics.foreground_in_focus(1.4, 85.0, 2.0, 1.0, coc)


def test_k_lists():
    assert optics.parse_k_list("10, 20, 30") == [10.0, 20.0, 30.0]
    assert optics.parse_k_list(" 5;7.5\n1e1 ") == [5.0, 7.5, 10.0]
    assert optics.k_range(5, 30, 5) == [5, 10, 15, 20, 25, 30]
    assert optics.k_range(1, 2, 0.25) == [1, 1.25, 1.5, 1.75, 2]
    assert optics.k_list("list", "4 8") == [4.0, 8.0]
    assert optics.k_list("range", "ignored", 2, 6, 2) == [2, 4, 6]
    with pytest.raises(ValueError, match="mode"):
        optics.k_list("both", "1")
    with pytest.raises(ValueError, match="at most 256"):
        optics.k_range(1, 1000, 0.5)


@pytest.mark.parametrize("args,field", [
    ((0.0, 50, 50, 2, 100, 100), "f_number"),
    ((-2.0, 50, 50, 2, 100, 100), "f_number"),
    ((2.0, 0.0, 50, 2, 100, 100), "focal_mm"),
    ((2.0, 50, 0.0, 2, 100, 100), "focal_35mm"),
    ((2.0, 50, 50, 0.04, 100, 100), "focus_m"),
    ((2.0, 50, 50, 0.05, 100, 100), "focus_m"),
    ((2.0, 50, 50, 2, 0, 100), "width"),
    ((2.0, 50, 50, 2, 100, 0), "height"),
    ((float("nan"), 50, 50, 2, 100, 100), "f_number"),
])
def test_bad_lens_input(args, field):
    with pytest.raises(ValueError, match=field):
        optics.calc_dof_cond(*args)


@pytest.mark.parametrize("text,match", [("", "empty"), ("   ", "empty"), (None, "empty"), ("10, abc", "abc"),
                                        ("10, -5", "> 0"), ("0", "> 0"), ("nan", "not a number")])
def test_bad_k_list(text, match):
    with pytest.raises(ValueError, match="k_list") as e:
        optics.parse_k_list(text)
    assert match in str(e.value)


def test_bad_k_range():
    with pytest.raises(ValueError, match="k_max"):
        optics.k_range(30, 5, 5)
    with pytest.raises(ValueError, match="k_step"):
        optics.k_range(5, 30, 0)
