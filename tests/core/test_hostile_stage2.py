"""Stage-2 under careless input: network sizes beyond the documented budget are refused at planning
time (before any weight is touched), absurd K values are refused, Cancel is honoured between the
network's blocks, non-finite depth never comes out, and a seeded fuzz of ``estimate_depth``."""

from __future__ import annotations

import logging
import math
import random
import time

import pytest
import torch

from bokehdepth_core.stage2 import build_dav2_dsfa, build_unidepthv2_dsfa, estimate_depth
from bokehdepth_core.stage2 import model as depth_model
from support import UNIDEPTH_SMALL, randomize, refusal


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return randomize(build_unidepthv2_dsfa(UNIDEPTH_SMALL), seed=5)


@pytest.fixture(scope="module")
def meta_models():
    """Release-size models without weights: planning never needs them."""
    with torch.device("meta"):
        return build_dav2_dsfa("vits"), build_unidepthv2_dsfa()


def _no_hooks(model) -> bool:
    return all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------- budget

def test_extreme_aspect_and_token_counts_are_refused_at_planning(meta_models):
    dav2, udv2 = meta_models
    strip = torch.rand(1, 32, 2048, 3)  # ran for minutes before: 37 x 2368 patches per frame
    start = time.perf_counter()
    for model in (dav2, udv2):
        refusal(lambda: estimate_depth(model, strip), "32", "2048", "aspect", "crop")
        refusal(lambda: model.memory_required(32, 2048, 3), "aspect")
    refusal(lambda: estimate_depth(udv2, torch.rand(1, 1, 4000, 3)), "aspect")  # would pad to 1600 x 4000
    square = torch.rand(1, 64, 64, 3)
    msg = refusal(lambda: estimate_depth(dav2, square, input_size=4096), "input_size", "tokens",
                  f"{depth_model.MAX_FRAME_TOKENS:,}")
    assert "85,849" in msg, msg  # 4096 rounds to 4102 px: 293 x 293 patches
    refusal(lambda: dav2.memory_required(64, 64, 0, input_size=4096), "input_size")
    many = torch.rand(1, 60, 64, 64, 3)  # 61 frames x 1369 tokens
    refusal(lambda: estimate_depth(dav2, square, many, [10.0] * 60), "frames", "stack")
    with torch.device("meta"):
        wide_budget = build_unidepthv2_dsfa({"pixels_min": 5_000_000, "pixels_max": 20_000_000})
    refusal(lambda: estimate_depth(wide_budget, square), "resolution_level", "tokens")
    refusal(lambda: wide_budget.memory_required(4000, 4000, 3), "resolution_level", "tokens")
    assert time.perf_counter() - start < 5, "refused before any forward"


def test_sizes_within_the_budget_are_planned(meta_models):
    dav2, udv2 = meta_models
    side = 14 * int(math.isqrt(depth_model.MAX_FRAME_TOKENS))  # the largest square grid allowed
    assert dav2.memory_required(side, side, 3, input_size=side) > 0
    assert dav2.memory_required(100, 800, 3) > 0  # 8:1 at the default input size
    assert udv2.memory_required(3000, 4000, 3, resolution_level=9) > 0


# --------------------------------------------------------------------------- K

def test_k_values_out_of_bounds(small, caplog):
    img, st = torch.rand(1, 28, 28, 3), torch.rand(1, 3, 28, 28, 3)
    for bad in ([10.0, 20.0, 1e30], [10.0, 20.0, 1e6], [0.0, 1.0, 2.0], [-5.0, 1.0, 2.0], [math.nan, 1.0, 2.0],
                [math.inf, 1.0, 2.0]):
        refusal(lambda: estimate_depth(small, img, st, bad), "k_values")
    msg = refusal(lambda: estimate_depth(small, img, st, [10.0, 20.0, 1e30]), "1000")
    assert "K_512" in msg, msg
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        out = estimate_depth(small, img, st, [0.5, 20.0, 200.0])
    assert torch.isfinite(out.depth).all() and "trained" in caplog.text


# --------------------------------------------------------------------------- Cancel inside a forward

def test_progress_between_blocks_and_cancel_inside_a_forward(small):
    img, st = torch.rand(2, 28, 28, 3), torch.rand(2, 3, 28, 28, 3)
    calls = []
    estimate_depth(small, img, st, [5.0, 10.0, 20.0], callback=lambda d, t: calls.append((d, t)))
    total = calls[-1][1]
    assert calls[-1] == (total, total) and total % 2 == 0 and len(calls) > 4, calls
    assert (total // 2, total) in calls and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert _no_hooks(small)

    class Cancelled(Exception):
        pass

    seen = []

    def cancel_at_third(done, total):
        seen.append(done)
        if len(seen) == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        estimate_depth(small, img, st, [5.0, 10.0, 20.0], callback=cancel_at_third)
    assert max(seen) < total // 2, "stopped inside the first image's forward"
    assert _no_hooks(small), "hooks removed after a cancel"


def test_hooks_removed_when_a_forward_fails(small, monkeypatch):
    block = small.pixel_encoder.backbone.blocks[1]

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(block, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        estimate_depth(small, torch.rand(1, 28, 28, 3), callback=lambda d, t: None)
    assert _no_hooks(small)


# --------------------------------------------------------------------------- non-finite outputs

def test_non_finite_depth_is_a_clear_error():
    torch.manual_seed(1)
    model = randomize(build_unidepthv2_dsfa(UNIDEPTH_SMALL), seed=7)
    with torch.no_grad():
        w = model.pixel_decoder.depth_layer.to_depth_lr.weight
        w[(0,) * w.dim()] = math.nan  # any layout (convolution weights may be channels-last)
    msg = refusal(lambda: estimate_depth(model, torch.rand(2, 28, 28, 3)), "NaN", "image 0")
    assert "weights" in msg and "fp32" in msg, msg


# --------------------------------------------------------------------------- fuzz

ODD_K = (0.0, -1.0, math.nan, math.inf, 1e-30, 1e30, 5000.0)


@pytest.mark.parametrize("seed", range(16))
def test_fuzz_estimate_depth(small, seed):
    """Careless shapes, dtypes, values, stacks and options: a clear ValueError or finite depth."""
    rnd = random.Random(seed)
    h, w = rnd.choice([1, 2, 13, 28, 40]), rnd.choice([1, 3, 28, 50, 300])
    image = torch.rand(rnd.choice([0, 1, 2]), h, w, rnd.choice([3, 3, 3, 4]))
    kind = rnd.randrange(5)
    if kind == 0 and image.numel():
        image.view(-1)[rnd.randrange(image.numel())] = rnd.choice([math.nan, math.inf, 255.0, -3.0])
    elif kind == 1:
        image = (image * 255).to(rnd.choice([torch.uint8, torch.int32, torch.float16, torch.float64]))
    n = rnd.choice([0, 1, 3])
    stack = None if rnd.random() < 0.3 else torch.rand(image.shape[0] or 1, n, h, w, 3)
    ks = [rnd.choice((5.0, 10.0, 20.0, 30.0) if rnd.random() < 0.7 else ODD_K) for _ in range(n)]
    if rnd.random() < 0.2:
        ks = ks[:-1] or [1.0, 2.0]
    level = rnd.choice([None, None, 0, 9, 10, -1])
    try:
        out = estimate_depth(small, image, stack, ks if stack is not None else None, resolution_level=level)
    except ValueError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    assert out.depth.shape == (image.shape[0], h, w) and torch.isfinite(out.depth).all()
    assert torch.isfinite(out.points).all() and torch.isfinite(out.confidence).all()
