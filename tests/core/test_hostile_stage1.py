"""Stage-1 under careless input: images that are NaN, 0..255 floats, integers or empty are refused
by name before any model runs (uint8 is scaled explicitly), K values outside what the adapter can
take are refused (outside its trained range they are clamped with a warning), sampling options are
checked."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from bokehdepth_core import checks, stage1
from bokehdepth_core.stage1 import BokehAdapter, sample_bokeh_stack, sample_stacks
from bokehdepth_core.testing import tiny_image, tiny_transformer
from support import refusal


class NoPipeline:
    """Stands in for a diffusers pipeline: every check must happen before it is used."""

    vae_scale_factor = 8

    def __call__(self, *a, **k):
        raise AssertionError("the pipeline ran on an input that should have been refused")

    @property
    def transformer(self):
        raise AssertionError("the adapter was attached for an input that should have been refused")


@pytest.fixture(scope="module")
def adapter():
    a = BokehAdapter.attach(tiny_transformer(), rank=2, alpha=2)
    a.detach()
    return a


def _bad_images():
    good = tiny_image(32, 32)
    nan = good.clone()
    nan[0, 5, 5, 0] = math.nan
    inf = good.clone()
    inf[0, 1, 1, 2] = math.inf
    return {"NaN": nan, "inf": inf.clone().fill_(math.inf), "255": good * 255, "int32": (good * 255).to(torch.int32),
            "bool": good > 0.5, "empty": good[:0], "[B,H,W,3]": good[..., :2]}


@pytest.mark.parametrize("sample", ["stacks", "one"])
def test_bad_images_are_refused_before_sampling(adapter, sample):
    for word, bad in _bad_images().items():
        if sample == "stacks":
            refusal(lambda: sample_stacks(NoPipeline(), adapter, bad, [10.0], 1), "image")
        else:
            refusal(lambda: sample_bokeh_stack(NoPipeline(), adapter, bad, [10.0], 1), "image")


def test_uint8_images_are_scaled_explicitly():
    img8 = (tiny_image(32, 48, seed=3) * 255).round().to(torch.uint8)
    a = stage1.prepare_reference(img8)
    b = stage1.prepare_reference(img8.float() / 255)
    assert a.tobytes() == b.tobytes() and len(set(a.tobytes())) > 4, "not a black or white frame"


def test_k_values_the_adapter_cannot_take(adapter, caplog):
    for bad in ([0.0], [-1.0], [math.nan], [math.inf], [1e30], [10.0, 1e6], [checks.MODEL_K_MAX * 1.01]):
        refusal(lambda: sample_stacks(NoPipeline(), adapter, tiny_image(32, 32), bad, 1), "k_values")
        refusal(lambda: adapter.set_k(bad), "k_values")
        refusal(lambda: stage1.k_condition(bad), "k_values")
    assert adapter.k_values is None
    msg = refusal(lambda: adapter.set_k([1e30]), "1000", "1..30")
    assert "K_512" in msg, msg
    with caplog.at_level(logging.WARNING, logger="BokehDepth"):
        adapter.set_k([0.5, checks.MODEL_K_MAX])
    assert "trained range" in caplog.text and adapter.k_values == [0.5, checks.MODEL_K_MAX]
    adapter.clear()
    assert stage1.build_prompt(None, checks.MODEL_K_MAX).startswith("Set dof_cond = 1000.00 ")


def test_sampling_options(adapter):
    image = tiny_image(32, 32)
    for steps in (0, -3, math.nan, "x", None):
        refusal(lambda: sample_stacks(NoPipeline(), adapter, image, [10.0], steps), "num_inference_steps")
    for guidance in (math.nan, math.inf, -1.0, 1e9):
        refusal(lambda: sample_stacks(NoPipeline(), adapter, image, [10.0], 1, guidance_scale=guidance),
                "guidance")
