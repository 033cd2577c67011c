"""Working-memory estimates of the Stage-2 models against the peak of the tensors an estimate really
allocates (measured on CPU in fp32 with torch's profiler), and how they scale."""

import pytest
import torch

from bokehdepth_core.bench import peak_allocated_mb
from bokehdepth_core.stage2 import build_dav2_dsfa, build_unidepthv2_dsfa
from support import UNIDEPTH_SMALL


def peak_allocated(fn) -> int:
    """Peak bytes of tensors allocated (and not yet freed) while ``fn`` runs."""
    return int(peak_allocated_mb(fn, torch.device("cpu"))[1] * 2 ** 20)


@pytest.fixture(scope="module")
def vits():
    torch.manual_seed(0)
    return build_dav2_dsfa("vits").eval()


@pytest.fixture(scope="module")
def unidepth():
    torch.manual_seed(0)
    return build_unidepthv2_dsfa(dict(UNIDEPTH_SMALL, hidden_dim=64, out_dim=16, pixels_min=40000,
                                      pixels_max=60000)).eval()


def _measure(model, h, w, n, **options):
    img = torch.rand(1, h, w, 3)
    stack = torch.rand(1, n, h, w, 3) if n else None
    k = torch.linspace(5.0, 25.0, n)[None] if n else None
    got = peak_allocated(lambda: model.estimate(img, stack, k, **options))
    return got, model.memory_required(h, w, n, torch.float32, **options)


@pytest.mark.parametrize("n", [0, 3])
def test_dav2_estimate_bounds_measured_peak(vits, n):
    got, est = _measure(vits, 140, 186, n, input_size=140)
    assert got > 10 * 2 ** 20
    assert got <= est <= 1.5 * got


@pytest.mark.parametrize("n", [0, 9])  # decoder-bound, encoder-bound
def test_unidepth_estimate_bounds_measured_peak(unidepth, n):
    got, est = _measure(unidepth, 200, 300, n)
    assert got > 10 * 2 ** 20
    assert got <= est <= 1.7 * got


def test_estimate_scales_with_frames_size_and_dtype(vits):
    base = vits.memory_required(480, 640, 0, torch.float32)
    assert vits.memory_required(480, 640, 3, torch.float32) > base
    assert vits.memory_required(480, 640, 0, torch.float32, input_size=1036) > 3 * base
    assert 0.5 * base < vits.memory_required(480, 640, 0, torch.float16) < 0.6 * base  # inputs stay fp32
    with torch.device("meta"):
        plain = build_dav2_dsfa("vits", fusion_layers=())
    # without DSFA weights the stack is ignored, and so are its frames
    assert plain.memory_required(480, 640, 3, torch.float32) == plain.memory_required(480, 640, 0, torch.float32)


def test_release_sizes_are_sensible():
    """Release models at typical inputs: hundreds of MiB per run (weights not included)."""
    with torch.device("meta"):
        dav2_l = build_dav2_dsfa("vitl")
        udv2 = build_unidepthv2_dsfa()
    mib = 2 ** 20
    assert 300 * mib < dav2_l.memory_required(518, 518, 3, torch.float32) < 2000 * mib
    assert 300 * mib < udv2.memory_required(480, 640, 3, torch.float32) < 4000 * mib
