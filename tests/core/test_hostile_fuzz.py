"""Seeded fuzzing of the core's entry points with careless shapes, dtypes and values: every call
gives a clear ValueError or a finite result, never a library's internal exception."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from bokehdepth_core import depth_io, dfb, optics, render
from bokehdepth_core.types import DepthMap

DTYPES = (torch.float64, torch.float16, torch.uint8, torch.int64, torch.bool, torch.complex64)
ODD = (0.0, -1.0, math.nan, math.inf, -math.inf, 1e-30, 1e30)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only add start-up cost


class Faults:
    """One careless value per call: ``pick(kind)`` says whether this call's fault is of that kind."""

    def __init__(self, seed: int, kinds: int):
        self.rnd = random.Random(seed)
        self.kind = self.rnd.randrange(kinds + 1)  # kinds + 1: no fault at all
        self.count = 0

    def pick(self) -> bool:
        self.count += 1
        return self.count - 1 == self.kind

    def number(self, good: float):
        return self.rnd.choice([*ODD, "x", None, good * 1e6, -good]) if self.pick() else good

    def tensor(self, shape, lo=0.0, hi=1.0):
        bad_values, bad_shape, bad_dtype = self.pick(), self.pick(), self.pick()
        rnd = self.rnd
        if bad_shape:
            shape = list(shape)
            shape[rnd.randrange(len(shape))] = rnd.choice([0, 1]) if rnd.random() < 0.7 else shape[0] + 1
            shape = shape[1:] if rnd.random() < 0.2 else shape
        t = lo + (hi - lo) * torch.rand(*shape, generator=torch.Generator().manual_seed(rnd.randrange(1 << 30)))
        if bad_values and t.numel():
            t.view(-1)[rnd.randrange(t.numel())] = rnd.choice([math.nan, math.inf, -math.inf, -5.0, 255.0, 1e30])
        if bad_dtype:
            dtype = rnd.choice(DTYPES)
            t = (t.clamp(0, 1) * 255).to(dtype) if dtype == torch.uint8 else t.to(dtype)
        return t

    def choice(self, good, bad):
        return self.rnd.choice(bad) if self.pick() else good


def _finite(value):
    if isinstance(value, torch.Tensor):
        assert value.is_floating_point() and bool(torch.isfinite(value).all())
    elif isinstance(value, dict):
        for k in ("depth", "delta", "confidence", "radius"):
            _finite(value[k])
    elif isinstance(value, float):
        assert math.isfinite(value)


def _clear_or_finite(fn):
    try:
        out = fn()
    except ValueError as exc:
        msg = str(exc)
        assert msg and "Traceback" not in msg and "expanded size" not in msg, msg
        return None
    _finite(out)
    return out


@pytest.mark.parametrize("seed", range(48))
def test_render_bokeh(seed):
    f = Faults(seed, 16)
    b, h, w = f.rnd.choice([1, 2]), f.rnd.randint(1, 24), f.rnd.randint(1, 24)
    image, disparity = f.tensor((b, h, w, 3)), f.tensor((b, h, w), 0.0, 3.0)
    opts = dict(blades=f.choice(0, [3, 7, 40, -2, 2.5]), gamma=f.number(2.2), max_radius=f.choice(None, [*ODD, 5.0]),
                rel_step=f.number(0.12), max_scale=f.choice(8, [1, 0, -3, 10 ** 6, 2.5]),
                min_lowres_radius=f.number(3.0), highlight=f.number(1.0), highlight_threshold=f.number(0.9),
                blade_rotation=f.number(10.0), confidence=f.choice(None, [f.tensor((b, h, w)), torch.ones(3)]))
    _clear_or_finite(lambda: render.render_bokeh(image, disparity, f.number(20.0), f.number(0.5), **opts))


@pytest.mark.parametrize("seed", range(32))
def test_depth_from_bokeh_sweep(seed):
    f = Faults(100 + seed, 15)
    b, n, h, w = 1, f.choice(2, [1, 3]), f.rnd.randint(1, 20), f.rnd.randint(1, 20)
    ref, frames = f.tensor((b, h, w, 3)), f.tensor((b, n, h, w, 3))
    ks = f.choice([10.0 * (i + 1) for i in range(n)], [[], [0.0] * n, [math.nan] * n, "10, 20", None, [1.0]])
    opts = dict(max_radius=f.choice(8.0, [*ODD, 1e9, None]), window=f.choice(4, [0, -3, 500, 2.5]),
                gamma=f.number(2.2), texture_threshold=f.number(1e-4), residual_scale=f.number(0.15),
                blades=f.choice(0, [5, -1]), side=f.choice("behind", ["front", "sideways", torch.ones(1, h, w).bool()]))
    _clear_or_finite(lambda: dfb.depth_from_bokeh_sweep(ref, frames, ks, f.number(2.0), **opts))


@pytest.mark.parametrize("seed", range(30))
def test_calibrate(seed):
    f = Faults(200 + seed, 6)
    args = [f.number(v) for v in (2.0, 50.0, 50.0, 2.0)] + [f.choice(640, [1, 0, -5, 10 ** 7, 1.5, None, "x"])] * 2
    cal = _clear_or_finite(lambda: optics.calibrate(*args))
    if cal is not None:
        assert all(math.isfinite(v) and v > 0 for v in (cal.k, cal.k_512, cal.k_crop, cal.sensor_width_mm))


@pytest.mark.parametrize("seed", range(30))
def test_depth_files_round_trip(seed, tmp_path):
    f = Faults(300 + seed, 9)
    depth = f.tensor((f.rnd.randint(1, 3), f.rnd.randint(1, 12), f.rnd.randint(1, 12)), 0.1, 50.0)
    fmt = f.choice(f.rnd.choice(list(depth_io.SAVE_FORMATS)), ["exr", "jpg", None])
    path = str(tmp_path / f"d{depth_io.extension_for(fmt) if fmt in depth_io.SAVE_FORMATS else '.npy'}")
    index = f.choice(0, [1, -1, 99])
    try:
        depth_io.save_depth(path, depth, fmt, index=index, encoding=f.choice("linear", ["x"]),
                            near=f.choice(None, [0.0, -1.0, 5.0, math.nan]), sidecar=f.rnd.random() < 0.5)
    except ValueError as exc:
        assert str(exc)
        return
    mode = f.rnd.choice(list(depth_io.LOAD_MODES))
    dm = _clear_or_depth(lambda: depth_io.load_depth(path, mode, scale=f.number(1.0), near=f.number(0.5),
                                                     far=f.number(20.0), channel=f.choice("auto", ["r", "q"])))
    if dm is not None and mode == "auto" and fmt in ("npy", "npz", "tiff"):
        want = depth.float().reshape(-1, *depth.shape[-2:])[index]
        assert torch.equal(dm.depth[0].nan_to_num(-7), want.nan_to_num(-7))


def _clear_or_depth(fn):
    """Loaded depth may mark invalid pixels with NaN/inf (by design); it must be a float32 DepthMap."""
    try:
        dm = fn()
    except ValueError as exc:
        assert str(exc)
        return None
    assert isinstance(dm, DepthMap) and dm.depth.dtype == torch.float32 and dm.depth.ndim == 3
    return dm


@pytest.mark.parametrize("seed", range(30))
def test_depth_files_from_elsewhere(seed, tmp_path):
    rnd = random.Random(400 + seed)
    shape = rnd.choice([(9, 11), (2, 9, 11), (9, 11, 3), (9, 11, 4), (2, 9, 11, 3), (0, 4), (1, 1, 1, 1, 5)])
    dtype = rnd.choice([np.float32, np.float64, np.float16, np.uint8, np.uint16, np.int32, np.int64, np.bool_,
                        np.complex64])
    with np.errstate(all="ignore"):
        arr = (np.random.default_rng(seed).random(shape) * rnd.choice([1, 255, 65535, 1e30])).astype(dtype)
    path = tmp_path / rnd.choice(["a.npy", "a.npz"])
    np.save(path, arr) if path.suffix == ".npy" else np.savez(path, **{rnd.choice(["depth", "x", "arr_0"]): arr})
    _clear_or_depth(lambda: depth_io.load_depth(str(path), rnd.choice(list(depth_io.LOAD_MODES)),
                                                scale=rnd.choice([1.0, 0.001, 0.0, math.nan]),
                                                near=rnd.choice([0.5, 30.0, -1.0]), far=rnd.choice([20.0, math.inf]),
                                                channel=rnd.choice(["auto", "luminance", "g"]),
                                                normalize=rnd.choice(["dtype", "minmax"])))
